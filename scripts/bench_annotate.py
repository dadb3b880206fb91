"""Benchmark sharpness annotation: the Hessian trace of many networks of the demo weight space.

    .venv/bin/python scripts/bench_annotate.py                       # 1,000 networks, 10 probes, 2 threads
    .venv/bin/python scripts/bench_annotate.py --networks 200 --loop-networks 20

Networks: ``--networks`` MLPs 64-32-32-10 (the weight space of configs/zoo/digits_mlp.yaml), weights
from ``zoo.architectures.population_init`` with init scales log-uniform in [0.3, 3] and relu/tanh
alternating, as the demo zoo's hyperparameters draw them. Loss: mean cross-entropy on a fixed
batch of ``--batch`` digits training examples. Estimator: ``wsl.landscape.sharpness.hessian_trace``
with ``--probes`` Rademacher probes per network.

Timed: the batched call on all networks (one population forward, one double backward per probe),
and beside it in the same run the per-network loop baseline, the same function called on one
network at a time for the first ``--loop-networks`` networks, extrapolated linearly to all. The
loop's results are checked equal to the batched ones. Target: the batched call under 60 s on
2 CPU cores. The last line of output is one JSON object with the headline figures.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from wsl.landscape.sharpness import hessian_trace
from zoo.architectures import mlp, population_init
from zoo.tasks import load_digits_task

TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--loop-networks", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task = load_digits_task()
    x, y = task.x_train[:args.batch], task.y_train[:args.batch]
    spec = mlp(tuple(task.input_shape), task.output_dim, hidden=[32, 32], activation=None)
    g = torch.Generator().manual_seed(0)
    scales = (math.log(0.3) + torch.rand(args.networks, generator=g) * math.log(10.0)).exp().tolist()
    params = population_init(spec, list(range(args.networks)), scales)
    act = ["relu" if i % 2 == 0 else "tanh" for i in range(args.networks)]

    hessian_trace(spec, [p[:8] for p in params], task, x, y, probes=1, activation=act[:8])  # warm-up
    t0 = time.perf_counter()
    batched = hessian_trace(spec, params, task, x, y, probes=args.probes, activation=act)
    batched_s = time.perf_counter() - t0

    k = min(args.loop_networks, args.networks)
    t0 = time.perf_counter()
    loop = torch.cat([hessian_trace(spec, [p[i:i + 1] for p in params], task, x, y, probes=args.probes,
                                    activation=act[i]) for i in range(k)])
    loop_s = (time.perf_counter() - t0) * args.networks / k
    max_rel = ((loop - batched[:k]).abs() / batched[:k].abs().clamp_min(1e-6)).max().item()

    print(f"networks {args.networks} (MLP 64-32-32-10, {spec.num_params} parameters each), probes {args.probes}, "
          f"batch {args.batch}, threads {args.threads}, {platform.processor() or platform.machine()}")
    print(f"batched: {batched_s:.2f} s ({args.networks / batched_s:.0f} networks/s), target < {TARGET_S:.0f} s: "
          f"{'met' if batched_s < TARGET_S else 'missed'}")
    print(f"per-network loop: {loop_s:.2f} s (extrapolated from {k} networks)  ratio loop/batched: "
          f"{loop_s / batched_s:.1f}x")
    print(f"trace: median {batched.median().item():.3g}, range [{batched.min().item():.3g}, "
          f"{batched.max().item():.3g}]; loop vs batched max relative difference {max_rel:.1e}")
    print(json.dumps({"bench": "annotate_hessian_trace", "networks": args.networks, "probes": args.probes,
                      "batch": args.batch, "threads": args.threads, "batched_s": round(batched_s, 3),
                      "loop_s": round(loop_s, 3), "loop_networks": k, "speedup": round(loop_s / batched_s, 2),
                      "target_s": TARGET_S, "max_rel_diff": max_rel}))


if __name__ == "__main__":
    main()
