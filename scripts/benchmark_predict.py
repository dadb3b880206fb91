"""Benchmark property prediction: every encoder and two references, on the same splits, per seed.

    .venv/bin/python scripts/benchmark_predict.py                      # full: meant for a GPU machine
    .venv/bin/python scripts/benchmark_predict.py --quick              # smoke test: minutes on a CPU
    .venv/bin/python scripts/benchmark_predict.py --zoos digits_mlp --encoders statnn hnp --seeds 0

For each zoo (``--zoos``: a shipped config name such as ``digits_mlp``, a config YAML, or a zoo
file; zoos of shipped configs are generated into ``--zoo-dir`` if missing, resumed if unfinished),
for each seed (``--seeds``; the seed sets the data module's split_seed and the training seed, so
every predictor of a seed sees the same train / validation / test runs), the script

1. trains a ``PropertyPredictor`` of ``test_acc`` per encoder (``--encoders``; dwsnet only on MLP
   weight spaces) for ``--epochs`` epochs with the per-encoder settings of ``PREDICTORS`` (from
   configs/predict/digits_<encoder>.yaml), keeps the checkpoint with the best validation Kendall
   tau (as ``wsl fit`` does), and scores its predictions on the test runs' checkpoints;
2. scores the two references of ``wsl.prediction.baselines`` on the same checkpoints: the hyperparameter
   oracle (boosted trees on the true hyperparameters and the epoch) and StatNN + trees (boosted
   trees on per-layer weight statistics, Unterthiner et al. 2020).

Scores: Kendall tau (scipy, tau-b) and R^2 (sklearn) of the predictions against the stored test
accuracies of every selected checkpoint of the test runs; time: the wall time of training
(``trainer.fit`` incl. its validation epochs; for the references, features + trees). It prints a
table of mean +- std over seeds per (zoo, predictor), writes it as markdown to ``--out-md``
(rewritten after every seed, so a killed run leaves what it finished), and prints one JSON object
with every figure as the last line. A predictor that fails is reported as failed (with its error);
the others go on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lightning.pytorch as pl  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402

from wsl.prediction.baselines import MAX_ITER, TREE_SETTINGS, NotApplicable, hyperparameter_oracle, statnn_trees  # noqa: E402
from wsl.data import PropertyDataModule  # noqa: E402
from wsl.prediction.fit import fit_predictor  # noqa: E402
from zoo.config import parse_config  # noqa: E402
from zoo.generate import generate  # noqa: E402
from zoo.store import SPLITS, Zoo  # noqa: E402

TARGET = "test_acc"
DEFAULT_ZOOS = ["digits_mlp", "mnist1d_mlp_precise"]  # the demo zoo; the precise zoo (16,000 runs, 20,000 test examples)
ENCODERS = ["flat", "statnn", "deepsets", "np", "hnp", "dwsnet", "ngnn", "probe"]
# also selectable: NG-T, ScaleGMN, and the neural graphs on dense tensors (wsl.nn.dense_graph: the
# same functions as their PyG twins, at their settings, faster on a CPU)
DENSE_TWINS = {"ngnn-dense": "ngnn", "ngt-dense": "ngt"}
MORE_ENCODERS = ["ngt", "scalegmn", *DENSE_TWINS]
REFERENCES = {"hparam oracle (trees)": hyperparameter_oracle, "StatNN + trees": statnn_trees}

# Per-encoder settings, from configs/predict/digits_<encoder>.yaml (all: weight decay 1e-4,
# batch 64, permutation augmentation, split 0.7 / 0.1 / 0.2 of the runs).
PREDICTORS = {
    "flat": {"lr": 1e-3, "encoder_kwargs": {"hidden": 256, "layers": 3, "dropout": 0.1}},
    "statnn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 256, "layers": 3}},
    "deepsets": {"lr": 1e-3, "encoder_kwargs": {"hidden": 128}},
    "np": {"lr": 1e-3, "encoder_kwargs": {"channels": 32, "layers": 3}},
    "hnp": {"lr": 1e-3, "encoder_kwargs": {"channels": 32, "layers": 3}},
    "dwsnet": {"lr": 1e-3, "encoder_kwargs": {"channels": 16, "layers": 3}},
    "ngnn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 64, "layers": 4}},
    "ngt": {"lr": 1e-3, "encoder_kwargs": {"hidden": 64, "layers": 4}},  # NG-GNN's settings
    # at NG-GNN's width and depth (configs/predict/mnist_inr_scalegmn.yaml); symmetry from the weight space
    "scalegmn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 64, "layers": 4, "dropout": 0.1}},
    # probes from a 6-layer deep linear generator, class probabilities beside the logits: each chosen
    # on validation tau over several zoos and splits (docs/benchmarks.md, "Property prediction")
    "probe": {"lr": 1e-3, "encoder_kwargs": {"probes": 256, "hidden": 256, "layers": 3, "weight_stats": True,
                                             "generator_layers": 6, "softmax": True}},
}
# --quick: tiny encoders, only to check that everything runs end to end.
QUICK_PREDICTORS = {
    "flat": {"lr": 1e-3, "encoder_kwargs": {"hidden": 32, "layers": 2}},
    "statnn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 32, "layers": 2}},
    "deepsets": {"lr": 1e-3, "encoder_kwargs": {"hidden": 16}},
    "np": {"lr": 1e-3, "encoder_kwargs": {"channels": 4, "layers": 1, "head_hidden": 32}},
    "hnp": {"lr": 1e-3, "encoder_kwargs": {"channels": 4, "layers": 1, "head_hidden": 32}},
    "dwsnet": {"lr": 1e-3, "encoder_kwargs": {"channels": 4, "layers": 1, "head_hidden": 32}},
    "ngnn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 8, "layers": 1}},
    "ngt": {"lr": 1e-3, "encoder_kwargs": {"hidden": 8, "layers": 1}},
    "scalegmn": {"lr": 1e-3, "encoder_kwargs": {"hidden": 8, "layers": 1}},
    "probe": {"lr": 1e-3, "encoder_kwargs": {"probes": 16, "hidden": 32, "layers": 2}},
}
PREDICTORS |= {twin: PREDICTORS[base] for twin, base in DENSE_TWINS.items()}
QUICK_PREDICTORS |= {twin: QUICK_PREDICTORS[base] for twin, base in DENSE_TWINS.items()}
WEIGHT_DECAY = 1e-4
SPLIT = [0.7, 0.1, 0.2]
AUGMENT = {"permutation": True}

# Settings: full default, --quick default (an explicit option wins over both).
DEFAULTS = {"epochs": (30, 2), "seeds": ([0, 1, 2], [0, 1]), "tree_iters": (MAX_ITER, 100),
            "zoo_overrides": ("", "num_models=200,epochs=5")}


# --- zoos -----------------------------------------------------------------------------------------------
def parse_overrides(text: str) -> dict:
    """``'num_models=200,epochs=5,task.num_samples=5000'`` -> {key: YAML-parsed value}; a comma
    starts a new override only where ``key=`` follows, so list values like ``[0,1,5]`` work."""
    out = {}
    if not text.strip():
        return out
    for part in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", text):
        if "=" not in part:
            raise ValueError(f"--zoo-overrides: expected key=value, found {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """Set (dotted) keys of a raw zoo config. The name gets the overrides appended (a different
    config is a different zoo: another file, another hash). If ``epochs`` is lowered and
    ``checkpoints`` not given, the checkpoints are cut to the new last epoch (which is added)."""
    if not overrides:
        return raw
    raw = json.loads(json.dumps(raw))
    for key, value in overrides.items():
        d, parts = raw, key.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    if "epochs" in overrides and "checkpoints" not in overrides and "checkpoints" in raw:
        e = int(raw["epochs"])
        raw["checkpoints"] = sorted({c for c in raw["checkpoints"] if c <= e} | {e})
    suffix = "__".join(f"{k}-{v}" for k, v in overrides.items())
    raw["name"] = f"{raw.get('name', 'zoo')}__{re.sub(r'[^A-Za-z0-9_.-]+', '', suffix)}"
    return raw


def resolve_zoo(item: str, zoo_dir: Path, overrides: dict, device: str) -> Path:
    """A zoo file for ``item``: an existing .h5 file is used as it is; a missing .h5 file whose stem
    is a shipped config name is generated at that path; a shipped config name or a .yaml config is
    generated into ``zoo_dir`` as ``<config name>.h5`` (reused, or resumed if unfinished)."""
    path = Path(item)
    if path.suffix == ".h5":
        if path.exists():
            if overrides:
                print(f"note: {path} exists and is used as it is; --zoo-overrides apply only to zoos made "
                      f"from a config", flush=True)
            return path
        config_path = ROOT / "configs" / "zoo" / f"{path.stem}.yaml"
        if not config_path.exists():
            raise FileNotFoundError(f"{path}: zoo file not found, and no shipped config {config_path} to make it")
        out = path
    elif path.suffix in (".yaml", ".yml"):
        config_path, out = path, None
    else:
        config_path, out = ROOT / "configs" / "zoo" / f"{item}.yaml", None
        if not config_path.exists():
            shipped = sorted(p.stem for p in (ROOT / "configs" / "zoo").glob("*.yaml"))
            raise FileNotFoundError(f"zoo {item!r}: no config {config_path}; shipped configs: {shipped}")
    raw = apply_overrides(yaml.safe_load(config_path.read_text()), overrides)
    config = parse_config(raw, str(config_path))
    out = out or zoo_dir / f"{config.name}.h5"
    print(f"zoo {config.name}: {out} ({config.num_models} models x {config.epochs} epochs, "
          f"checkpoints {config.checkpoints})", flush=True)
    return generate(config, out, device=device, progress=False)


# --- one predictor ------------------------------------------------------------------------------------------
def train_encoder(dm: PropertyDataModule, encoder: str, settings: dict, epochs: int, accelerator: str,
                  work_dir: Path, max_minutes: float | None = None, callbacks=()) -> tuple[np.ndarray, float, float]:
    """``wsl.prediction.fit.fit_predictor`` with this benchmark's settings: test-run predictions of the
    checkpoint best on validation runs, that validation score, and the training wall time in seconds."""
    fitted = fit_predictor(dm, encoder, settings["encoder_kwargs"], settings["lr"], epochs, work_dir,
                           filename=encoder, weight_decay=WEIGHT_DECAY, max_minutes=max_minutes, accelerator=accelerator,
                           callbacks=callbacks)
    return fitted.test_predictions, fitted.best_val, fitted.fit_seconds


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} predictions are not finite")
    return {"tau": float(kendalltau(truth, pred).statistic), "r2": float(r2_score(truth, pred))}


# --- reporting ------------------------------------------------------------------------------------------
def summarize(per_seed: dict) -> dict:
    """Mean and std (ddof 1; 0 for one seed) over the seeds that succeeded."""
    ok = [r for r in per_seed.values() if "error" not in r and "skipped" not in r]
    out = {"n_ok": len(ok), "n_failed": sum("error" in r for r in per_seed.values())}
    for key in ("tau", "r2", "time_s"):
        v = np.asarray([r[key] for r in ok], dtype=np.float64)
        out[f"{key}_mean"] = float(v.mean()) if len(v) else None
        out[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else None)
    return out


def fmt(mean, std, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        s = r["summary"]
        per = r["per_seed"]
        if all("skipped" in x for x in per.values()):
            rows.append([name, "skipped", "", "", next(iter(per.values()))["skipped"]])
            continue
        note = f"{s['n_ok']}/{len(per)} seeds"
        if s["n_failed"]:
            note += f", {s['n_failed']} failed"
        time_s = "—" if s["time_s_mean"] is None else f"{s['time_s_mean']:.1f}"
        rows.append([name, fmt(s["tau_mean"], s["tau_std"]), fmt(s["r2_mean"], s["r2_std"]), time_s, note])
    return rows


def print_table(zoo: str, results: dict) -> None:
    head = ["predictor", "test Kendall tau", "test R^2", "train time (s)", "seeds"]
    rows = table_rows(results)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    print(f"\n{zoo}")
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def write_markdown(path: Path, report: dict) -> None:
    s = report["settings"]
    lines = [
        "# Property prediction benchmark: test accuracy from weights",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- device: {report['device']}",
        f"- target: `{s['target']}` of every selected checkpoint (checkpoints: `{s['checkpoints']}`, epoch 0 "
        f"excluded); split by run {s['split']} (train / validation / test runs), max models "
        f"{s['max_models'] or 'all'}",
        f"- seeds {s['seeds']}: each seed sets the split and the training seed; every predictor of a seed is "
        f"trained on the same runs and scored on the same test checkpoints. Figures: mean ± std (ddof 1) "
        f"over seeds.",
        f"- encoders: {s['epochs']} epochs, AdamW (weight decay {s['weight_decay']}), warm-up 1 epoch then "
        f"cosine decay, batch {s['batch_size']}, augmentation {s['augment']}; the checkpoint with the best "
        f"validation Kendall tau is scored. Train time: wall time of `trainer.fit` (incl. validation).",
        f"- references (`wsl/baselines.py`): sklearn HistGradientBoostingRegressor {s['trees']}, up to "
        f"{s['tree_iters']} iterations, the count chosen by validation Kendall tau (`staged_predict`). "
        f"*hparam oracle*: the runs' true varying hyperparameters (log10 of those sampled log-uniformly; "
        f"categorical ones ordinal) plus the epoch, no weights. *StatNN + trees*: per-layer weight statistics "
        f"(mean, variance, quantiles 0/25/50/75/100 %; Unterthiner et al. 2020). Time: features + trees.",
        "- scores: Kendall tau (scipy, tau-b) and R² (sklearn) on the test runs' checkpoints.",
        "",
        "| encoder | lr | encoder_kwargs |",
        "|---|---|---|",
    ]
    for enc, p in s["predictors"].items():
        lines.append(f"| {enc} | {p['lr']:g} | `{json.dumps(p['encoder_kwargs'])}` |")
    for zoo, z in report["zoos"].items():
        lines += ["", f"## {zoo}", ""]
        if "error" in z:
            lines.append(f"Failed: `{z['error']}`")
            continue
        lines.append(f"{z['path']}: {z['description']}")
        if z.get("splits"):
            lines.append("")
            lines.append("Split of seed " + str(s["seeds"][0]) + ": " + ", ".join(
                f"{k} {v['runs']} runs / {v['checkpoints']} checkpoints" for k, v in z["splits"].items()))
        lines += ["", "| predictor | test Kendall tau | test R² | train time (s) | seeds |", "|---|---|---|---|---|"]
        for row in table_rows(report["results"].get(zoo, {})):
            lines.append("| " + " | ".join(row) + " |")
        failures = [(name, seed, r["error"]) for name, res in report["results"].get(zoo, {}).items()
                    for seed, r in res["per_seed"].items() if "error" in r]
        if failures:
            lines += ["", "Failures:"]
            lines += [f"- {name}, seed {seed}: `{err}`" for name, seed, err in failures]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def json_safe(obj):
    """NaN and infinities (an undefined tau of constant predictions) as null: strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def device_name(accelerator: str) -> str:
    if accelerator == "gpu":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


# --- main -----------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoos", nargs="+", default=DEFAULT_ZOOS,
                    help="shipped config names (configs/zoo/<name>.yaml), config files or zoo files "
                         f"(default: {' '.join(DEFAULT_ZOOS)})")
    ap.add_argument("--zoo-dir", default="zoos", help="where zoos made from configs are stored (default zoos/)")
    ap.add_argument("--zoo-overrides", default=None,
                    help="config overrides for zoos made from configs, e.g. 'num_models=200,epochs=5' "
                         "(the zoo gets another name and file); --quick: 'num_models=200,epochs=5'")
    ap.add_argument("--encoders", nargs="+", default=ENCODERS, choices=ENCODERS + MORE_ENCODERS)
    ap.add_argument("--no-references", action="store_true", help="skip the hyperparameter oracle and StatNN + trees")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0 1)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs per encoder (default 30, --quick 2)")
    ap.add_argument("--checkpoints", default="all",
                    help="'all' (every stored epoch > 0), 'last', or epochs such as '5,10,20' (default all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-models", type=int, default=None, help="use a seeded random subset of this many runs")
    ap.add_argument("--tree-iters", type=int, default=None,
                    help=f"boosting iterations of the references (default {MAX_ITER}, --quick 100)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: tiny zoos (200 models, 5 epochs), tiny encoders, 2 epochs, seeds 0 1")
    ap.add_argument("--out-md", default="docs/benchmark_predict.md")
    args = ap.parse_args(argv)
    for key, (full, quick) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.checkpoints not in ("all", "last"):
        args.checkpoints = [int(e) for e in args.checkpoints.split(",")]
    return args


def quiet_lightning_on(device: str) -> str:
    """Silence Lightning's per-run chatter and pick the accelerator for ``--device`` (auto/cpu/cuda)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later
    return "gpu" if use_cuda else "cpu"


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = quiet_lightning_on(args.device)
    predictors = QUICK_PREDICTORS if args.quick else PREDICTORS
    overrides = parse_overrides(args.zoo_overrides)
    report = {
        "command": shlex.join(["python", *sys.argv] if argv is None else ["python", "scripts/benchmark_predict.py", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(accelerator),
        "settings": {"target": TARGET, "checkpoints": args.checkpoints, "split": SPLIT, "seeds": args.seeds,
                     "epochs": args.epochs, "batch_size": args.batch_size, "max_models": args.max_models,
                     "weight_decay": WEIGHT_DECAY, "augment": AUGMENT, "quick": args.quick,
                     "zoo_overrides": overrides, "tree_iters": args.tree_iters, "trees": TREE_SETTINGS,
                     "float32_matmul_precision": torch.get_float32_matmul_precision(),
                     "predictors": {e: predictors[e] for e in args.encoders}},
        "zoos": {}, "results": {},
    }
    out_md = Path(args.out_md)
    print(f"device: {report['device']}", flush=True)
    t_start = time.perf_counter()

    for item in args.zoos:
        try:
            path = resolve_zoo(item, Path(args.zoo_dir), overrides, "cuda" if accelerator == "gpu" else "cpu")
            with Zoo(path) as z:
                name = path.stem
                report["zoos"][name] = {
                    "path": str(path),
                    "description": f"{z.spec.architecture} on {z.task.get('name')}, {len(z)} models "
                                   f"({int(z.done.sum())} done), checkpoints at epochs {z.checkpoint_epochs}",
                }
                is_mlp = all(layer.kind == "linear" for layer in z.spec.layers)
        except Exception as e:  # noqa: BLE001 - one zoo failing must not stop the others
            traceback.print_exc()
            report["zoos"][Path(item).stem] = {"error": f"{type(e).__name__}: {e}"}
            write_markdown(out_md, report)
            continue
        results = report["results"].setdefault(name, {})
        names = [*(REFERENCES if not args.no_references else []), *args.encoders]
        for pname in names:
            results[pname] = {"per_seed": {}, "summary": {}}

        for seed in args.seeds:
            print(f"\n=== {name}, seed {seed} ===", flush=True)
            try:
                dm = PropertyDataModule([str(path)], target=TARGET, checkpoints=args.checkpoints, split=SPLIT,
                                   split_seed=seed, batch_size=args.batch_size, max_models=args.max_models,
                                   augment=AUGMENT)
                dm.setup("fit")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                for pname in names:
                    results[pname]["per_seed"][seed] = {"error": f"data: {type(e).__name__}: {e}"}
                    results[pname]["summary"] = summarize(results[pname]["per_seed"])
                continue
            if seed == args.seeds[0]:
                report["zoos"][name]["splits"] = {s: {"runs": len(dm.split_runs[s]), "checkpoints": len(dm.items(s)["runs"])}
                                                  for s in SPLITS}
            print(dm.info(), flush=True)
            truth = dm.items("test")["targets"].numpy().astype(np.float64)

            for pname in names:
                r = results[pname]["per_seed"]
                try:
                    if pname in REFERENCES:
                        t0 = time.perf_counter()
                        try:
                            pred = REFERENCES[pname](dm, seed=seed, max_iter=args.tree_iters)
                        except NotApplicable as e:
                            r[seed] = {"skipped": str(e)}
                            print(f"  {pname:<22} skipped: {e}", flush=True)
                            continue
                        r[seed] = {**scores(truth, pred), "time_s": time.perf_counter() - t0}
                    elif pname == "dwsnet" and not is_mlp:
                        r[seed] = {"skipped": "dwsnet: MLP weight spaces only"}
                        continue
                    else:
                        dm.augmentations, dm.mixup = None, None  # fresh augmentation generators per encoder
                        pl.seed_everything(seed, workers=True, verbose=False)
                        with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
                            pred, best_val, fit_s = train_encoder(dm, pname, predictors[pname], args.epochs,
                                                                  accelerator, Path(tmp))
                        r[seed] = {**scores(truth, pred), "time_s": fit_s, "best_val_tau": best_val}
                    val = f"  (val tau {r[seed]['best_val_tau']:.3f})" if "best_val_tau" in r[seed] else ""
                    print(f"  {pname:<22} tau {r[seed]['tau']:.3f}  R2 {r[seed]['r2']:.3f}  "
                          f"{r[seed]['time_s']:.1f} s{val}", flush=True)
                except Exception as e:  # noqa: BLE001 - one predictor failing must not stop the others
                    traceback.print_exc()
                    r[seed] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    print(f"  {pname:<22} FAILED: {r[seed]['error']}", flush=True)
                    if accelerator == "gpu":
                        torch.cuda.empty_cache()
                results[pname]["summary"] = summarize(r)
            write_markdown(out_md, report)
            del dm
        print_table(name, results)

    report["total_s"] = time.perf_counter() - t_start
    write_markdown(out_md, report)
    print(f"\nmarkdown: {out_md}; total {report['total_s']:.0f} s", flush=True)
    print(json.dumps(json_safe(report), default=str))
    return report


if __name__ == "__main__":
    main()
