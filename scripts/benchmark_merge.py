"""Benchmark merging independently trained networks: plain against aligned averaging (Git Re-Basin).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_merge.py --pairs 8 --epochs 30

On the demo zoo's task and architecture (sklearn digits, the 64-32-32-10 MLP of
``configs/zoo/digits_mlp.yaml``, relu), ``2 * --pairs`` networks are trained from independent
initialisations with one fixed recipe (SGD, lr 0.05, momentum 0.9, batch 32), into a zoo file in
``--work-dir`` (reused when present). For each pair (runs 2i, 2i+1), on the test examples (a
measurement, nothing is chosen here):

- the endpoints' accuracy, the plain average's (``uniform_soup``) and the aligned average's
  (``aligned_average``: weight matching onto the first, then the mean);
- the linear-mode-connectivity barriers of loss and accuracy along 11 points, raw and after weight
  matching (``wsl.landscape.connectivity``; Entezari et al. 2022's definition).

Output: one line per pair, a markdown table of means and ranges, and one JSON object as the last line.

With ``--tasks``, merging fine-tunes of different tasks instead (task arithmetic and its successors):

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_merge.py --tasks --seeds 3 --plot docs/merging_tasks.png

generates (or reuses, in ``--work-dir``) the pretraining zoo (``--pretrain-config``, default
``configs/zoo/digits_mlp_pretrain.yaml``) and the task zoo fine-tuned from its run 0
(``--tasks-config``, default ``configs/zoo/digits_mlp_tasks.yaml``, its ``init.from`` pointed at the
generated pretraining zoo), whose runs each fine-tune one task variant (``task_variant``). For k
tasks (``--ks``, default 2, 4, 8) and each seed s (``--seeds``): the k tasks are drawn with seed
s (all of them when k is their number) and fine-tune s of each is taken; the k fine-tunes are
merged by task arithmetic, TIES (top 20%), DARE (p 0.5, seed s, then task arithmetic), model
breadcrumbs (β 0.01, γ 0.85), each with its λ chosen on the mean over the k tasks of the
validation accuracy, and by plain averaging. Each merge's accuracy on each task's test examples is
reported against the fine-tune on its own task (normalized accuracy: their ratio, averaged over
the tasks) and against the pretrained network. Then, per task, soups of its fine-tunes (uniform,
and greedy by validation accuracy) against its best single fine-tune by validation accuracy.
Nothing is chosen on test examples. Output: two markdown tables and one JSON object as the last
line; ``--plot`` writes mean normalized accuracy against the number of tasks per method.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsl.data.task import source_task  # noqa: E402
from wsl.landscape.connectivity import linear_mode_connectivity  # noqa: E402
from wsl.merging.soups import aligned_average, greedy_soup, uniform_soup  # noqa: E402
from wsl.merging.task_vectors import best_by_score, dare, model_breadcrumbs, task_arithmetic, ties_merging  # noqa: E402
from wsl.merging.zoo_merge import MEAN_LAMBDAS, SUM_LAMBDAS, mean_score, read_networks, validation_score  # noqa: E402
from wsl.weights import WeightBatch  # noqa: E402
from zoo.config import load_config, parse_config, resolve_config  # noqa: E402
from zoo.errors import InputError  # noqa: E402
from zoo.generate import generate, stored_network  # noqa: E402
from zoo.store import Zoo  # noqa: E402
from zoo.tasks import TaskData, variant_view  # noqa: E402
from zoo.train import evaluate  # noqa: E402


def config(pairs: int, epochs: int, seed: int) -> dict:
    return {"name": "merge_bench", "seed": seed, "num_models": 2 * pairs, "epochs": epochs, "checkpoints": [0, epochs],
            "task": {"name": "digits"}, "architecture": {"name": "mlp", "hidden": [32, 32], "activation": "relu"},
            "hparams": {"lr": 0.05, "momentum": 0.9, "batch_size": 32}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=8, help="pairs of independently trained networks (default 8)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of each network (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="the zoo's seed (default 0)")
    ap.add_argument("--points", type=int, default=11, help="points on each linear path (default 11)")
    ap.add_argument("--work-dir", default="bench_merge", help="where the zoo files go (default bench_merge)")
    t = ap.add_argument_group("merging fine-tunes of different tasks (--tasks)")
    t.add_argument("--tasks", action="store_true", help="benchmark task merging on a task zoo instead of pairs")
    t.add_argument("--pretrain-config", default="digits_mlp_pretrain", help="the pretraining zoo's config "
                   "(default digits_mlp_pretrain)")
    t.add_argument("--tasks-config", default="digits_mlp_tasks", help="the task zoo's config, fine-tuned from "
                   "run init.run of the pretraining zoo (default digits_mlp_tasks)")
    t.add_argument("--ks", default="2,4,8", help="numbers of tasks merged (default 2,4,8)")
    t.add_argument("--seeds", type=int, default=3, help="seeds per number of tasks (default 3)")
    t.add_argument("--plot", help="PNG of mean normalized accuracy against the number of tasks")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return task_benchmark(args) if args.tasks else pair_benchmark(args)


def pair_benchmark(args: argparse.Namespace) -> dict:
    path = Path(args.work_dir) / f"merge_bench_p{args.pairs}_e{args.epochs}_s{args.seed}.h5"
    t0 = time.perf_counter()
    if not path.exists():
        generate(parse_config(config(args.pairs, args.epochs, args.seed)), path, progress=False, log=lambda s: None)
    t_zoo = time.perf_counter() - t0
    with Zoo(path) as z:
        rows = z.select()
        wb = WeightBatch.from_params(z.spec, z.batch(rows, -1))
        task = source_task(z.config)
    x, y = task.x_test, task.y_test

    def acc(w: WeightBatch) -> np.ndarray:
        return evaluate(w.spec, [t.float() for t in w.params()], task, x, y)["acc"].numpy()

    t1 = time.perf_counter()
    pairs = [(i, i + 1) for i in range(0, len(wb) - 1, 2)]
    a = WeightBatch.cat([wb[i] for i, _ in pairs])
    b = WeightBatch.cat([wb[j] for _, j in pairs])
    ends = acc(WeightBatch.cat([a, b])).reshape(2, -1)
    plain = acc(WeightBatch.cat([uniform_soup(WeightBatch.cat([wb[i], wb[j]])) for i, j in pairs]))
    aligned = acc(WeightBatch.cat([aligned_average(WeightBatch.cat([wb[i], wb[j]])) for i, j in pairs]))
    lmc = linear_mode_connectivity(a, b, x, y, task.kind, points=args.points)
    t_merge = time.perf_counter() - t1
    rec = {"endpoint_acc": ends.mean(0), "plain_average_acc": plain, "aligned_average_acc": aligned,
           "raw_loss_barrier": lmc["raw"]["loss_barrier"].numpy(), "matched_loss_barrier": lmc["matched"]["loss_barrier"].numpy(),
           "raw_acc_barrier": lmc["raw"]["acc_barrier"].numpy(), "matched_acc_barrier": lmc["matched"]["acc_barrier"].numpy()}
    for n, (i, j) in enumerate(pairs):
        print(f"pair ({i}, {j}): " + ", ".join(f"{k} {v[n]:.4f}" for k, v in rec.items()))
    print("\n| figure (test examples) | mean | min | max |\n|---|---|---|---|")
    for k, v in rec.items():
        print(f"| {k.replace('_', ' ')} | {v.mean():.4f} | {v.min():.4f} | {v.max():.4f} |")
    print(f"\n{len(pairs)} pairs; zoo {t_zoo:.1f} s, merges and paths {t_merge:.1f} s")
    result = {"pairs": len(pairs), "epochs": args.epochs, "seed": args.seed, "zoo_s": round(t_zoo, 2),
              "merge_s": round(t_merge, 2), **{k: {"mean": float(v.mean()), "min": float(v.min()),
                                                     "max": float(v.max())} for k, v in rec.items()}}
    print(json.dumps(result))
    return result


# ----------------------------------------------------------------------------------------------
# Merging fine-tunes of different tasks

#: The merges of k fine-tunes: name -> (method, what it leaves open to choose on validation data)
TASK_MERGES = ("task arithmetic", "TIES", "DARE", "breadcrumbs", "average")


def task_zoos(args: argparse.Namespace, log) -> tuple[Path, Path]:
    """Generate (or finish, or reuse) the pretraining zoo and the task zoo fine-tuned from it in
    ``--work-dir``; the task zoo's ``init.from`` is pointed at the pretraining zoo made here."""
    work = Path(args.work_dir)
    pre_config = load_config(resolve_config(args.pretrain_config))
    pre_path = work / f"{pre_config.name}.h5"
    generate(pre_config, pre_path, progress=False, log=log)
    raw = load_config(resolve_config(args.tasks_config)).raw
    if "from" not in raw["init"]:
        raise InputError(f"--tasks-config {args.tasks_config}: init.from: expected a fine-tuning zoo (init: {{from: "
                         f"PATH.h5, run: 0}}), found init {raw['init']}")
    raw["init"]["from"] = str(pre_path)
    tasks_config = parse_config(raw, str(resolve_config(args.tasks_config)))
    tasks_path = work / f"{tasks_config.name}.h5"
    generate(tasks_config, tasks_path, progress=False, log=log)
    return pre_path, tasks_path


def accuracy(view: TaskData, wb: WeightBatch, split: str = "test") -> np.ndarray:
    """[B]: each network's accuracy on a task view's ``split`` examples."""
    res = evaluate(wb.spec, [t.float() for t in wb.params()], view, getattr(view, f"x_{split}"),
                   getattr(view, f"y_{split}"), activation=wb.activation)
    return res["acc"].numpy().astype(np.float64)


def merge_tasks(method: str, pre: WeightBatch, ft: WeightBatch, views: list[TaskData], seed: int
                ) -> tuple[WeightBatch, float | None]:
    """The merge of fine-tunes ``ft`` (one per view) by ``method``, its λ chosen by the mean
    validation accuracy over ``views``; and that λ (None for the plain average)."""
    if method == "average":
        return uniform_soup(ft), None
    if method == "task arithmetic":
        grid, cands = SUM_LAMBDAS, task_arithmetic(pre, ft, SUM_LAMBDAS)
    elif method == "TIES":
        grid, cands = MEAN_LAMBDAS, ties_merging(pre, ft, 0.2, MEAN_LAMBDAS)
    elif method == "DARE":
        grid, cands = SUM_LAMBDAS, dare(pre, ft, 0.5, seed, "task-arithmetic", lam=SUM_LAMBDAS)
    else:
        grid, cands = SUM_LAMBDAS, model_breadcrumbs(pre, ft, 0.01, 0.85, SUM_LAMBDAS)
    best, _ = best_by_score(cands, mean_score(views, "val"))
    return cands[best], float(grid[best])


def task_benchmark(args: argparse.Namespace) -> dict:
    log = lambda s: None  # noqa: E731
    t0 = time.perf_counter()
    pre_path, tasks_path = task_zoos(args, log)
    t_zoo = time.perf_counter() - t0
    t1 = time.perf_counter()
    with Zoo(tasks_path) as z:
        if "task_variant" not in z.hparam_names:
            raise InputError(f"{tasks_path}: no task_variant hyperparameter: not a task zoo")
        rows = z.select()
        variants = [str(v) for v in z.hparam("task_variant")[rows]]
        wb = read_networks(z, rows, -1)
        config = parse_config(z.config, f"{tasks_path} (stored config)")
        spec = z.spec
    params, _ = stored_network(config, spec)
    pre = WeightBatch.from_params(spec, {p.name: t[None] for p, t in zip(spec.params, params)})
    pre.activation = None if wb.activation is None else wb.activation[:1]
    task = source_task(config.raw)
    names = list(dict.fromkeys(variants))  # the tasks, in run order
    views = {v: variant_view(task, v) for v in names}
    runs_of = {v: [k for k, w in enumerate(variants) if w == v] for v in names}  # positions in wb, run order
    n_ft = min(len(r) for r in runs_of.values())
    ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    if not ks or ks[0] < 2 or ks[-1] > len(names):
        raise InputError(f"--ks: expected numbers of tasks in [2, {len(names)}] (the zoo has {len(names)} task "
                         f"variants), found {args.ks!r}")
    if not 1 <= args.seeds <= n_ft:
        raise InputError(f"--seeds: expected 1..{n_ft} (fine-tunes per task in {tasks_path}), found {args.seeds}")
    ft_acc = {v: accuracy(views[v], wb[torch.tensor(runs_of[v])]) for v in names}  # [fine-tunes] per task
    pre_acc = {v: float(accuracy(views[v], pre)[0]) for v in names}

    # merges of k tasks: per (k, method), per seed, per task: accuracy and normalized accuracy
    rec: dict[int, dict[str, dict[str, list]]] = {}
    for k in ks:
        rec[k] = {m: {"acc": [], "norm": [], "lambda": []} for m in (*TASK_MERGES, "pretrained", "fine-tuned")}
        for s in range(args.seeds):
            rng = np.random.default_rng([s, k])
            chosen = [names[i] for i in sorted(rng.choice(len(names), k, replace=False))]
            ft = WeightBatch.cat([wb[runs_of[v][s]] for v in chosen])
            own = np.array([ft_acc[v][s] for v in chosen])
            pre_k = np.array([pre_acc[v] for v in chosen])
            rec[k]["fine-tuned"]["acc"].append(own.mean())
            rec[k]["fine-tuned"]["norm"].append(1.0)
            rec[k]["pretrained"]["acc"].append(pre_k.mean())
            rec[k]["pretrained"]["norm"].append((pre_k / own).mean())
            for method in TASK_MERGES:
                merged, lam = merge_tasks(method, pre, ft, [views[v] for v in chosen], s)
                acc = np.array([accuracy(views[v], merged)[0] for v in chosen])
                rec[k][method]["acc"].append(acc.mean())
                rec[k][method]["norm"].append((acc / own).mean())
                rec[k][method]["lambda"].append(lam)

    # soups of the fine-tunes of one task
    soups = {}
    for v in names:
        runs = wb[torch.tensor(runs_of[v])]
        val = accuracy(views[v], runs, "val")
        best = int(np.argmax(val))  # the first of equals
        greedy, ingredients = greedy_soup(runs, validation_score(views[v], "val"))
        soups[v] = {"runs": len(runs_of[v]), "mean_single": float(ft_acc[v].mean()),
                    "best_single_by_val": float(ft_acc[v][best]),
                    "uniform_soup": float(accuracy(views[v], uniform_soup(runs))[0]),
                    "greedy_soup": float(accuracy(views[v], greedy)[0]), "greedy_ingredients": len(ingredients),
                    "pretrained": pre_acc[v]}
    t_merge = time.perf_counter() - t1

    print(f"task zoo {tasks_path}: {len(names)} tasks x {n_ft} fine-tunes from {pre_path} run "
          f"{config.init['run']}; test accuracy on each task's own test examples, mean over the merged tasks, "
          f"then mean ± std over {args.seeds} seeds; normalized: merged / the fine-tune on its own task\n")
    print("| tasks | method | test accuracy | normalized accuracy | λ chosen on validation |\n|---|---|---|---|---|")
    for k in ks:
        for method, r in rec[k].items():
            lams = [x for x in r["lambda"] if x is not None]
            lam = "/".join(f"{x:g}" for x in lams) if lams else "—"
            print(f"| {k} | {method} | {np.mean(r['acc']):.3f} ± {np.std(r['acc']):.3f} | "
                  f"{np.mean(r['norm']):.3f} ± {np.std(r['norm']):.3f} | {lam} |")
    print("\n| task | fine-tunes | pretrained | mean single | best single (by val) | uniform soup | greedy soup "
          "(ingredients) |\n|---|---|---|---|---|---|---|")
    for v, r in soups.items():
        print(f"| {v} | {r['runs']} | {r['pretrained']:.3f} | {r['mean_single']:.3f} | {r['best_single_by_val']:.3f} | "
              f"{r['uniform_soup']:.3f} | {r['greedy_soup']:.3f} ({r['greedy_ingredients']}) |")
    means = {key: float(np.mean([r[key] for r in soups.values()]))
             for key in ("pretrained", "mean_single", "best_single_by_val", "uniform_soup", "greedy_soup")}
    print("| mean | | " + " | ".join(f"{means[key]:.3f}" for key in means) + " |")
    print(f"\nzoos {t_zoo:.1f} s, merges and soups {t_merge:.1f} s")
    if args.plot:
        plot_tasks(rec, ks, args.plot)
        print(f"plot written to {args.plot}")
    result = {"mode": "tasks", "tasks_zoo": str(tasks_path), "tasks": names, "fine_tunes_per_task": n_ft,
              "seeds": args.seeds, "zoo_s": round(t_zoo, 2), "merge_s": round(t_merge, 2),
              "merge": {str(k): {m: {"acc": float(np.mean(r["acc"])), "acc_std": float(np.std(r["acc"])),
                                     "normalized": float(np.mean(r["norm"])), "normalized_std": float(np.std(r["norm"])),
                                     "lambdas": r["lambda"]} for m, r in rec[k].items()} for k in ks},
              "soups": {"per_task": soups, "mean": means}}
    print(json.dumps(result))
    return result


def plot_tasks(rec: dict, ks: list[int], path: str | Path) -> None:
    """Mean normalized accuracy (± std over seeds) against the number of merged tasks, per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in (*TASK_MERGES, "pretrained"):
        mean = [np.mean(rec[k][method]["norm"]) for k in ks]
        std = [np.std(rec[k][method]["norm"]) for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=method,
                    linestyle="--" if method == "pretrained" else "-")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(ks)
    ax.set_xlabel("tasks merged")
    ax.set_ylabel("normalized test accuracy (merged / fine-tuned)")
    ax.set_title("Merging fine-tunes of digits task variants")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(2)
    main()
