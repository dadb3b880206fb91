"""Benchmark landscape annotation: the Hessian trace of many networks of the demo weight space, and
the linear mode connectivity of many pairs of them.

    .venv/bin/python scripts/bench_annotate.py                       # 1,000 networks, 10 probes, 2 threads
    .venv/bin/python scripts/bench_annotate.py --networks 200 --loop-networks 20 --pairs 100 --loop-pairs 10

Networks: ``--networks`` MLPs 64-32-32-10 (the weight space of configs/zoo/digits_mlp.yaml), weights
from ``zoo.architectures.population_init`` with init scales log-uniform in [0.3, 3] and relu/tanh
alternating, as the demo zoo's hyperparameters draw them. Loss: mean cross-entropy on a fixed
batch of ``--batch`` digits training examples. Estimator: ``wsl.landscape.sharpness.hessian_trace``
with ``--probes`` Rademacher probes per network.

Timed: the batched call on all networks (one population forward, one double backward per probe),
and beside it in the same run the per-network loop baseline, the same function called on one
network at a time for the first ``--loop-networks`` networks, extrapolated linearly to all. The
loop's results are checked equal to the batched ones. Target: the batched call under 60 s on
2 CPU cores.

LMC (``wsl zoo annotate --lmc``): ``--pairs`` pairs of relu MLPs 64-32-32-10 trained for
``--lmc-epochs`` epochs (SGD, lr 0.05, momentum 0.9: a zoo of 2 x pairs networks made by
``zoo.generate`` in a temporary folder, untimed; 0: untrained networks as above; pair n: networks
n and ``pairs + n``), ``--points`` points per path, on the same examples, raw and
weight matched: ``wsl.landscape.connectivity.linear_mode_connectivity`` on all pairs at once,
beside the same function called one pair at a time for the first ``--loop-pairs`` pairs,
extrapolated, its barriers checked equal. Target: the batched call under 120 s on 2 CPU cores.
The last line of output is one JSON object with the headline figures (``lmc_*`` for LMC).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from wsl.landscape.connectivity import linear_mode_connectivity
from wsl.landscape.sharpness import hessian_trace
from wsl.weights import WeightBatch
from zoo.architectures import mlp, population_init
from zoo.tasks import load_digits_task

TARGET_S = 60.0
LMC_TARGET_S = 120.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--loop-networks", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--loop-pairs", type=int, default=50)
    ap.add_argument("--lmc-epochs", type=int, default=2)
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
    lmc = bench_lmc(spec, x, y, args)
    print(json.dumps({"bench": "annotate_hessian_trace", "networks": args.networks, "probes": args.probes,
                      "batch": args.batch, "threads": args.threads, "batched_s": round(batched_s, 3),
                      "loop_s": round(loop_s, 3), "loop_networks": k, "speedup": round(loop_s / batched_s, 2),
                      "target_s": TARGET_S, "max_rel_diff": max_rel, **lmc}))


def bench_lmc(spec, x, y, args) -> dict:
    """Time LMC (raw and weight matched) of ``--pairs`` pairs batched against a per-pair loop; print and return the figures."""
    n = args.pairs
    if args.lmc_epochs > 0:
        wb, train_s = _trained(2 * n, args.lmc_epochs)
        print(f"lmc: trained {2 * n} relu networks for {args.lmc_epochs} epochs in {train_s:.1f} s (not timed below)")
    else:
        g = torch.Generator().manual_seed(1)
        scales = (math.log(0.3) + torch.rand(2 * n, generator=g) * math.log(10.0)).exp().tolist()
        wb = WeightBatch.from_params(spec, population_init(spec, list(range(2 * n)), scales))
        wb.activation = ["relu" if i % 2 == 0 else "tanh" for i in range(2 * n)]  # pair n: networks n, n + pairs
    a, b = wb[list(range(n))], wb[list(range(n, 2 * n))]
    t0 = time.perf_counter()
    batched = linear_mode_connectivity(a, b, x, y, "classification", points=args.points)
    batched_s = time.perf_counter() - t0
    k = min(args.loop_pairs, n)
    t0 = time.perf_counter()
    loop = [linear_mode_connectivity(a[[i]], b[[i]], x, y, "classification", points=args.points) for i in range(k)]
    loop_s = (time.perf_counter() - t0) * n / k
    diff = max((torch.cat([r[side][m] for r in loop]) - batched[side][m][:k]).abs().max().item()
               for side in ("raw", "matched") for m in ("loss_barrier", "acc_barrier"))
    raw, matched = batched["raw"]["loss_barrier"], batched["matched"]["loss_barrier"]
    print(f"lmc: {n} pairs x {args.points} points, raw and weight matched, batched: {batched_s:.2f} s "
          f"({n / batched_s:.0f} pairs/s), target < {LMC_TARGET_S:.0f} s: {'met' if batched_s < LMC_TARGET_S else 'missed'}")
    print(f"lmc per-pair loop: {loop_s:.2f} s (extrapolated from {k} pairs)  ratio loop/batched: {loop_s / batched_s:.1f}x; "
          f"loss barrier median raw {raw.median().item():.3g}, matched {matched.median().item():.3g}; "
          f"loop vs batched max abs difference {diff:.1e}")
    return {"lmc_pairs": n, "lmc_points": args.points, "lmc_batched_s": round(batched_s, 3), "lmc_loop_s": round(loop_s, 3),
            "lmc_loop_pairs": k, "lmc_speedup": round(loop_s / batched_s, 2), "lmc_target_s": LMC_TARGET_S,
            "lmc_max_abs_diff": diff}


def _trained(networks: int, epochs: int) -> tuple[WeightBatch, float]:
    """``networks`` relu MLPs 64-32-32-10 trained on digits by ``zoo.generate``, and the seconds it took."""
    import tempfile

    from zoo.config import parse_config
    from zoo.generate import generate
    from zoo.store import Zoo

    cfg = parse_config({"name": "bench_lmc", "seed": 0, "num_models": networks, "epochs": epochs,
                        "checkpoints": [epochs], "task": {"name": "digits"},
                        "architecture": {"name": "mlp", "hidden": [32, 32]}, "training": {"chunk_size": 1000},
                        "hparams": {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "activation": "relu"}})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = generate(cfg, f"{tmp}/zoo.h5", progress=False, log=lambda s: None)
        train_s = time.perf_counter() - t0
        with Zoo(path) as z:
            wb = WeightBatch.from_params(z.spec, z.batch(list(range(networks)), -1))
            if z.spec.activation is None:
                wb.activation = [str(a) for a in z.hparam("activation")]
    return wb, train_s


if __name__ == "__main__":
    main()
