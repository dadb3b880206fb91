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
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsl.data.task import source_task  # noqa: E402
from wsl.landscape.connectivity import linear_mode_connectivity  # noqa: E402
from wsl.merging.soups import aligned_average, uniform_soup  # noqa: E402
from wsl.weights import WeightBatch  # noqa: E402
from zoo.config import parse_config  # noqa: E402
from zoo.generate import generate  # noqa: E402
from zoo.store import Zoo  # noqa: E402
from zoo.train import evaluate  # noqa: E402


def config(pairs: int, epochs: int, seed: int) -> dict:
    return {"name": "merge_bench", "seed": seed, "num_models": 2 * pairs, "epochs": epochs, "checkpoints": [0, epochs],
            "task": {"name": "digits"}, "architecture": {"name": "mlp", "hidden": [32, 32], "activation": "relu"},
            "hparams": {"lr": 0.05, "momentum": 0.9, "batch_size": 32}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=8, help="pairs of independently trained networks (default 8)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of each network (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="the zoo's seed (default 0)")
    ap.add_argument("--points", type=int, default=11, help="points on each linear path (default 11)")
    ap.add_argument("--work-dir", default="bench_merge", help="where the zoo file goes (default bench_merge)")
    args = ap.parse_args()
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
    print(json.dumps({"pairs": len(pairs), "epochs": args.epochs, "seed": args.seed, "zoo_s": round(t_zoo, 2),
                      "merge_s": round(t_merge, 2), **{k: {"mean": float(v.mean()), "min": float(v.min()),
                                                             "max": float(v.max())} for k, v in rec.items()}}))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
