"""Benchmark predictions that transfer: train on one zoo (or a mixture), score on shifted zoos.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_transfer.py                # probe hnp statnn, 3 seeds
    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_transfer.py --encoders probe statnn --seeds 0

A user's checkpoint is not drawn from our zoo's hyperparameter distribution. This script measures
what that costs, what helps, and whether a prediction says when not to trust it. Zoos (a missing
``zoos/<name>.h5`` of a shipped config is generated): A, the demo zoo (``--train-zoos``, default
``zoos/digits_mlp.h5``); B, a zoo of the same architecture with wider ranges (``--extra-zoos``,
default ``zoos/digits_mlp_wide.h5``); the shifted zoos (``--test-zoos``), never trained on: by
default one per axis moved off A (``configs/zoo/digits_mlp_shift_<axis>.yaml``: optimizer, batch,
data, noise, init, and a new user's recipe, several axes at once) and ``digits_mlp_shifted``.

For each seed and each training set (``A``, and ``A+B`` unless ``--no-mixture``), one
``PropertyDataModule`` over the training set's files (every trained checkpoint, runs split
0.7 / 0.1 / 0.2 by the seed) trains

- each encoder (``--encoders``) with ``benchmark_predict.PREDICTORS``'s settings for ``--epochs``
  epochs, keeping the checkpoint with the best validation Kendall tau (validation runs of the
  training set: nothing of a shifted zoo is seen);
- the oracle-free reference, StatNN + trees (boosted trees on per-layer weight statistics), on the
  same training runs, its iterations chosen on the same validation runs.

Every predictor is scored (Kendall tau-b, R^2) on the training set's own test runs
("in-distribution") and on each shifted zoo: on every trained checkpoint (epoch > 0) of its done
runs, and on its final checkpoints alone (trained networks, as a user's usually are: a harder
ranking than one across epochs). Final checkpoints are those at the last epoch of the run's zoo
(A and B may end at different epochs).

Trust (encoders; ``wsl.prediction.predict.predict_trust``): the conformal interval at ``--level``
(calibrated on the training set's validation runs) is scored by its coverage (the fraction of
checkpoints whose true accuracy lies inside it) and mean width, in-distribution and on each
shifted zoo; the out-of-distribution flag (p-value below ``OOD_ALPHA``) by the fraction of a
shifted zoo's final checkpoints it flags, the coverage among flagged and unflagged ones, its
false-flag rate on the in-distribution test runs, and the AUROC of the OOD score between a shifted
zoo's final checkpoints and the in-distribution test runs' final checkpoints.

``--encoders`` also takes ``probe-fn``, the probe without its weight statistics (only its
function-space view), and ``probe-data``, the probe whose probes start at the task's training
inputs (``init: data``). Output: per-seed lines, a markdown report (``--out-md``, rewritten after each
seed), and one JSON object with every figure as the last line.
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
from sklearn.metrics import roc_auc_score  # noqa: E402

from wsl.data import PropertyDataModule  # noqa: E402
from wsl.prediction.baselines import MAX_ITER, boosted_trees, statistic_features  # noqa: E402
from wsl.prediction.fit import fit_predictor  # noqa: E402
from wsl.prediction.predict import OOD_ALPHA, predict_trust  # noqa: E402
from zoo.store import SPLITS  # noqa: E402

TREES = "StatNN + trees"
ENCODERS = ["probe", "hnp", "statnn"]
# "probe-fn": the probe without its weight statistics, only the function-space view (the networks'
# outputs on learned probe inputs), which does not see how large the weights are.
FUNCTION_ONLY = "probe-fn"
# "probe-data": the probe whose probes start at training inputs of the zoo's task (digits), on the
# data the networks were trained for, instead of N(0, 1) draws off it.
DATA_PROBES = "probe-data"
CHOICES = [*bp.ENCODERS, FUNCTION_ONLY, DATA_PROBES]
ALL_RUNS = [1.0, 0.0, 0.0]  # a split that puts every done run of a shifted zoo in "train"
SHIFT_AXES = ["optimizer", "batch", "data", "noise", "init", "user"]
TEST_ZOOS = [*(f"zoos/digits_mlp_shift_{axis}.h5" for axis in SHIFT_AXES), "zoos/digits_mlp_shifted.h5"]
IN_DIST = "in-distribution"  # the column of the training set's own test runs, beside the shifted zoos
LEVEL = 0.9  # the conformal intervals' coverage
# networks per predict_trust call: on CPU, HNP runs 4x faster in batches of 64 than of 2048 (cache);
# the probe and StatNN take the same time either way
TRUST_BATCH = 64


def predictor_settings(name: str, predictors: dict) -> tuple[str, dict]:
    """(encoder registry name, settings) of a predictor of ``--encoders``."""
    if name == FUNCTION_ONLY:
        probe = predictors["probe"]
        return "probe", {**probe, "encoder_kwargs": {**probe["encoder_kwargs"], "weight_stats": False}}
    if name == DATA_PROBES:
        probe = predictors["probe"]
        return "probe", {**probe, "encoder_kwargs": {**probe["encoder_kwargs"], "init": "data", "task": "digits"}}
    return name, predictors[name]


def final_checkpoints(items: dict) -> np.ndarray:
    """[N] bool: the items (``dm.items(split)``) at the last epoch of their run's zoo. Runs of one
    zoo are plain ids; of several, (zoo, id) pairs, and each zoo has its own last epoch."""
    epochs = np.asarray(items["epochs"])
    zoo_of = [r[0] if isinstance(r, tuple) else 0 for r in items["runs"]]
    last = {}
    for z, e in zip(zoo_of, epochs.tolist()):
        last[z] = max(last.get(z, e), e)
    return epochs == np.asarray([last[z] for z in zoo_of], dtype=epochs.dtype)


def shifted_data(test_zoo: str, batch_size: int = 256) -> dict:
    """Every trained checkpoint of every done run of a shifted zoo: raw weights, targets and weight
    statistics, read once and shared by all seeds and predictors; ``last`` marks its final
    checkpoints, ``final_acc`` their accuracies' spread (a zoo whose accuracies barely vary ranks
    nothing)."""
    dm = PropertyDataModule([test_zoo], target=bp.TARGET, checkpoints="all", split=ALL_RUNS,
                            batch_size=batch_size)
    dm.setup("fit")
    items = dm.items("train")
    truth = items["targets"].numpy().astype(np.float64)
    last = final_checkpoints(items)
    final = truth[last]
    return {"name": Path(test_zoo).stem, "path": str(test_zoo), "weights": dm.weights("train"), "truth": truth,
            "stats": statistic_features(dm, "train"), "runs": len(dm.split_runs["train"]), "last": last,
            "final_acc": {"mean": float(final.mean()), "std": float(final.std()), "min": float(final.min()),
                          "q10": float(np.quantile(final, 0.1)), "median": float(np.median(final)),
                          "q90": float(np.quantile(final, 0.9)), "max": float(final.max())}}


def zoo_info(shifted: dict) -> dict:
    """What the report says of a shifted zoo (everything of ``shifted_data`` but the tensors)."""
    return {"path": shifted["path"], "runs": shifted["runs"], "checkpoints": len(shifted["truth"]),
            "final_checkpoints": int(shifted["last"].sum()), "final_test_acc": shifted["final_acc"]}


# --- scores ---------------------------------------------------------------------------------------------
def rank_scores(truth: np.ndarray, pred: np.ndarray, last: np.ndarray) -> dict:
    """Kendall tau and R^2 on every checkpoint, and on the final checkpoints alone (trained networks,
    as a user's usually are: a harder ranking, without the easy contrast between epoch-1 and final
    checkpoints)."""
    s_all, s_last = bp.scores(truth, pred), bp.scores(truth[last], pred[last])
    return {"tau": s_all["tau"], "r2": s_all["r2"], "last_tau": s_last["tau"], "last_r2": s_last["r2"]}


def _array(trust, field: str):
    value = getattr(trust, field)
    if value is None:
        raise ValueError(f"predict_trust gave no {field!r}: the predictor carries no calibration for it")
    return value.double().numpy()


def trust_scores(trust, truth: np.ndarray, last: np.ndarray, alpha: float) -> dict:
    """How far ``predict_trust``'s figures can be trusted on these checkpoints: the intervals'
    coverage and mean width on all of them and on the final ones; the fraction flagged
    out-of-distribution (p < alpha) of all of them and of the final ones; and the intervals'
    coverage among the flagged and among the unflagged final checkpoints (None where there are none)."""
    low, high, p = _array(trust, "low"), _array(trust, "high"), _array(trust, "ood_p")
    inside, width, flagged = (low <= truth) & (truth <= high), high - low, p < alpha
    f_last, in_last = flagged[last], inside[last]
    return {"cover": float(inside.mean()), "width": float(width.mean()),
            "last_cover": float(in_last.mean()), "last_width": float(width[last].mean()),
            "flagged": float(flagged.mean()), "last_flagged": float(f_last.mean()),
            "last_cover_flagged": float(in_last[f_last].mean()) if f_last.any() else None,
            "last_cover_unflagged": float(in_last[~f_last].mean()) if (~f_last).any() else None}


def ood_auroc(shifted_scores: np.ndarray, in_scores: np.ndarray) -> float:
    """AUROC of the OOD score separating a shifted zoo's checkpoints (positives) from
    in-distribution ones (negatives): 0.5 is chance, 1 a perfect separation."""
    labels = np.concatenate([np.ones(len(shifted_scores)), np.zeros(len(in_scores))])
    return float(roc_auc_score(labels, np.concatenate([shifted_scores, in_scores])))


def trees_on(dm: PropertyDataModule, shifted: list[dict], in_last: np.ndarray, seed: int,
             max_iter: int) -> tuple[dict, float]:
    """StatNN + trees fitted on dm's train runs (iterations chosen on its val runs), scored on dm's
    test runs and on each shifted zoo. Returns ({zoo or IN_DIST: scores}, seconds)."""
    t0 = time.perf_counter()
    x = {s: statistic_features(dm, s) for s in SPLITS}
    y = {s: dm.items(s)["targets"].numpy().astype(np.float64) for s in SPLITS}
    parts = [x["test"], *(z["stats"] for z in shifted)]
    pred, _ = boosted_trees(x["train"], y["train"], x["val"], y["val"], np.concatenate(parts), seed, max_iter)
    pieces = np.split(pred, np.cumsum([len(p) for p in parts])[:-1])
    out = {IN_DIST: rank_scores(y["test"], pieces[0], in_last)}
    for z, p in zip(shifted, pieces[1:]):
        out[z["name"]] = rank_scores(z["truth"], p, z["last"])
    return out, time.perf_counter() - t0


def encoder_scores(model, dm: PropertyDataModule, test_pred: np.ndarray, in_last: np.ndarray, shifted: list[dict],
                   level: float, alpha: float) -> dict:
    """A fitted encoder's ranking and trust scores in-distribution (dm's test runs) and on each
    shifted zoo. Returns {zoo or IN_DIST: scores}."""
    in_truth = dm.items("test")["targets"].numpy().astype(np.float64)
    in_trust = predict_trust(model, dm.weights("test"), batch_size=TRUST_BATCH, level=level)
    in_ood = _array(in_trust, "ood_score")[in_last]
    out = {IN_DIST: {**rank_scores(in_truth, test_pred, in_last), **trust_scores(in_trust, in_truth, in_last, alpha)}}
    for z in shifted:
        # each network with its own activation (a shifted zoo's may be fixed where the training zoos' varies)
        trust = predict_trust(model, z["weights"], batch_size=TRUST_BATCH, level=level)
        out[z["name"]] = {**rank_scores(z["truth"], _array(trust, "values"), z["last"]),
                          **trust_scores(trust, z["truth"], z["last"], alpha),
                          "last_auroc": ood_auroc(_array(trust, "ood_score")[z["last"]], in_ood)}
    return out


def run_training_set(zoos: list[str], shifted: list[dict], names: list[str], predictors: dict, seed: int, epochs: int,
                     accelerator: str = "cpu", batch_size: int = 64, tree_iters: int = MAX_ITER,
                     max_models: int | None = None, augment: dict | None = None, level: float = LEVEL,
                     alpha: float = OOD_ALPHA, log=print) -> dict:
    """Train every predictor of ``names`` (encoders and ``TREES``) on ``zoos`` with this seed's split
    and score it in-distribution and on each shifted zoo (``shifted_data``). A predictor that fails
    is recorded with its error; the others go on. Returns {predictor: {"scores": {zoo or IN_DIST:
    scores}, "time_s": ...} or {"error": ...}}."""
    dm = PropertyDataModule(zoos, target=bp.TARGET, checkpoints="all", split=bp.SPLIT, split_seed=seed,
                            batch_size=batch_size, max_models=max_models,
                            augment=bp.AUGMENT if augment is None else augment)
    dm.setup("fit")
    in_last = final_checkpoints(dm.items("test"))
    out = {}
    for name in names:
        try:
            if name == TREES:
                scores, seconds = trees_on(dm, shifted, in_last, seed, tree_iters)
                out[name] = {"scores": scores, "time_s": seconds}
            else:
                encoder, settings = predictor_settings(name, predictors)
                dm.augmentations, dm.mixup = None, None  # fresh augmentation generators per encoder
                pl.seed_everything(seed, workers=True, verbose=False)
                with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
                    fitted = fit_predictor(dm, encoder, settings["encoder_kwargs"], settings["lr"], epochs, tmp,
                                           filename=encoder, weight_decay=bp.WEIGHT_DECAY, accelerator=accelerator)
                t0 = time.perf_counter()
                scores = encoder_scores(fitted.model.cpu().eval(), dm, fitted.test_predictions, in_last, shifted,
                                        level, alpha)
                out[name] = {"scores": scores, "time_s": fitted.fit_seconds, "best_val_tau": fitted.best_val,
                             "score_s": time.perf_counter() - t0}
            for line in result_lines(name, out[name], level):
                log(line)
        except Exception as e:  # noqa: BLE001 - one predictor failing must not stop the others
            traceback.print_exc()
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            log(f"  {name:<16} FAILED: {out[name]['error']}")
    return out


def result_lines(name: str, r: dict, level: float = LEVEL) -> list[str]:
    """A predictor's per-seed log lines: in-distribution, then one per shifted zoo."""
    def line(label: str, s: dict) -> str:
        text = (f"τ {s['tau']:.3f} final {s['last_tau']:.3f} R² {s['r2']:.3f} (final {s['last_r2']:.3f})")
        if "cover" in s:
            text += (f" | {level:.0%}-interval cover {s['cover']:.3f} (final {s['last_cover']:.3f}) width "
                     f"{s['width']:.3f} | OOD-flagged final {s['last_flagged']:.3f} (cover flagged "
                     f"{fmt_or_dash(s['last_cover_flagged'])} / unflagged {fmt_or_dash(s['last_cover_unflagged'])})")
        if "last_auroc" in s:
            text += f" AUROC {s['last_auroc']:.3f}"
        return f"    {label:<18} {text}"

    head = f"  {name:<16} {r['time_s']:.0f} s"
    if "score_s" in r:
        head += f" (+{r['score_s']:.0f} s scoring), best val τ {r['best_val_tau']:.3f}"
    return [head, *(line(zoo_label(z), s) for z, s in r["scores"].items())]


# --- reporting ------------------------------------------------------------------------------------------
RANK_KEYS = ("tau", "r2", "last_tau", "last_r2")
TRUST_KEYS = ("cover", "width", "last_cover", "last_width", "flagged", "last_flagged", "last_cover_flagged",
              "last_cover_unflagged", "last_auroc")


def zoo_label(name: str) -> str:
    """A shifted zoo's column header: its file stem without the demo zoo's prefix."""
    return name.removeprefix("digits_mlp_")


def fmt_or_dash(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def mean_std(values: list) -> dict:
    """Mean and std (ddof 1; 0 for one value) of the values that are given (None and NaN left out)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else None), "n": int(len(v))}


def summarize(per_seed: dict) -> dict:
    """Per predictor over the seeds that succeeded: the training time and every score of every
    column (in-distribution and each shifted zoo), as {"mean", "std", "n"}."""
    ok = [r for r in per_seed.values() if "error" not in r]
    out = {"n_ok": len(ok), "n_failed": len(per_seed) - len(ok), "time_s": mean_std([r["time_s"] for r in ok])}
    columns = list(ok[0]["scores"]) if ok else []
    out["scores"] = {c: {k: mean_std([r["scores"][c][k] for r in ok])
                         for k in (*RANK_KEYS, *TRUST_KEYS) if k in ok[0]["scores"][c]} for c in columns}
    return out


def _cell(summary: dict, column: str, key: str, bold: bool = False) -> str:
    s = summary["scores"].get(column, {}).get(key)
    if s is None or s["mean"] is None:
        return "—"
    text = bp.fmt(s["mean"], s["std"])
    return f"**{text}**" if bold else text


def score_table(results: dict, columns: list[str], key: str) -> list[str]:
    """Rows (training set, predictor), one column per zoo (in-distribution first): ``key``."""
    lines = ["| trained on | predictor | " + " | ".join(zoo_label(c) for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for training, preds in results.items():
        for name, per_seed in preds.items():
            s = summarize(per_seed)
            lines.append(f"| {training} | {name} | " + " | ".join(_cell(s, c, key) for c in columns) + " |")
    return lines


def trust_table(results: dict, columns: list[str]) -> list[str]:
    """Rows (training set, encoder, zoo): the intervals' coverage and width, the OOD flag's rate,
    coverage among flagged and unflagged final checkpoints, and the OOD score's AUROC."""
    lines = ["| trained on | predictor | zoo | coverage | width | coverage, final | width, final | flagged OOD, "
             "final | coverage, flagged final | coverage, unflagged final | OOD AUROC, final |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for training, preds in results.items():
        for name, per_seed in preds.items():
            s = summarize(per_seed)
            if not any("cover" in v for v in s["scores"].values()):
                continue  # the trees: no trust figures
            for c in columns:
                cells = [_cell(s, c, k) for k in ("cover", "width", "last_cover", "last_width", "last_flagged",
                                                  "last_cover_flagged", "last_cover_unflagged", "last_auroc")]
                lines.append(f"| {training} | {name} | {zoo_label(c)} | " + " | ".join(cells) + " |")
    return lines


def report_tables(report: dict) -> list[str]:
    """Every table of the report, with its heading."""
    columns = [IN_DIST, *report["shifted_zoos"]]
    res = report["results"]
    return ["## Kendall τ at final checkpoints (trained networks, a user's case)", "", *score_table(res, columns, "last_tau"),
            "", "## Kendall τ over all trained checkpoints", "", *score_table(res, columns, "tau"),
            "", "## R² over all trained checkpoints", "", *score_table(res, columns, "r2"),
            "", "## R² at final checkpoints", "", *score_table(res, columns, "last_r2"),
            "", f"## Trust: {report['settings']['level']:.0%} conformal intervals and the OOD flag "
                f"(p < {report['settings']['ood_alpha']:g})", "",
            "Coverage: the fraction of checkpoints whose true test accuracy lies in the interval; width: "
            "its mean width. *flagged OOD, final*: on a shifted zoo the fraction of its final checkpoints "
            "flagged; in-distribution, the false-flag rate on the test runs' final checkpoints. AUROC: "
            "the OOD score between a shifted zoo's final checkpoints and the in-distribution test runs' "
            "final checkpoints.", "",
            *trust_table(res, columns)]


def write_markdown(path: Path, report: dict) -> None:
    s = report["settings"]
    zoos = [f"  - {zoo_label(n)}: `{z['path']}`, {z['runs']} done runs, {z['checkpoints']} trained checkpoints; "
            f"final test accuracy mean {z['final_test_acc']['mean']:.3f}, std {z['final_test_acc']['std']:.3f}, "
            f"10 / 50 / 90 % {z['final_test_acc']['q10']:.3f} / {z['final_test_acc']['median']:.3f} / "
            f"{z['final_test_acc']['q90']:.3f}" for n, z in report["shifted_zoos"].items()]
    lines = ["# Transfer benchmark: test accuracy from weights on shifted zoos", "",
             f"- command: `{report['command']}`", f"- date: {report['date']}", f"- device: {report['device']}",
             "- training sets: " + "; ".join(f"{k} = {v}" for k, v in s["training_sets"].items()),
             "- shifted zoos, never trained on:", *zoos,
             f"- seeds {s['seeds']} (split 0.7 / 0.1 / 0.2 of the training runs and training seed); encoders "
             f"{s['epochs']} epochs with benchmark_predict's settings, augmentation {s['augment']}, the checkpoint "
             f"with the best validation τ (training set's validation runs) scored",
             "", *report_tables(report)]
    failures = [(t, n, seed, r["error"]) for t, preds in report["results"].items() for n, per in preds.items()
                for seed, r in per.items() if "error" in r]
    if failures:
        lines += ["", "Failures:", *[f"- {t}, {n}, seed {seed}: `{e}`" for t, n, seed, e in failures]]
    if "total_s" in report:
        lines += ["", f"Total time: {report['total_s']:.0f} s."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-zoos", nargs="+", default=["zoos/digits_mlp.h5"], help="zoo A (one or more files)")
    ap.add_argument("--extra-zoos", nargs="+", default=["zoos/digits_mlp_wide.h5"],
                    help="zoo B, added to A for the mixture training set")
    ap.add_argument("--test-zoos", nargs="+", default=TEST_ZOOS, help="the shifted zoos, each scored on its own")
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
    ap.add_argument("--level", type=float, default=LEVEL, help="the conformal intervals' coverage")
    ap.add_argument("--quick", action="store_true", help="benchmark_predict's tiny encoders (a smoke test)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out-md", default="docs/benchmark_transfer.md")
    args = ap.parse_args(argv)
    args.augment = bp.AUGMENT if args.augment is None else json.loads(args.augment)
    stems = [Path(z).stem for z in args.test_zoos]
    if len(set(stems)) < len(stems):
        ap.error(f"--test-zoos: two files share a name ({', '.join(sorted(stems))}); each zoo is reported by its name")
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
    test_zoos = [str(bp.resolve_zoo(z, Path("zoos"), {}, device)) for z in args.test_zoos]
    names = [*([] if args.no_references else [TREES]), *args.encoders]
    report = {
        "command": shlex.join(["python", *sys.argv] if argv is None else ["python", "scripts/benchmark_transfer.py", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": bp.device_name(accelerator),
        "settings": {"training_sets": training_sets, "test_zoos": test_zoos, "seeds": args.seeds, "epochs": args.epochs,
                     "batch_size": args.batch_size, "augment": args.augment, "tree_iters": args.tree_iters,
                     "max_models": args.max_models, "level": args.level, "ood_alpha": OOD_ALPHA,
                     "predictors": {n: predictor_settings(n, predictors) for n in args.encoders}},
        "results": {t: {n: {} for n in names} for t in training_sets},
    }
    out_md = Path(args.out_md)
    print(f"device: {report['device']}", flush=True)
    t_start = time.perf_counter()
    shifted = [shifted_data(z) for z in test_zoos]
    report["shifted_zoos"] = {z["name"]: zoo_info(z) for z in shifted}
    for z in shifted:
        a = z["final_acc"]
        print(f"shifted zoo {z['path']}: {z['runs']} runs, {len(z['truth'])} checkpoints; final test accuracy "
              f"mean {a['mean']:.3f} std {a['std']:.3f} (10 / 50 / 90 %: {a['q10']:.3f} / {a['median']:.3f} / "
              f"{a['q90']:.3f})", flush=True)
    for seed in args.seeds:
        for training, zoos in training_sets.items():
            print(f"\n=== seed {seed}, trained on {training} ({', '.join(zoos)}) ===", flush=True)
            res = run_training_set(zoos, shifted, names, predictors, seed, args.epochs, accelerator, args.batch_size,
                                   args.tree_iters, args.max_models, args.augment, args.level, OOD_ALPHA,
                                   log=lambda s: print(s, flush=True))
            for name, r in res.items():
                report["results"][training][name][seed] = r
            write_markdown(out_md, report)
    report["summary"] = {t: {n: summarize(per) for n, per in preds.items()} for t, preds in report["results"].items()}
    report["total_s"] = time.perf_counter() - t_start
    write_markdown(out_md, report)
    print("\n" + "\n".join(report_tables(report)))
    print(f"\nmarkdown: {out_md}; total {report['total_s']:.0f} s", flush=True)
    print(json.dumps(bp.json_safe(report), default=str))
    return report


if __name__ == "__main__":
    main()
