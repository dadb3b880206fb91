"""Benchmark INR fitting: the vectorized population fitter against fitting one INR at a time.

    .venv/bin/python scripts/bench_inr_fit.py            # 512 MNIST images, 100 steps, 2 threads

What it measures, in one run (each figure the median of ``--repeats``; population, loop and
matmul are measured side by side in every repeat, so CPU noise hits them alike):

1. ``zoo.inr.fit_population`` on ``--models`` MNIST-INR images with the SIREN and hyperparameters
   of configs/zoo/mnist_inr_sitzmann.yaml (2-32-32-1, omega_0 30, Adam lr 0.002, beta1 0.9), full-batch
   steps on all 784 pixels, checkpoints [0, steps] as a zoo run keeps them. Without the MNIST IDX
   files it falls back to configs/zoo/digits_inr.yaml (8x8 digits) and says so; ``--config``
   picks another shipped INR config (digits_inr: 64 points per signal, where the per-INR loop is
   bound by per-step overhead rather than by arithmetic). Large chunks run the fitting step and the
   update compiled by ``zoo.fused`` (compiled once in the warm-up, whose time is printed);
   ``WSL_COMPILE=0`` measures the eager fallback.
2. The first ``--loop-models`` of those INRs fitted one after another the plain way:
   ``TorchNet(spec)`` + ``torch.optim.Adam``, the same initialisation (``initial_params``), steps
   and learning rate. Its INRs/s is a per-INR rate, so a sample suffices.
3. The fitter's achieved GFLOP/s, counting matmul FLOPs only: forward 2·P·Σ(in·out) per INR and
   step, backward twice that, plus the final evaluation's forward. Next to it, ``torch.bmm`` at
   the fitter's hidden-layer shape ([models, P, 32] x [models, 32, 32]), best of several repeats.
4. Mean and min PSNR of the sampled INRs from both (they should agree), and the largest weight
   difference between them.

The last line of output is one JSON object with every figure and setting.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoo import loadavg, time_op  # noqa: E402

from zoo.architectures import TorchNet  # noqa: E402
from zoo.config import model_seed, parse_config, sample_hparams  # noqa: E402
from zoo.fused import compile_enabled  # noqa: E402
from zoo.generate import INR_CPU_CHUNK, build_task_and_spec  # noqa: E402
from zoo.inr import fit_population, psnr  # noqa: E402
from zoo.train import PopulationResult, initial_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "zoo"


def bench_config(name: str, models: int, steps: int):
    """A shipped INR config cut to ``models`` signals (all in the train split) and ``steps`` steps."""
    path = CONFIGS / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["task"].update(n_train=models, n_val=0, n_test=0, inrs_per_signal=1)
    raw.update(num_models=models, epochs=steps, checkpoints=[0, steps])
    return parse_config(raw, str(path))


def load_bench_task(name: str, models: int, steps: int, log):
    """The config's signals, or digits-INR with a message when MNIST-style IDX files are missing."""
    try:
        config = bench_config(name, models, steps)
        signals, spec = build_task_and_spec(config)
    except FileNotFoundError as e:
        log(f"IDX files not found ({str(e).splitlines()[0][:160]}); falling back to digits_inr")
        config = bench_config("digits_inr", models, steps)
        signals, spec = build_task_and_spec(config)
    return config, signals, spec


def run_population(spec, signals, hp, seeds, steps, chunk):
    """All INRs, ``chunk`` at a time as ``wsl zoo generate`` fits them; the chunks' results joined."""
    t0 = time.perf_counter()
    parts = [fit_population(spec, signals.coords, signals.values[s:s + chunk], {k: v[s:s + chunk] for k, v in hp.items()},
                            seeds[s:s + chunk], epochs=steps, checkpoints=[0, steps], peak=signals.peak)
             for s in range(0, len(seeds), chunk)]
    res = PopulationResult([np.concatenate(a) for a in zip(*[p.params for p in parts])],
                           {k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
                           np.concatenate([p.status for p in parts]), np.concatenate([p.diverged_epoch for p in parts]))
    return time.perf_counter() - t0, res


def fit_one(spec, coords, target, hp, i, seed, steps):
    """INR i fitted alone: a torch.nn module, torch.optim.Adam, full-batch steps on its MSE."""
    net = TorchNet(spec)
    with torch.no_grad():
        for p, init in zip(net.parameters(), initial_params(spec, seed, hp["init_scale"][i])):
            p.copy_(init)
    opt = torch.optim.Adam(net.parameters(), lr=hp["lr"][i], betas=(hp["momentum"][i], 0.999),
                           weight_decay=hp["weight_decay"][i])
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(net(coords), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(net(coords), target)
    return mse, [p.detach().clone() for p in net.parameters()]


def run_loop(spec, signals, hp, seeds, n, steps):
    t0 = time.perf_counter()
    fits = [fit_one(spec, signals.coords, signals.values[i], hp, i, seeds[i], steps) for i in range(n)]
    return time.perf_counter() - t0, torch.stack([f[0] for f in fits]), [f[1] for f in fits]


def flops_per_inr(spec, points: int, steps: int) -> int:
    """Matmul FLOPs of fitting one INR: per step forward 2·P·Σ(in·out) and backward twice that,
    plus the forward that evaluates the final weights."""
    macs = sum(l.in_features * l.out_features for l in spec.layers)
    return 2 * points * macs * (3 * steps + 1)


def bmm_best_gflops(batch: int, points: int, width: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of torch.bmm [batch, points, width] x [batch, width, width]."""
    a, w = torch.randn(batch, points, width), torch.randn(batch, width, width)
    out = torch.empty(batch, points, width)
    t = min(time_op(lambda: torch.bmm(a, w, out=out), min_time=0.2) for _ in range(repeats))
    return 2 * batch * points * width * width / t / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    # configs of the standard initialisation, which the per-INR loop (initial_params) reproduces
    ap.add_argument("--config", default="mnist_inr_sitzmann",
                    choices=["mnist_inr_sitzmann", "fashion_inr_sitzmann", "digits_inr", "sine_inr"],
                    help="shipped INR config whose signals, SIREN and hyperparameters are used (default mnist_inr_sitzmann)")
    ap.add_argument("--models", type=int, default=512, help="INRs in the population (default 512)")
    ap.add_argument("--steps", type=int, default=100, help="full-batch Adam steps per INR (default 100)")
    ap.add_argument("--loop-models", type=int, default=32,
                    help="INRs the per-INR loop fits, the first of the population (default 32)")
    ap.add_argument("--chunk", type=int, default=INR_CPU_CHUNK,
                    help=f"INRs fitted at once, as wsl zoo generate does on a CPU (default {INR_CPU_CHUNK})")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    args = ap.parse_args(argv)
    if not 1 <= args.loop_models <= args.models:
        ap.error("--loop-models must lie in [1, --models]")
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, flush=True)

    config, signals, spec = load_bench_task(args.config, args.models, args.steps, log)
    hp = sample_hparams(config, np.arange(args.models))
    seeds = [model_seed(config.seed, i) for i in range(args.models)]
    P = signals.coords.shape[0]
    width = spec.layers[1].in_features
    sizes = [spec.layers[0].in_features] + [l.out_features for l in spec.layers]
    flops = flops_per_inr(spec, P, args.steps)

    log(f"torch {torch.__version__}, {args.threads} threads, {torch.get_num_threads()} in use; "
        f"python {sys.version.split()[0]}")
    log(f"population: {args.models} {signals.name} INRs in chunks of {args.chunk}, SIREN {sizes} omega_0 {spec.options['omega_0']}, "
        f"{spec.num_params} params, {P} points, {args.steps} steps of {hp['optimizer'][0]} lr {hp['lr'][0]} "
        f"beta1 {hp['momentum'][0]}")
    log(f"per-INR loop: the first {args.loop_models} of those INRs, TorchNet + torch.optim.Adam")

    # warm-up (allocator, thread pool, first-call dispatch, and the one-time torch.compile of the
    # fitting step and update, which a zoo run pays once per process too)
    w = min(args.chunk, args.models)
    t0 = time.perf_counter()
    fit_population(spec, signals.coords, signals.values[:w], {k: v[:w] for k, v in hp.items()}, seeds[:w],
                   epochs=2, checkpoints=[0, 2], peak=signals.peak)
    warmup_s = time.perf_counter() - t0
    log(f"warm-up: {warmup_s:.1f} s (fused steps {'compiled' if compile_enabled() else 'off: WSL_COMPILE=0'})")
    run_loop(spec, signals, hp, seeds, 1, 2)

    load_before = loadavg()
    log(f"load average before: {load_before} (other processes on the machine skew every figure)")
    pop_t, loop_t, bmm = [], [], []
    res = loop_mse = loop_params = None
    for r in range(args.repeats):
        t, res = run_population(spec, signals, hp, seeds, args.steps, args.chunk)
        pop_t.append(t)
        t2, loop_mse, loop_params = run_loop(spec, signals, hp, seeds, args.loop_models, args.steps)
        loop_t.append(t2)
        bmm.append(bmm_best_gflops(args.models, P, width))
        log(f"  repeat {r + 1}/{args.repeats}: population {t:.2f} s ({args.models / t:.1f} INRs/s), "
            f"loop {t2:.2f} s for {args.loop_models} ({args.loop_models / t2:.2f} INRs/s), "
            f"bmm {bmm[-1]:.1f} GFLOP/s")
    log(f"load average after: {loadavg()}")

    pop_s, loop_s = statistics.median(pop_t), statistics.median(loop_t)
    pop_rate, loop_rate = args.models / pop_s, args.loop_models / loop_s
    gflops = flops * args.models / pop_s / 1e9
    bmm_g = statistics.median(bmm)
    # ratios within each repeat (its three measurements ran back to back, under the same load)
    ratios = [(args.models / p) / (args.loop_models / l) for p, l in zip(pop_t, loop_t)]
    fractions = [flops * args.models / p / 1e9 / b for p, b in zip(pop_t, bmm)]
    n = args.loop_models
    pop_db = res.metrics["psnr"][:, -1]
    loop_db = psnr(loop_mse, signals.peak).numpy()
    max_diff = max(float(np.abs(res.params[k][i, -1] - loop_params[i][k].numpy()).max())
                   for i in range(n) for k in range(len(res.params)))

    log("")
    log(f"population fitter: {pop_rate:,.1f} INRs/s  ({args.models} INRs, median {pop_s:.2f} s of {args.repeats})")
    log(f"per-INR loop:      {loop_rate:,.2f} INRs/s  ({n} INRs sampled, median {loop_s:.2f} s); the loop would "
        f"take {args.models / loop_rate:.0f} s for {args.models} INRs")
    log(f"ratio:             {pop_rate / loop_rate:.1f}x of the medians; per repeat "
        f"{', '.join(f'{r:.1f}x' for r in ratios)} (median {statistics.median(ratios):.1f}x)")
    log(f"FLOPs: {flops / 1e6:.1f} MFLOP per INR ({args.steps} steps x 6·P·Σ(in·out) + a final forward, "
        f"P = {P})")
    log(f"population achieved: {gflops:.2f} GFLOP/s; torch.bmm [{args.models}, {P}, {width}] x "
        f"[{args.models}, {width}, {width}]: {bmm_g:.1f} GFLOP/s (median of best-of-5); {gflops / bmm_g:.1%} of it; "
        f"per repeat {', '.join(f'{f:.1%}' for f in fractions)} (median {statistics.median(fractions):.1%})")
    log(f"PSNR of the {n} sampled INRs: population mean {pop_db[:n].mean():.2f} dB, min {pop_db[:n].min():.2f} dB; "
        f"loop mean {loop_db.mean():.2f} dB, min {loop_db.min():.2f} dB; largest weight difference {max_diff:.2e}")
    log(f"PSNR of all {args.models} population INRs: mean {np.nanmean(pop_db):.2f} dB, min {np.nanmin(pop_db):.2f} dB")

    summary = {
        "task": signals.name,
        "config": config.name,
        "population_inrs_per_s": round(pop_rate, 2),
        "loop_inrs_per_s": round(loop_rate, 3),
        "ratio": round(pop_rate / loop_rate, 2),
        "population_gflops": round(gflops, 3),
        "bmm_gflops": round(bmm_g, 2),
        "fraction_of_bmm": round(gflops / bmm_g, 4),
        "ratio_per_repeat_median": round(statistics.median(ratios), 2),
        "fraction_of_bmm_per_repeat_median": round(statistics.median(fractions), 4),
        "population_psnr_mean": round(float(np.nanmean(pop_db)), 3),
        "population_psnr_min": round(float(np.nanmin(pop_db)), 3),
        "sampled_population_psnr_mean": round(float(pop_db[:n].mean()), 3),
        "sampled_population_psnr_min": round(float(pop_db[:n].min()), 3),
        "loop_psnr_mean": round(float(loop_db.mean()), 3),
        "loop_psnr_min": round(float(loop_db.min()), 3),
        "max_weight_difference": max_diff,
        "population_s": round(pop_s, 3),
        "loop_s": round(loop_s, 3),
        "warmup_s": round(warmup_s, 2),
        "loadavg_before_after": [load_before, loadavg()],
        "settings": {"models": args.models, "chunk": args.chunk, "steps": args.steps, "loop_models": n, "points": P,
                     "threads": args.threads, "repeats": args.repeats,
                     "fused_kernels_compiled": compile_enabled(), "torch": torch.__version__,
                     "cpu_count": os.cpu_count()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
