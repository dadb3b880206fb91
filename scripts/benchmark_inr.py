"""Benchmark INR classification: how well each encoder tells an image's class from its SIREN's weights.

    .venv/bin/python scripts/benchmark_inr.py --zoos zoos/mnist_inr.h5 zoos/fashion_inr.h5 \\
        --seeds 0 1 2 --epochs 50 --max-minutes 20          # meant for a GPU machine
    .venv/bin/python scripts/benchmark_inr.py --zoos tiny_digits_inr.h5 --seeds 0 --epochs 1 --quick

For each INR zoo (``--zoos``: zoo files; a missing ``zoos/<name>.h5`` is generated from the shipped
``configs/zoo/<name>.yaml``), each seed and each predictor (``--encoders``), the script trains on
the zoo's recorded split (``split: recorded``: the images' fixed train / val / test split, so all
INRs of an image are on one side), keeps the checkpoint with the best *validation* accuracy (never
test), and scores its class predictions on the test INRs. The seed sets the training seed, the
shuffling and the augmentations; the split is the zoo's own. References from ``wsl.prediction.baselines``:
``statnn+trees`` (boosted trees on per-layer weight statistics, iterations chosen on validation) and
``linear`` (logistic regression on the raw flattened weights, regularisation chosen on validation:
high on a zoo of shared initialisations, whose neurons stay aligned, near chance on independent ones).
``nfn-hnp`` is the ``nfn`` package's HNP layers (``pip install nfn``) at our HNP's width, depth and
head, trained through the same pipeline: a peer check of our HNP.

Encoders are trained with the settings of ``benchmark_predict.PREDICTORS`` (``--quick``: its tiny
``QUICK_PREDICTORS``; the probe encoder with ``INR_PROBE``, as its class probabilities need
several outputs; np, hnp, dwsnet, ngnn and ngt with ``FOURIER`` features of each weight; ``ngnn-probe`` and
``scalegmn-probe``: ngnn's and scalegmn's settings plus ``PROBE_FEATURES`` probe features in the
neural graph, ``wsl.nn.neural_graph``; ``ngnn-dense`` and ``ngt-dense``: the same functions as ngnn
and ngt on dense tensors, ``benchmark_predict.DENSE_TWINS``, with their settings), AdamW with weight
decay 1e-4, and ``--augment`` (default: random hidden-neuron permutations; e.g. ``'{"scaling": true,
"warp": true}'`` adds sign flips and ``wsl.data.augment.InputWarp``), for ``--epochs`` epochs or until
``--max-minutes`` of wall time, whichever comes first. Time: the wall time of ``trainer.fit``
(incl. its validation epochs); for the trees, features + trees.

Output: per zoo a markdown table (test accuracy mean ± std over seeds, training time), also written
to ``<out>/benchmark_inr.md``; a plot of accuracy against training time, ``<out>/benchmark_inr.png``;
the learning curves (validation accuracy after every epoch against training time, each seed) in
``<out>/benchmark_inr_curves.png`` and ``.json``; and, as the last line, one JSON object with the
headline figures. A predictor that fails is reported as failed (with its error); the others go on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_predict as bp  # noqa: E402  (also puts the repository root on sys.path)

import lightning.pytorch as pl  # noqa: E402

from wsl.prediction.baselines import MAX_ITER, linear_on_weights, statnn_trees  # noqa: E402
from wsl.nn import ENCODERS as WSL_ENCODERS  # noqa: E402
from wsl.data import PropertyDataModule  # noqa: E402
from wsl.cli.plots import learning_curves, score_vs_time  # noqa: E402
from wsl.prediction.fit import ValidationCurve  # noqa: E402
from zoo.store import Zoo  # noqa: E402

TREES = "statnn+trees"
LINEAR = "linear"  # logistic regression on the raw flattened weights: what a shared-init zoo gives away
PEER = "nfn-hnp"  # the nfn package's HNP layers in our pipeline (pip install nfn): a peer check of ours
# NG-GNN and ScaleGMN with 64 probe features in the neural graph (Kofinas et al. 2024: 91% -> 97% for
# NG-GNN on MNIST-INR): the same registry entries and settings, plus encoder_kwargs probe_features
PROBE_VARIANTS = {"ngnn-probe": "ngnn", "scalegmn-probe": "scalegmn"}
PROBE_FEATURES = 64
ENCODERS = ["flat", "statnn", "deepsets", "np", "hnp", "dwsnet", "ngnn", "ngt", "scalegmn", "probe", *PROBE_VARIANTS,
            *bp.DENSE_TWINS, PEER]
REFERENCES = [LINEAR, TREES]
INR_PROBE = {"lr": 1e-3, "encoder_kwargs": {"probes": 256, "hidden": 256, "layers": 3, "weight_stats": True}}
# every weight encoded by 16 random Fourier frequencies of std 0.3 (on normalized weights) before the
# equivariant layers: on 2,400 MNIST INRs HNP's validation accuracy was 0.527 at epoch 15 against 0.370
# at epoch 20 without (scale 1.0 overfits: 0.46 at best), docs/benchmarks.md "INR recipes"
FOURIER = {"fourier": 16, "fourier_scale": 0.3}
DEFAULT_PREDICTORS = [LINEAR, TREES, "flat", "statnn", "np", "hnp", "dwsnet", "ngnn", "probe"]
DEFAULT_ZOOS = ["zoos/mnist_inr.h5", "zoos/fashion_inr.h5"]
# hidden-neuron permutations only (a no-op for the invariant encoders, a lesson for flat): chosen on
# validation accuracy, HNP on MNIST-INR, 40 epochs: 0.734 against 0.620 with sign flips and input
# warps added (docs/benchmarks.md, "INR recipes"); pass --augment to try others
AUGMENT = {"permutation": True}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoos", nargs="+", default=DEFAULT_ZOOS, help=f"INR zoo files (default: {' '.join(DEFAULT_ZOOS)})")
    ap.add_argument("--zoo-dir", default="zoos", help="where zoos made from configs are stored")
    ap.add_argument("--encoders", nargs="+", default=DEFAULT_PREDICTORS, choices=[*REFERENCES, *ENCODERS],
                    help=f"predictors (default: {' '.join(DEFAULT_PREDICTORS)})")
    ap.add_argument("--target", default="label", help="a classification target (signal field), default label")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=50, help="training epochs per encoder (default 50)")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="wall-time budget per training run (default 20)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-models", type=int, default=None,
                    help="use a seeded random subset of this many INRs (all splits shrink alike): accuracy "
                         "against the number of training INRs")
    ap.add_argument("--augment", type=json.loads, default=AUGMENT,
                    help=f"the data module's augment, as JSON (default {json.dumps(AUGMENT)}; '{{}}' for none)")
    ap.add_argument("--tree-iters", type=int, default=None, help=f"boosting iterations (default {MAX_ITER}, --quick 50)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny encoders and trees: a smoke test")
    ap.add_argument("--out", default="docs", help="folder for benchmark_inr.png and benchmark_inr.md (default docs/)")
    args = ap.parse_args(argv)
    if args.tree_iters is None:
        args.tree_iters = 50 if args.quick else MAX_ITER
    return args


def accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Predictions are class indices [N] or class probabilities [N, classes]."""
    if pred.ndim == 2:
        pred = pred.argmax(1)
    return float(np.mean(pred == truth))


def summarize(per_seed: dict) -> dict:
    """Mean and std (ddof 1; 0 for one seed) of accuracy and time over the seeds that succeeded."""
    ok = [r for r in per_seed.values() if "error" not in r]
    out = {"n_ok": len(ok), "n_failed": len(per_seed) - len(ok)}
    for key in ("test_acc", "time_s", "best_val_acc"):
        v = np.asarray([r[key] for r in ok if key in r], dtype=np.float64)
        out[f"{key}_mean"] = float(v.mean()) if len(v) else None
        out[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else None)
    return out


def markdown_table(results: dict) -> list[str]:
    lines = ["| predictor | test accuracy | val accuracy (model selection) | train time (s) | seeds |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        s = summarize(r)
        time_s = "—" if s["time_s_mean"] is None else f"{s['time_s_mean']:.1f} ± {s['time_s_std']:.1f}"
        note = f"{s['n_ok']}/{len(r)}" + (f", {s['n_failed']} failed" if s["n_failed"] else "")
        val = "—" if s["best_val_acc_mean"] is None else bp.fmt(s["best_val_acc_mean"], s["best_val_acc_std"])
        lines.append(f"| {name} | {bp.fmt(s['test_acc_mean'], s['test_acc_std'])} | {val} | {time_s} | {note} |")
    return lines


def nfn_package_hnp(spec, out_dim: int, channels: int = 32, layers: int = 3, head_hidden: int = 256,
                    fourier: int = 0, fourier_scale: float = 1.0):
    """The ``nfn`` package's HNP layers with our depth, width, pool, head and weight encoding
    (scripts/bench_encoders.py), trained through exactly our pipeline (normalizer, augmentations,
    optimizer, checkpoint choice)."""
    from bench_encoders import _nfn_hnp

    return _nfn_hnp(spec, channels, layers, head_hidden, out_dim, fourier, fourier_scale)


def run_one(dm: PropertyDataModule, name: str, seed: int, args, predictors: dict, accelerator: str) -> dict:
    """Train and score one predictor on one seed: test accuracy, time, best validation accuracy and
    the learning curve (seconds, epoch, validation accuracy)."""
    truth = dm.items("test")["targets"].numpy()
    if name in REFERENCES:
        t0 = time.perf_counter()
        pred = (statnn_trees(dm, seed=seed, max_iter=args.tree_iters) if name == TREES
                else linear_on_weights(dm, seed=seed))
        return {"test_acc": accuracy(truth, pred), "time_s": time.perf_counter() - t0}
    dm.augmentations, dm.mixup = None, None  # fresh augmentation generators per encoder
    pl.seed_everything(seed, workers=True, verbose=False)
    curve = ValidationCurve()
    with tempfile.TemporaryDirectory(prefix="bench_inr_") as tmp:
        pred, best_val, fit_s = bp.train_encoder(dm, name, predictors[name], args.epochs, accelerator, Path(tmp),
                                                 max_minutes=args.max_minutes, callbacks=[curve])
    return {"test_acc": accuracy(truth, pred), "time_s": fit_s, "best_val_acc": best_val, "curve": curve.points}


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = bp.quiet_lightning_on(args.device)
    predictors = bp.QUICK_PREDICTORS if args.quick else bp.PREDICTORS
    if not args.quick:  # INRs have one output: no class probabilities; the settings measured in session 2
        predictors = predictors | {"probe": INR_PROBE}
        predictors = predictors | {n: {**predictors[n], "encoder_kwargs": {**predictors[n]["encoder_kwargs"], **FOURIER}}
                                   for n in ("np", "hnp", "dwsnet", "ngnn", "ngt")}
    predictors = predictors | {twin: predictors[base] for twin, base in bp.DENSE_TWINS.items()}  # after FOURIER
    predictors = predictors | {PEER: predictors["hnp"]}  # the peer at our HNP's settings
    for variant, base in PROBE_VARIANTS.items():  # the base encoder's settings (Fourier features included)
        WSL_ENCODERS[variant] = WSL_ENCODERS[base]
        predictors = predictors | {variant: {**predictors[base], "encoder_kwargs": {
            **predictors[base]["encoder_kwargs"], "probe_features": PROBE_FEATURES}}}
    if PEER in args.encoders:
        try:
            import nfn.layers  # noqa: F401
            WSL_ENCODERS[PEER] = ("benchmark_inr", "nfn_package_hnp", {})
        except ImportError:
            print(f"note: the nfn package is not importable (pip install nfn): {PEER} skipped", flush=True)
            args.encoders = [n for n in args.encoders if n != PEER]
    device = bp.device_name(accelerator)
    command = shlex.join(["python", *sys.argv] if argv is None else ["python", "scripts/benchmark_inr.py", *argv])
    print(f"device: {device}", flush=True)
    out_dir = Path(args.out)
    t_start = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    zoo_notes: dict[str, str] = {}

    for item in args.zoos:
        try:
            path = bp.resolve_zoo(item, Path(args.zoo_dir), {}, "cuda" if accelerator == "gpu" else "cpu")
            with Zoo(path) as z:
                zoo_notes[path.stem] = (f"{path}: {z.spec.architecture} {z.spec.num_params} params on "
                                        f"{z.task.get('name')}, {int(z.done.sum())} done INRs")
        except Exception as e:  # noqa: BLE001 - one zoo failing must not stop the others
            traceback.print_exc()
            zoo_notes[Path(item).stem] = f"failed: {type(e).__name__}: {e}"
            continue
        res = results.setdefault(path.stem, {n: {} for n in args.encoders})
        for seed in args.seeds:
            print(f"\n=== {path.stem}, seed {seed} ===", flush=True)
            try:
                dm = PropertyDataModule([str(path)], target=args.target, task="classification", checkpoints="last",
                                        split="recorded", split_seed=seed, batch_size=args.batch_size,
                                        augment=args.augment, max_models=args.max_models)
                dm.setup("fit")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                for n in args.encoders:
                    res[n][seed] = {"error": f"data: {type(e).__name__}: {e}"}
                continue
            if seed == args.seeds[0]:
                print(dm.info(), flush=True)
            for name in args.encoders:
                try:
                    r = res[name][seed] = run_one(dm, name, seed, args, predictors, accelerator)
                    val = f"  (best val acc {r['best_val_acc']:.4f})" if "best_val_acc" in r else ""
                    print(f"  {name:<14} test acc {r['test_acc']:.4f}  {r['time_s']:.1f} s{val}", flush=True)
                except Exception as e:  # noqa: BLE001 - one predictor failing must not stop the others
                    traceback.print_exc()
                    res[name][seed] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    print(f"  {name:<14} FAILED: {res[name][seed]['error']}", flush=True)
                    if accelerator == "gpu":
                        torch.cuda.empty_cache()
            del dm

    # --- report ---------------------------------------------------------------------------------
    md = ["# INR classification benchmark: the image's class from its SIREN's weights", "",
          f"- command: `{command}`", f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
          f"- device: {device}",
          f"- target `{args.target}`, the zoo's recorded split, last checkpoint; seeds {args.seeds}; encoders: up "
          f"to {args.epochs} epochs or {args.max_minutes:g} min"
          + (f", a seeded subset of {args.max_models} INRs" if args.max_models else "")
          + f", augmentation `{json.dumps(args.augment)}`, checkpoint chosen on validation accuracy; trees: up to "
          f"{args.tree_iters} iterations, chosen on validation accuracy."]
    for zoo, note in zoo_notes.items():
        md += ["", f"## {zoo}", "", note]
        if zoo in results:
            md += [""] + markdown_table(results[zoo])
            failures = [f"- {n}, seed {s}: `{r['error']}`" for n, per in results[zoo].items()
                        for s, r in per.items() if "error" in r]
            md += (["", "Failures:"] + failures) if failures else []
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "benchmark_inr.md"
    md_path.write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md), flush=True)

    summaries = {zoo: {n: summarize(per) for n, per in res.items()} for zoo, res in results.items()}
    panels = {zoo: {n: (s["time_s_mean"], s["time_s_std"], s["test_acc_mean"], s["test_acc_std"])
                    for n, s in summ.items() if s["n_ok"]} for zoo, summ in summaries.items()}
    png = score_vs_time({z: p for z, p in panels.items() if p}, out_dir / "benchmark_inr.png") if any(panels.values()) else None
    curves = {zoo: {n: [r["curve"] for r in per.values() if r.get("curve")] for n, per in res.items()}
              for zoo, res in results.items()}
    curves = {zoo: {n: c for n, c in rows.items() if c} for zoo, rows in curves.items()}
    (out_dir / "benchmark_inr_curves.json").write_text(json.dumps(
        {zoo: {n: {str(s): r.get("curve", []) for s, r in per.items()} for n, per in res.items()}
         for zoo, res in results.items()}))
    curves_png = (learning_curves({z: c for z, c in curves.items() if c}, out_dir / "benchmark_inr_curves.png")
                  if any(curves.values()) else None)
    best = {zoo: max(((n, s["test_acc_mean"]) for n, s in summ.items() if s["n_ok"]), key=lambda x: x[1], default=(None,))[0]
            for zoo, summ in summaries.items()}
    headline = {
        "benchmark": "inr_classification", "target": args.target, "seeds": args.seeds, "epochs": args.epochs,
        "max_minutes": args.max_minutes, "quick": args.quick, "device": device,
        "total_s": time.perf_counter() - t_start, "markdown": str(md_path), "plot": None if png is None else str(png),
        "curves": None if curves_png is None else str(curves_png),
        "best": best,
        "results": {zoo: {n: {k: s[k] for k in ("test_acc_mean", "test_acc_std", "best_val_acc_mean", "time_s_mean",
                                                "n_ok", "n_failed")}
                          for n, s in summ.items()} for zoo, summ in summaries.items()},
    }
    print(json.dumps(bp.json_safe(headline)))
    return headline


if __name__ == "__main__":
    main()
