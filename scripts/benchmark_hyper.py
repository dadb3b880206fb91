"""Hypernetworks against directly trained networks (issue 16's benchmark).

For each grid zoo (networks trained directly over a grid of regularization hyperparameters λ, a
few seeds per point; ``configs/zoo/*_grid.yaml``):

1. Functional hypernetworks (no zoo read, only its config), plain and magnitude-invariant (MIP),
   ``--seeds`` seeds each, a fixed number of steps; validation loss curves (PNG) and the steps
   each run needs to reach a common validation loss (the highest final loss of all runs).
2. Emitted against direct: at every grid point, the test accuracy of the network emitted at λ
   (from the checkpoint with the best validation score) against the mean test accuracy of the
   networks trained directly at λ; mean difference and mean absolute difference, by each
   hyperparameter's value, and how the emitted networks follow the trained ones: Pearson r over
   the grid and along each λ axis, beside the ceiling the trained networks' own seed noise sets.
3. Distillation from the zoo's training runs (its weights, aligned, or its outputs), same comparison.
4. Cost of one network: emitting it against training it (alone, and per network of the zoo's population run).
5. ``wsl hyper search``'s procedure on weight decay and dropout (no label noise, all data: more
   data and fewer wrong labels are always better, so their optimum is the range's end): a
   hypernetwork trained on those two, λ by gradient on its emitted network's validation loss,
   networks trained directly at λ, against the grid point (of that slice) with the best mean
   validation accuracy, retrained with the same seeds. With the output-distilled hypernetwork
   (part 3), the same search over all four λ against the grid's best point.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_hyper.py --zoos digits_mlp_grid mnist1d_mlp_grid

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsl.cli.plots import plt  # noqa: E402
from wsl.data import TaskDataModule, WeightDataModule  # noqa: E402
from wsl.hyper import HyperNetwork  # noqa: E402
from wsl.hyper.search import best_grid_point, gradient_search, train_directly  # noqa: E402
from wsl.core.checkpoint import load_model  # noqa: E402
from wsl.core.trainer import best_checkpoint, make_trainer  # noqa: E402
from zoo.config import parse_config, sample_hparams  # noqa: E402
from zoo.generate import build_task_and_spec  # noqa: E402
from zoo.store import Zoo  # noqa: E402
from zoo.train import train_population  # noqa: E402

CONDITIONS = ["weight_decay", "dropout", "label_noise", "data_fraction"]


class ValCurve(Callback):
    """(step, val/loss) at every validation."""

    def __init__(self):
        self.points: list[tuple[int, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.points.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))


def ensure_zoo(name: str, out_dir: Path) -> tuple[Path, float | None]:
    path = out_dir / f"{name}.h5"
    if path.exists():
        return path, None
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wsl.cli", "zoo", "generate", name, "--out", str(path), "--quiet"],
                   check=True, cwd=ROOT)
    return path, time.perf_counter() - t


def fit(model: HyperNetwork, data, steps: int, val_every: int, folder: Path) -> tuple[HyperNetwork, list, float]:
    curve = ValCurve()
    ckpt = best_checkpoint("best", dirpath=folder)
    steps_per_epoch = max(1, len(data.train_dataloader()))
    trainer = make_trainer(max_epochs=10_000, callbacks=[curve, ckpt], max_steps=steps,
                           check_val_every_n_epoch=max(1, val_every // steps_per_epoch), enable_checkpointing=True)
    t = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - t
    return load_model(ckpt.best_model_path, HyperNetwork), curve.points, seconds


def grid_comparison(model: HyperNetwork, zoo_path: Path) -> dict:
    """Emitted (test accuracy at each grid point) against the mean of the directly trained networks there."""
    with Zoo(zoo_path) as z:
        done = z.done
        cols = np.stack([z.hparam(n).astype(np.float64) for n in model.conditions], 1)[done]
        test = z.metric("test_acc")[done, -1]
    points, inverse = np.unique(cols, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    direct = np.array([np.nanmean(test[inverse == k]) for k in range(len(points))])
    emitted = model.evaluate_at(torch.tensor(points, dtype=torch.float32), "test")["acc"]
    diff = emitted - direct
    by = {}
    for j, name in enumerate(model.conditions):
        by[name] = {f"{v:g}": {"direct": float(direct[points[:, j] == v].mean()),
                               "emitted": float(emitted[points[:, j] == v].mean())}
                    for v in np.unique(points[:, j])}
    return {"grid_points": len(points), "direct_mean": float(direct.mean()), "emitted_mean": float(emitted.mean()),
            "mean_diff": float(diff.mean()), "mean_abs_diff": float(np.abs(diff).mean()),
            "emitted_below_direct_by_2pts": int((diff < -0.02).sum()), "by_hparam": by,
            "pearson": pearson(emitted, direct),
            "pearson_by_axis": {name: axis_pearson(points, j, emitted, direct) for j, name in enumerate(model.conditions)},
            "slope_by_axis": {name: axis_slope(points, j, emitted, direct) for j, name in enumerate(model.conditions)}}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def along_axis(points: np.ndarray, j: int, *values: np.ndarray) -> list[np.ndarray]:
    """``values`` with each line's mean removed (a line: the grid points that share every coordinate
    but the ``j``-th), so that only their change along λ axis ``j`` is left."""
    _, line = np.unique(np.delete(points, j, axis=1), axis=0, return_inverse=True)
    line = line.reshape(-1)
    return [v - (np.bincount(line, weights=v) / np.bincount(line))[line] for v in values]


def axis_pearson(points: np.ndarray, j: int, emitted: np.ndarray, direct: np.ndarray) -> float:
    """Does the emitted network follow the trained ones along λ axis ``j``? The Pearson correlation
    of their accuracies' changes along it (``along_axis``)."""
    return pearson(*along_axis(points, j, emitted, direct))


def axis_slope(points: np.ndarray, j: int, emitted: np.ndarray, direct: np.ndarray) -> float:
    """How much of the trained networks' change along λ axis ``j`` the emitted ones show: the least
    squares slope of their changes on the trained ones' (1: all of it; Pearson r ignores the size)."""
    e, d = along_axis(points, j, emitted, direct)
    den = float((d * d).sum())
    return float((e * d).sum() / den) if den > 0 else float("nan")


def direct_ceiling(zoo_path: Path, conditions: list[str], repeats: int = 20, seed: int = 0) -> dict:
    """How closely any emitter can follow the directly trained networks, given their seed noise:
    the networks at each grid point split at random into two halves, the Pearson r of the halves'
    mean accuracies (over the grid and along each axis, as ``grid_comparison``; mean of ``repeats``
    splits), and the Spearman-Brown ceiling for a perfect emitter against the mean of all seeds,
    sqrt(2r / (1 + r))."""
    with Zoo(zoo_path) as z:
        cols = np.stack([z.hparam(n).astype(np.float64) for n in conditions], 1)[z.done]
        test = z.metric("test_acc")[z.done, -1]
    points, inverse = np.unique(cols, axis=0, return_inverse=True)
    members = [np.flatnonzero(inverse.reshape(-1) == k) for k in range(len(points))]
    rng = np.random.default_rng(seed)
    split: dict[str, list[float]] = {}
    for _ in range(repeats):
        halves = [rng.permutation(m) for m in members]
        a = np.array([test[h[:len(h) // 2]].mean() for h in halves])
        b = np.array([test[h[len(h) // 2:]].mean() for h in halves])
        split.setdefault("all", []).append(pearson(a, b))
        for j, name in enumerate(conditions):
            split.setdefault(name, []).append(axis_pearson(points, j, a, b))
    r = {k: float(np.mean(v)) for k, v in split.items()}
    return {"split_half": r, "ceiling": {k: float(np.sqrt(max(0.0, 2 * v / (1 + v)))) for k, v in r.items()},
            "seeds_per_point": float(np.mean([len(m) for m in members]))}


def following(comp: dict) -> str:
    """How the emitted networks follow the trained ones, in words: Pearson r over the grid and along each axis."""
    axes = ", ".join(f"{k} {v:.2f} (slope {comp['slope_by_axis'][k]:.2f})" for k, v in comp["pearson_by_axis"].items())
    return f"Pearson r of emitted and direct accuracy {comp['pearson']:.2f}; along each axis: {axes}"


def cost_of_one_network(model: HyperNetwork, zoo_path: Path, repeats: int = 50) -> dict:
    """Seconds to emit one network (and one of a batch of 100) against training one directly."""
    lam = model.eval_lambdas()[:1]
    with torch.no_grad():
        model.emit(lam)
        t = time.perf_counter()
        for _ in range(repeats):
            model.emit(lam)
        one = (time.perf_counter() - t) / repeats
        batch = model.encoder.sample(100, torch.Generator().manual_seed(0))
        t = time.perf_counter()
        model.emit(batch)
        per_in_batch = (time.perf_counter() - t) / 100
    with Zoo(zoo_path) as z:
        config = parse_config(z.config)
    hp = sample_hparams(config, [0])  # the zoo's first network's λ
    task, spec = build_task_and_spec(config)
    t = time.perf_counter()
    train_population(spec, task, hp, [12345], epochs=config.epochs, checkpoints=[config.epochs])
    train_one = time.perf_counter() - t
    return {"emit_one_s": one, "emit_per_network_in_batch_of_100_s": per_in_batch, "train_one_directly_s": train_one,
            "speedup_one": train_one / one, "hypernetwork_params": sum(p.numel() for p in model.parameters()),
            "network_params": spec.num_params}


def steps_to(points: list[tuple[int, float]], threshold: float) -> int | None:
    for step, loss in points:
        if loss <= threshold:
            return step
    return None


def run_zoo(name: str, args) -> dict:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    zoo_path, gen_seconds = ensure_zoo(name, Path(args.zoo_dir))
    with Zoo(zoo_path) as z:
        zoo_models = int(z.done.sum())
    res: dict = {"zoo": str(zoo_path), "zoo_models": zoo_models, "zoo_generate_s": gen_seconds, "runs": {}}
    print(f"\n== {name}: {zoo_models} directly trained networks ==", flush=True)
    res["direct_ceiling"] = direct_ceiling(zoo_path, CONDITIONS)
    print("how closely any emitter can follow them (seed noise; Spearman-Brown ceiling of Pearson r): over the grid "
          f"{res['direct_ceiling']['ceiling']['all']:.2f}; along each axis: "
          + ", ".join(f"{k} {res['direct_ceiling']['ceiling'][k]:.2f}" for k in CONDITIONS), flush=True)
    curves, models = {}, {}
    for param in (("plain", "mip") if "grid" in args.parts else ()):
        for seed in args.seeds:
            torch.manual_seed(seed)
            data = TaskDataModule(str(zoo_path), conditions=CONDITIONS, batch_size=args.batch_size, seed=seed)
            model = HyperNetwork(data.spec_json, data.source_json, CONDITIONS, parametrization=param,
                                 heads=args.heads, hidden=args.hidden, networks_per_step=args.networks_per_step,
                                 lr=args.lr, seed=seed)
            best, points, seconds = fit(model, data, args.steps, args.val_every, out / f"{param}_{seed}")
            curves[(param, seed)], models[(param, seed)] = points, best
            comp = grid_comparison(best, zoo_path)
            res["runs"][f"{param}_{seed}"] = {"seconds": seconds, "final_val_loss": points[-1][1],
                                              "best_val_loss": min(p[1] for p in points), **comp}
            print(f"{param} seed {seed}: {seconds:.0f} s, val loss {points[-1][1]:.4f}; test acc at the grid points: "
                  f"emitted {comp['emitted_mean']:.4f}, direct {comp['direct_mean']:.4f} (diff {comp['mean_diff']:+.4f}, "
                  f"|diff| {comp['mean_abs_diff']:.4f}); {following(comp)}", flush=True)
    if not curves:
        return finish_zoo(res, models, zoo_path, gen_seconds, zoo_models, out, args)
    threshold = max(p[-1][1] for p in curves.values())
    for key, points in curves.items():
        res["runs"][f"{key[0]}_{key[1]}"]["steps_to_threshold"] = steps_to(points, threshold)
    summary = {}
    for param in ("plain", "mip"):
        runs = [res["runs"][f"{param}_{s}"] for s in args.seeds]
        summary[param] = {k: float(np.mean([r[k] for r in runs])) for k in
                          ("emitted_mean", "direct_mean", "mean_diff", "mean_abs_diff", "final_val_loss")}
        summary[param]["steps_to_threshold"] = [r["steps_to_threshold"] for r in runs]
    res["summary"], res["val_loss_threshold"] = summary, threshold
    st = {p: [s for s in summary[p]["steps_to_threshold"] if s is not None] for p in summary}
    if all(st.values()):
        res["mip_speedup_steps"] = float(np.mean(st["plain"]) / np.mean(st["mip"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for (param, seed), points in curves.items():
        s, v = zip(*points)
        ax.plot(s, v, color="C0" if param == "plain" else "C1", alpha=0.8, label=param if seed == args.seeds[0] else None)
    ax.axhline(threshold, color="gray", ls="--", lw=0.8, label="common threshold")
    ax.set(xlabel="training step", ylabel="validation loss (emitted networks)", title=f"{name}: plain vs MIP",
           yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    res["curves_png"] = str(out / "curves.png")

    return finish_zoo(res, models, zoo_path, gen_seconds, zoo_models, out, args)


def finish_zoo(res: dict, models: dict, zoo_path: Path, gen_seconds, zoo_models: int, out: Path, args) -> dict:
    """Distillation, cost and search (the parts asked for)."""
    for signal in (args.distill if "distill" in args.parts else ()):  # distillation from the zoo's training runs
        torch.manual_seed(0)
        data = WeightDataModule([str(zoo_path)], conditions=CONDITIONS, align=signal == "weights", batch_size=64)
        data.setup("fit")
        model = HyperNetwork(data.spec_json, data.source_json, CONDITIONS, signal=signal, heads=args.heads,
                             hidden=args.hidden, lr=args.lr)
        model.set_normalizers(**data.normalizers())
        best, points, seconds = fit(model, data, args.steps, args.val_every, out / f"distill_{signal}")
        models[("distill", signal)] = best
        comp = grid_comparison(best, zoo_path)
        res["runs"][f"distill_{signal}"] = {"seconds": seconds, "final_val_loss": points[-1][1], **comp}
        print(f"distilled from {signal}: {seconds:.0f} s, emitted {comp['emitted_mean']:.4f} vs direct "
              f"{comp['direct_mean']:.4f} (diff {comp['mean_diff']:+.4f}, |diff| {comp['mean_abs_diff']:.4f}); "
              f"{following(comp)}", flush=True)

    if any(k[0] == "plain" for k in models):
        best_plain = min((k for k in models if k[0] == "plain"),
                         key=lambda k: res["runs"][f"plain_{k[1]}"]["final_val_loss"])
        res["cost"] = cost_of_one_network(models[best_plain], zoo_path)
        if gen_seconds is not None:
            res["cost"]["zoo_population_s_per_network"] = gen_seconds / zoo_models
        print(f"cost: emit one network {res['cost']['emit_one_s'] * 1e3:.2f} ms, train one directly "
              f"{res['cost']['train_one_directly_s']:.2f} s ({res['cost']['speedup_one']:.0f}x)", flush=True)
    if "search" in args.parts:
        res["search"] = search_benchmark(zoo_path, out, args)
    if ("distill", "outputs") in models and "search" in args.parts:
        res["search_all"] = search_all(models[("distill", "outputs")], zoo_path, args)
    return res


def search_all(model: HyperNetwork, zoo_path: Path, args) -> dict:
    """``wsl hyper search`` over all four λ through the output-distilled hypernetwork (the emulator
    of trained networks), networks trained at the λ found, against the grid's best point by mean
    validation accuracy, retrained with the same seeds."""
    t = time.perf_counter()
    found = gradient_search(model, steps=300, starts=8)
    seconds = time.perf_counter() - t
    direct = train_directly(model, found["lambda"], seeds=args.search_seeds)["test_acc"]
    grid = best_grid_point(zoo_path, list(model.hparam_names))
    at_grid = train_directly(model, grid["lambda"], seeds=args.search_seeds)["test_acc"]
    res = {"lambda": found["lambda"], "search_s": seconds, "direct_test_acc": float(np.mean(direct)),
           "direct_test_acc_std": float(np.std(direct)), "grid_best": grid,
           "grid_best_retrained_test_acc": float(np.mean(at_grid)), "seeds": args.search_seeds,
           "gap_points": 100 * float(np.mean(at_grid) - np.mean(direct))}
    print(f"search over all of {list(model.hparam_names)} (output-distilled hypernetwork): λ "
          + ", ".join(f"{k}={v:.4g}" for k, v in found["lambda"].items())
          + f" -> {args.search_seeds} networks trained there: test acc {res['direct_test_acc']:.4f}; best grid point "
          f"{grid['lambda']} retrained with the same seeds {res['grid_best_retrained_test_acc']:.4f} "
          f"({res['gap_points']:+.2f} points behind)", flush=True)
    return res


def search_benchmark(zoo_path: Path, out: Path, args) -> dict:
    """Tune weight decay and dropout (label noise 0, all data: the slice of the grid a user tunes;
    more data and fewer wrong labels are always better) through a hypernetwork trained on them,
    then train networks at the λ found, against the grid's best point of that slice."""
    names, fixed = ["weight_decay", "dropout"], {"label_noise": 0.0, "data_fraction": 1.0}
    torch.manual_seed(0)
    data = TaskDataModule(str(zoo_path), conditions=names, batch_size=args.batch_size)
    model = HyperNetwork(data.spec_json, data.source_json, names, fixed=fixed, heads=args.heads, hidden=args.hidden,
                         networks_per_step=args.networks_per_step, lr=args.lr)
    model, _, seconds = fit(model, data, args.steps, args.val_every, out / "search")
    t = time.perf_counter()
    found = gradient_search(model, steps=300, starts=8)
    search_seconds = time.perf_counter() - t
    emitted = model.evaluate_at(torch.tensor([[found["lambda"][n] for n in names]]), "test")["acc"][0]
    direct = train_directly(model, found["lambda"], seeds=args.search_seeds)["test_acc"]
    grid = best_grid_point(zoo_path, names, fixed)
    at_grid = train_directly(model, grid["lambda"], seeds=args.search_seeds)["test_acc"]
    res = {"lambda": found["lambda"], "hypernetwork_fit_s": seconds, "search_s": search_seconds,
           "emitted_test_acc": float(emitted), "direct_test_acc": float(np.mean(direct)),
           "direct_test_acc_median": float(np.median(direct)), "direct_test_acc_std": float(np.std(direct)),
           "grid_best": grid, "grid_best_retrained_test_acc": float(np.mean(at_grid)),
           "grid_best_retrained_median": float(np.median(at_grid)), "seeds": args.search_seeds}
    print(f"search over {names} ({fixed}): λ {found['lambda']} -> {args.search_seeds} networks trained there: test acc "
          f"{res['direct_test_acc']:.4f} (median {res['direct_test_acc_median']:.4f}); best grid point {grid['lambda']}: "
          f"zoo's networks {grid['test_acc']:.4f}, retrained with the same seeds {res['grid_best_retrained_test_acc']:.4f} "
          f"(median {res['grid_best_retrained_median']:.4f})", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoos", nargs="+", default=["digits_mlp_grid"], help="grid zoo configs (shipped names)")
    ap.add_argument("--zoo-dir", default="zoos", help="where the grid zoos are (generated there if missing)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--val-every", type=int, default=70, help="steps between validations (rounded to epochs)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--networks-per-step", type=int, default=32)
    ap.add_argument("--heads", default="chunk")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--distill", nargs="*", default=["weights", "outputs"])
    ap.add_argument("--parts", nargs="+", default=["grid", "distill", "search"], choices=["grid", "distill", "search"])
    ap.add_argument("--search-seeds", type=int, default=10, help="networks trained at each λ the search compares")
    ap.add_argument("--out", default="bench_hyper")
    args = ap.parse_args()
    results = {name: run_zoo(name, args) for name in args.zoos}
    compact = {name: {"summary": r.get("summary"), "mip_speedup_steps": r.get("mip_speedup_steps"),
                      "pearson_by_axis": {k: v["pearson_by_axis"] for k, v in r["runs"].items()},
                      "slope_by_axis": {k: v["slope_by_axis"] for k, v in r["runs"].items()},
                      "direct_ceiling": r["direct_ceiling"]["ceiling"],
                      "distill": {k: {m: r["runs"][k][m] for m in ("emitted_mean", "direct_mean", "mean_diff")}
                                  for k in r["runs"] if k.startswith("distill")},
                      "cost": r.get("cost"), "search": r.get("search"), "search_all": r.get("search_all")}
               for name, r in results.items()}
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(compact))


if __name__ == "__main__":
    main()
