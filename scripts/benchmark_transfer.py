"""Benchmark predictions that transfer: train on one zoo (or a mixture), score on a shifted zoo.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_transfer.py                # probe hnp statnn, 3 seeds
    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_transfer.py --encoders probe statnn --seeds 0

A user's checkpoint is not drawn from our zoo's hyperparameter distribution. This script measures
what that costs and what helps. Zoos (a missing ``zoos/<name>.h5`` of a shipped config is
generated): A, the demo zoo (``--train-zoos``, default ``zoos/digits_mlp.h5``); B, a zoo of the
same architecture with wider ranges (``--extra-zoos``, default ``zoos/digits_mlp_wide.h5``); C, a
zoo of the same architecture made with another hyperparameter distribution
(``--test-zoo``, default ``zoos/digits_mlp_shifted.h5``), never trained on.

For each seed and each training set (``A``, and ``A+B`` unless ``--no-mixture``), one
``PropertyDataModule`` over the training set's files (every trained checkpoint, runs split
0.7 / 0.1 / 0.2 by the seed) trains

- each encoder (``--encoders``) with ``benchmark_predict.PREDICTORS``'s settings for ``--epochs``
  epochs, keeping the checkpoint with the best validation Kendall tau (validation runs of the
  training set: nothing of C is seen);
- the oracle-free reference, StatNN + trees (boosted trees on per-layer weight statistics), on the
  same training runs, its iterations chosen on the same validation runs.

Every predictor is scored (Kendall tau-b, R^2) on the training set's own test runs
("in-distribution") and on every trained checkpoint (epoch > 0) of every done run of C ("shifted"),
and on C's final checkpoints alone (trained networks, as a user's usually are: a harder ranking
than one across epochs). ``--encoders`` also takes ``probe-fn``, the probe without its weight
statistics (only its function-space view), to measure whether they help or hurt the transfer.
Output: per-seed lines, a markdown table (``--out-md``, rewritten after each seed), and one JSON
object with every figure as the last line.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_predict as bp  # noqa: E402  (also puts the repository root on sys.path)

import lightning.pytorch as pl  # noqa: E402

from wsl.data import PropertyDataModule  # noqa: E402
from wsl.prediction.baselines import MAX_ITER, boosted_trees, statistic_features  # noqa: E402
from wsl.prediction.fit import fit_predictor  # noqa: E402
from wsl.prediction.predict import predict_weights  # noqa: E402
from zoo.store import SPLITS  # noqa: E402

TREES = "StatNN + trees"
ENCODERS = ["probe", "hnp", "statnn"]
# "probe-fn": the probe without its weight statistics, only the function-space view (the networks'
# outputs on learned probe inputs), which does not see how large the weights are.
FUNCTION_ONLY = "probe-fn"
CHOICES = [*bp.ENCODERS, FUNCTION_ONLY]
ALL_RUNS = [1.0, 0.0, 0.0]  # a split that puts every done run of the test zoo in "train"


def predictor_settings(name: str, predictors: dict) -> tuple[str, dict]:
    """(encoder registry name, settings) of a predictor of ``--encoders``."""
    if name == FUNCTION_ONLY:
        probe = predictors["probe"]
        return "probe", {**probe, "encoder_kwargs": {**probe["encoder_kwargs"], "weight_stats": False}}
    return name, predictors[name]


def shifted_data(test_zoo: str, batch_size: int = 256) -> dict:
    """Every trained checkpoint of every done run of the test zoo: raw weights, targets and weight
    statistics, read once and shared by all seeds and predictors."""
    dm = PropertyDataModule([test_zoo], target=bp.TARGET, checkpoints="all", split=ALL_RUNS,
                            batch_size=batch_size)
    dm.setup("fit")
    items = dm.items("train")
    epochs = np.asarray(items["epochs"])
    return {"weights": dm.weights("train"), "truth": items["targets"].numpy().astype(np.float64),
            "stats": statistic_features(dm, "train"), "runs": len(dm.split_runs["train"]),
            "last": epochs == epochs.max()}


def trees_on(dm: PropertyDataModule, shifted: dict, seed: int, max_iter: int) -> tuple[dict, float]:
    """StatNN + trees fitted on dm's train runs (iterations chosen on its val runs), scored on dm's
    test runs and on the shifted zoo. Returns (scores, seconds)."""
    t0 = time.perf_counter()
    x = {s: statistic_features(dm, s) for s in SPLITS}
    y = {s: dm.items(s)["targets"].numpy().astype(np.float64) for s in SPLITS}
    n_test = len(x["test"])
    pred, _ = boosted_trees(x["train"], y["train"], x["val"], y["val"], np.concatenate([x["test"], shifted["stats"]]),
                            seed, max_iter)
    out = both_scores(y["test"], pred[:n_test], shifted, pred[n_test:])
    return out, time.perf_counter() - t0


def both_scores(in_truth, in_pred, shifted: dict, shift_pred) -> dict:
    """Scores in-distribution and on the shifted zoo: on all its trained checkpoints, and on its
    final checkpoints only (trained networks, as a user's usually are: a harder ranking, without
    the easy contrast between epoch-1 and final checkpoints)."""
    s_in, s_shift = bp.scores(in_truth, in_pred), bp.scores(shifted["truth"], shift_pred)
    last = shifted["last"]
    s_last = bp.scores(shifted["truth"][last], shift_pred[last])
    return {"shift_tau": s_shift["tau"], "shift_r2": s_shift["r2"], "shift_last_tau": s_last["tau"],
            "in_tau": s_in["tau"], "in_r2": s_in["r2"]}


def run_training_set(zoos: list[str], shifted: dict, names: list[str], predictors: dict, seed: int, epochs: int,
                     accelerator: str = "cpu", batch_size: int = 64, tree_iters: int = MAX_ITER,
                     max_models: int | None = None, augment: dict | None = None, log=print) -> dict:
    """Train every predictor of ``names`` (encoders and ``TREES``) on ``zoos`` with this seed's split
    and score it in-distribution and on the shifted zoo. A predictor that fails is recorded with its
    error; the others go on. Returns {predictor: scores or {"error": ...}}."""
    dm = PropertyDataModule(zoos, target=bp.TARGET, checkpoints="all", split=bp.SPLIT, split_seed=seed,
                            batch_size=batch_size, max_models=max_models,
                            augment=bp.AUGMENT if augment is None else augment)
    dm.setup("fit")
    in_truth = dm.items("test")["targets"].numpy().astype(np.float64)
    out = {}
    for name in names:
        try:
            if name == TREES:
                scores, seconds = trees_on(dm, shifted, seed, tree_iters)
                out[name] = {**scores, "time_s": seconds}
            else:
                encoder, settings = predictor_settings(name, predictors)
                dm.augmentations, dm.mixup = None, None  # fresh augmentation generators per encoder
                pl.seed_everything(seed, workers=True, verbose=False)
                with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
                    fitted = fit_predictor(dm, encoder, settings["encoder_kwargs"], settings["lr"], epochs, tmp,
                                           filename=encoder, weight_decay=bp.WEIGHT_DECAY, accelerator=accelerator)
                # wsl predict's path: each network with its own activation (the shifted zoo's may be fixed
                # where the training zoos' varies per network)
                shift_pred = predict_weights(fitted.model.cpu().eval(), shifted["weights"], 2048).double().numpy()
                out[name] = {**both_scores(in_truth, fitted.test_predictions, shifted, shift_pred),
                             "time_s": fitted.fit_seconds, "best_val_tau": fitted.best_val}
            r = out[name]
            log(f"  {name:<16} shifted tau {r['shift_tau']:.3f} R2 {r['shift_r2']:.3f} final ckpts tau "
                f"{r['shift_last_tau']:.3f} | in-dist tau "
                f"{r['in_tau']:.3f} R2 {r['in_r2']:.3f} | {r['time_s']:.0f} s")
        except Exception as e:  # noqa: BLE001 - one predictor failing must not stop the others
            traceback.print_exc()
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            log(f"  {name:<16} FAILED: {out[name]['error']}")
    return out


# --- reporting ------------------------------------------------------------------------------------------
KEYS = ("shift_tau", "shift_r2", "shift_last_tau", "in_tau", "in_r2", "time_s")


def summarize(per_seed: dict) -> dict:
    ok = [r for r in per_seed.values() if "error" not in r]
    out = {"n_ok": len(ok), "n_failed": len(per_seed) - len(ok)}
    for key in KEYS:
        v = np.asarray([r[key] for r in ok], dtype=np.float64)
        out[f"{key}_mean"] = float(v.mean()) if len(v) else None
        out[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else None)
    return out


def table_lines(results: dict) -> list[str]:
    lines = ["| trained on | predictor | shifted zoo τ per seed | **shifted zoo τ** | shifted zoo R² "
             "| shifted zoo, final checkpoints τ | in-distribution τ | in-distribution R² | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for training, preds in results.items():
        for name, r in preds.items():
            s = summarize(r)
            per = " / ".join("fail" if "error" in x else f"{x['shift_tau']:.3f}" for x in r.values())
            time_s = "—" if s["time_s_mean"] is None else f"{s['time_s_mean']:.0f}"
            lines.append(f"| {training} | {name} | {per} | {bp.fmt(s['shift_tau_mean'], s['shift_tau_std'])} | "
                         f"{bp.fmt(s['shift_r2_mean'], s['shift_r2_std'])} | {bp.fmt(s['shift_last_tau_mean'], s['shift_last_tau_std'])} | "
                         f"{bp.fmt(s['in_tau_mean'], s['in_tau_std'])} | "
                         f"{bp.fmt(s['in_r2_mean'], s['in_r2_std'])} | {time_s} |")
    return lines


def write_markdown(path: Path, report: dict) -> None:
    s = report["settings"]
    lines = ["# Transfer benchmark: test accuracy from weights on a shifted zoo", "",
             f"- command: `{report['command']}`", f"- date: {report['date']}", f"- device: {report['device']}",
             "- training sets: " + "; ".join(f"{k} = {v}" for k, v in s["training_sets"].items()),
             f"- shifted zoo: {s['test_zoo']} ({report.get('shifted_runs', '?')} done runs, "
             f"{report.get('shifted_checkpoints', '?')} trained checkpoints), never trained on",
             f"- seeds {s['seeds']} (split 0.7 / 0.1 / 0.2 of the training runs and training seed); encoders "
             f"{s['epochs']} epochs with benchmark_predict's settings, augmentation {s['augment']}, the checkpoint "
             f"with the best validation τ (training set's validation runs) scored",
             "", *table_lines(report["results"])]
    failures = [(t, n, seed, r["error"]) for t, preds in report["results"].items() for n, per in preds.items()
                for seed, r in per.items() if "error" in r]
    if failures:
        lines += ["", "Failures:", *[f"- {t}, {n}, seed {seed}: `{e}`" for t, n, seed, e in failures]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-zoos", nargs="+", default=["zoos/digits_mlp.h5"], help="zoo A (one or more files)")
    ap.add_argument("--extra-zoos", nargs="+", default=["zoos/digits_mlp_wide.h5"],
                    help="zoo B, added to A for the mixture training set")
    ap.add_argument("--test-zoo", default="zoos/digits_mlp_shifted.h5", help="zoo C, the shifted zoo")
    ap.add_argument("--no-mixture", action="store_true", help="train on A only")
    ap.add_argument("--encoders", nargs="+", default=ENCODERS, choices=CHOICES)
    ap.add_argument("--no-references", action="store_true", help="skip StatNN + trees")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-models", type=int, default=None, help="a seeded subset of the training runs")
    ap.add_argument("--augment", default=None,
                    help=f"the training DataModule's augment dict as JSON (default {json.dumps(bp.AUGMENT)})")
    ap.add_argument("--tree-iters", type=int, default=MAX_ITER)
    ap.add_argument("--quick", action="store_true", help="benchmark_predict's tiny encoders (a smoke test)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out-md", default="docs/benchmark_transfer.md")
    args = ap.parse_args(argv)
    args.augment = bp.AUGMENT if args.augment is None else json.loads(args.augment)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = bp.quiet_lightning_on(args.device)
    device = "cuda" if accelerator == "gpu" else "cpu"
    predictors = bp.QUICK_PREDICTORS if args.quick else bp.PREDICTORS
    train = [str(bp.resolve_zoo(z, Path("zoos"), {}, device)) for z in args.train_zoos]
    training_sets = {"A": train}
    if not args.no_mixture:
        training_sets["A+B"] = train + [str(bp.resolve_zoo(z, Path("zoos"), {}, device)) for z in args.extra_zoos]
    test_zoo = str(bp.resolve_zoo(args.test_zoo, Path("zoos"), {}, device))
    names = [*([] if args.no_references else [TREES]), *args.encoders]
    report = {
        "command": shlex.join(["python", *sys.argv] if argv is None else ["python", "scripts/benchmark_transfer.py", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": bp.device_name(accelerator),
        "settings": {"training_sets": training_sets, "test_zoo": test_zoo, "seeds": args.seeds, "epochs": args.epochs,
                     "batch_size": args.batch_size, "augment": args.augment, "tree_iters": args.tree_iters,
                     "max_models": args.max_models,
                     "predictors": {n: predictor_settings(n, predictors) for n in args.encoders}},
        "results": {t: {n: {} for n in names} for t in training_sets},
    }
    out_md = Path(args.out_md)
    print(f"device: {report['device']}", flush=True)
    t_start = time.perf_counter()
    shifted = shifted_data(test_zoo)
    report["shifted_runs"], report["shifted_checkpoints"] = shifted["runs"], len(shifted["truth"])
    print(f"shifted zoo {test_zoo}: {shifted['runs']} runs, {len(shifted['truth'])} checkpoints", flush=True)
    for seed in args.seeds:
        for training, zoos in training_sets.items():
            print(f"\n=== seed {seed}, trained on {training} ({', '.join(zoos)}) ===", flush=True)
            res = run_training_set(zoos, shifted, names, predictors, seed, args.epochs, accelerator, args.batch_size,
                                   args.tree_iters, args.max_models, args.augment,
                                   log=lambda s: print(s, flush=True))
            for name, r in res.items():
                report["results"][training][name][seed] = r
            write_markdown(out_md, report)
    report["summary"] = {t: {n: summarize(per) for n, per in preds.items()} for t, preds in report["results"].items()}
    report["total_s"] = time.perf_counter() - t_start
    write_markdown(out_md, report)
    print("\n" + "\n".join(table_lines(report["results"])))
    print(f"\nmarkdown: {out_md}; total {report['total_s']:.0f} s", flush=True)
    print(json.dumps(bp.json_safe(report), default=str))
    return report


if __name__ == "__main__":
    main()
