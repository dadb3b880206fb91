"""Benchmark zoo generation: the vectorized population trainer against a per-model torch loop,
the trainer's achieved FLOP rate against the machine's batched matmul, and zoo-file read speed.

    .venv/bin/python scripts/bench_zoo.py                # 1,000 models, 3 epochs, 2 threads

What it measures, in one run (each figure the median of ``--repeats``; population, loop and
matmul are measured side by side in every repeat, so CPU noise hits them alike):

1. ``zoo.train.train_population`` on ``--models`` digits MLPs (64-32-32-10, the hyperparameter
   space of configs/zoo/digits_mlp.yaml with activation=relu and optimizer=sgd so that they form
   one population), checkpoints [0, epochs], evaluation on train/val/test included; once with
   its steps compiled where they are large enough (``compile=True``, as a long zoo run) and once
   eagerly (``compile=False``, as a run too short to earn the compilation back: ``zoo.fused``).
2. The same models trained one after another the plain way: ``TorchNet`` + ``torch.optim.SGD``
   (momentum, weight decay from the hyperparameters), the same initialisation, subset, noisy labels
   and data order (``epoch_order``), and the same evaluation at epoch 0 and at the end. Only the
   first ``--loop-models`` models are trained this way: its models/s is a per-model rate, so a
   sample suffices. (Dropout masks come from different random streams, so dropout models are not
   bit-identical to the population's; the work is the same.)
3. The trainer's useful GFLOP/s next to ``torch.bmm`` at the shape of the population's biggest
   layer ([M, batch, 64] x [M, 64, 32]) and a large square matmul for reference.
4. Reads of a zoo file (written with random weights): random batches of 256 models straight from
   disk with ``Zoo.batch`` and from memory after ``Zoo.load()``.

The last line of output is one JSON object with every figure and setting.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
import yaml

from zoo.architectures import TorchNet
from zoo.config import parse_config, model_seed, sample_hparams
from zoo.generate import build_task_and_spec
from zoo.store import Zoo, create_zoo, write_models
from zoo.train import (epoch_order, initial_params, metric_names, noisy_labels, train_population,
                       training_subset)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "zoo" / "digits_mlp.yaml"
TARGETS = {"ratio": 20.0, "ratio_vs_parallel_1thread_loops": 20.0, "fraction_of_bmm": 0.50,
           "fraction_of_bmm_eager": 0.40, "read_models_per_s": 20000.0}


def bench_config(models: int, epochs: int, **over):
    """configs/zoo/digits_mlp.yaml with one activation and one optimizer (one population)."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["hparams"]["activation"] = "relu"
    raw["hparams"]["optimizer"] = "sgd"
    raw.update(num_models=models, epochs=epochs, checkpoints=[0, epochs], **over)
    return parse_config(raw, str(CONFIG))


# --------------------------------------------------------------------------------------------
# 1. population trainer
# --------------------------------------------------------------------------------------------

def run_population(spec, task, hp, seeds, epochs, compile=True):
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_population(spec, task, hp, seeds, epochs=epochs, checkpoints=[0, epochs], compile=compile)
    t = time.perf_counter() - t0
    return t, (time.process_time() - c0) / t, res


# --------------------------------------------------------------------------------------------
# 2. per-model loop: torch.nn + torch.optim, one model after another
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_alone(net, x, y):
    out = net(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def train_one(spec, task, hp, i, seed, epochs, dataloader=False):
    """Model i the plain way (as tests/test_train.py's train_alone), evaluated at epoch 0 and at
    the end on its own (noisy) training subset, val and test, its weights copied out each time.
    ``dataloader=True`` feeds the batches through a torch DataLoader over a TensorDataset (same
    order), the way published zoo code trains; the default indexes tensors directly (leaner)."""
    net = TorchNet(spec, activation=hp["activation"][i], dropout=float(hp["dropout"][i]))
    with torch.no_grad():
        for p, init in zip(net.parameters(), initial_params(spec, seed, hp["init_scale"][i])):
            p.copy_(init)
    opt = torch.optim.SGD(net.parameters(), lr=hp["lr"][i], momentum=hp["momentum"][i],
                          weight_decay=hp["weight_decay"][i])
    subset = training_subset(seed, len(task.x_train), hp["data_fraction"][i])
    y = noisy_labels(seed, task.y_train, subset, hp["label_noise"][i], task.num_classes)
    bs = int(hp["batch_size"][i])
    metrics, weights = [], []

    def checkpoint():
        net.eval()
        weights.append([p.detach().numpy().copy() for p in net.parameters()])
        metrics.append([*evaluate_alone(net, task.x_train[subset], y[subset]),
                        *evaluate_alone(net, task.x_val, task.y_val),
                        *evaluate_alone(net, task.x_test, task.y_test)])
        net.train()

    checkpoint()
    for epoch in range(1, epochs + 1):
        order = epoch_order(seed, subset, epoch)
        if dataloader:
            batches = DataLoader(TensorDataset(task.x_train, y), batch_size=bs, sampler=order.tolist())
        else:
            batches = ((task.x_train[order[s:s + bs]], y[order[s:s + bs]]) for s in range(0, len(order), bs))
        for xb, yb in batches:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    checkpoint()
    return metrics, weights


def run_loop(spec, task, hp, seeds, n, epochs, threads=None, dataloader=False):
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        test_acc = [train_one(spec, task, hp, i, seeds[i], epochs, dataloader)[0][-1][5] for i in range(n)]
        t = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return t, (time.process_time() - c0) / t, test_acc


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------------------
# 3. FLOPs and matmul reference
# --------------------------------------------------------------------------------------------

def flop_counts(spec, task, hp, epochs, n_checkpoints):
    """Useful and executed FLOPs of training + evaluating the population (matmuls only).

    Forward MACs per example = sum of in*out over the linear layers. Training counts
    6 * MACs per example (forward 2*MACs, weight gradients 2*MACs, input gradients 2*MACs; the
    first layer's input gradient is in fact never computed, see ``strict``). Evaluation counts
    2 * MACs per example. Useful work: each model's own subset per epoch, and at each checkpoint
    its subset + val + test. Executed work: a step computes only the models still inside their
    epoch, each on a full batch (the last batch of an epoch is padded); evaluation covers each
    model's own training examples (the padding of its last evaluation block is not counted).
    """
    macs = sum(l.in_features * l.out_features for l in spec.layers)
    first = spec.layers[0].in_features * spec.layers[0].out_features
    n_train, n_val, n_test = len(task.x_train), len(task.x_val), len(task.x_test)
    bs = int(hp["batch_size"][0])
    sizes = np.array([max(1, int(round(f * n_train))) for f in hp["data_fraction"]])
    train_examples = epochs * sizes.sum()
    eval_examples = n_checkpoints * (sizes + n_val + n_test).sum()
    steps = math.ceil(sizes.max() / bs)
    exec_train = epochs * (np.ceil(sizes / bs) * bs).sum()
    exec_eval = n_checkpoints * (sizes + n_val + n_test).sum()
    return {
        "macs_per_example": macs,
        "useful": 6 * macs * train_examples + 2 * macs * eval_examples,
        "useful_strict": (6 * macs - 2 * first) * train_examples + 2 * macs * eval_examples,
        "executed": 6 * macs * exec_train + 2 * macs * exec_eval,
        "steps_per_epoch": steps,
        "mean_steps_per_epoch_needed": float(np.mean(np.ceil(sizes / bs))),
    }


def time_op(fn, min_time=0.5, min_iters=5):
    fn()  # warm-up
    times, t_start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bmm_gflops(M, b, k, n):
    a, w = torch.randn(M, b, k), torch.randn(M, k, n)
    out = torch.empty(M, b, n)
    t = time_op(lambda: torch.bmm(a, w, out=out))
    return 2 * M * b * k * n / t / 1e9


def square_gflops(n=2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    t = time_op(lambda: torch.mm(a, b, out=out), min_iters=3)
    return 2 * n ** 3 / t / 1e9


# --------------------------------------------------------------------------------------------
# 4. zoo-file reads
# --------------------------------------------------------------------------------------------

def write_random_zoo(path: Path, n_models: int, spec, task) -> float:
    """A zoo file of ``n_models`` finished models with random weights, checkpoints [0, 1]."""
    config = bench_config(n_models, 1)
    indices = np.arange(n_models)
    hp = sample_hparams(config, indices)
    seeds = np.array([model_seed(config.seed, int(i)) for i in indices], dtype=np.uint32)
    names = metric_names(task)
    t0 = time.perf_counter()
    create_zoo(path, name=config.name, config_json=config.to_json(), config_hash=config.hash(), spec=spec,
               task_info={"name": task.name, "kind": task.kind}, checkpoint_epochs=[0, 1],
               metric_names=names, indices=indices, seeds=seeds, hparams=hp, chunk_size=n_models)
    rng = np.random.default_rng(0)
    params = {p.name: rng.standard_normal((n_models, 2, *p.shape)).astype(np.float32) * 0.1 for p in spec.params}
    metrics = {m: rng.random((n_models, 2)).astype(np.float32) for m in names}
    write_models(path, indices, params, metrics, np.ones(n_models, np.uint8), np.full(n_models, -1, np.int32))
    return time.perf_counter() - t0


def read_rates(path: Path, batch: int, n_disk: int, n_mem: int, seed: int):
    """Random batches of ``batch`` models at the last checkpoint: (a) chunk by chunk from the file
    (``Zoo(path, cache_mb=0)``); (b) the default reader from a fresh open, one pass over every
    model in random batches, the first batch reading the whole checkpoint into memory; (c) a
    second, warm pass."""
    rng = np.random.default_rng(seed)
    with Zoo(path, cache_mb=0) as z:
        N = len(z)
        rows = [rng.choice(N, min(batch, N), replace=False) for _ in range(n_disk)]
        z.batch(rows[0], -1)  # open datasets once
        t0 = time.perf_counter()
        for r in rows:
            z.batch(r, -1)
        disk = n_disk * batch / (time.perf_counter() - t0)
    passes = []
    with Zoo(path) as z:
        for _ in range(2):
            perm = rng.permutation(N)
            t0 = time.perf_counter()
            for s in range(0, N, batch):
                z.batch(perm[s:s + batch], -1)
            passes.append(N / (time.perf_counter() - t0))
    return disk, passes[0], passes[1]


def profile(fn, top=15) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


# --------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=1000, help="models in the population (default 1000)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs (default 3; a throughput measure)")
    ap.add_argument("--loop-models", type=int, default=20,
                    help="models the per-model loop trains, the first of the population (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    ap.add_argument("--read-models", type=int, default=2000, help="models in the zoo file read back (default 2000)")
    ap.add_argument("--read-batch", type=int, default=256, help="models per read batch (default 256)")
    ap.add_argument("--out-dir", default=None, help="directory for the temporary zoo file (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="also print cProfile top entries of "
                    "train_population and Zoo.batch")
    args = ap.parse_args(argv)
    if not 1 <= args.loop_models <= args.models:
        ap.error("--loop-models must lie in [1, --models]")
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, flush=True)

    config = bench_config(args.models, args.epochs)
    task, spec = build_task_and_spec(config)
    indices = np.arange(args.models)
    hp = sample_hparams(config, indices)
    seeds = [model_seed(config.seed, int(i)) for i in indices]
    loop_hp = {k: v[:args.loop_models] for k, v in hp.items()}  # the loop's models: the first ones
    flops = flop_counts(spec, task, hp, args.epochs, 2)

    log(f"torch {torch.__version__}, {args.threads} threads, {torch.get_num_threads()} in use; "
        f"python {sys.version.split()[0]}")
    log(f"population: {args.models} digits MLPs {[spec.layers[0].in_features] + [l.out_features for l in spec.layers]}, "
        f"{spec.num_params} params each, relu, sgd, batch {hp['batch_size'][0]}, {args.epochs} epochs, "
        f"checkpoints [0, {args.epochs}], train/val/test {len(task.x_train)}/{len(task.x_val)}/{len(task.x_test)}")
    log(f"per-model loop: the first {args.loop_models} of those models (identical hyperparameters and "
        f"seeds); models/s is a per-model rate, so a sample suffices")

    # warm-up (allocator, thread pool, first-call dispatch, and the one-time torch.compile of the
    # optimizer update, which large populations use: zoo.fused)
    t0 = time.perf_counter()
    train_population(spec, task, hp, seeds, epochs=1, checkpoints=[0, 1])
    log(f"warm-up: {time.perf_counter() - t0:.1f} s (the whole population, one epoch)")
    train_population(spec, task, hp, seeds, epochs=1, checkpoints=[0, 1], compile=False)
    run_loop(spec, task, hp, seeds, 2, 1)

    B = int(hp["batch_size"][0])
    big = max(spec.layers, key=lambda l: l.in_features * l.out_features)
    load_before = loadavg()
    log(f"load average before: {load_before} (other processes on the machine skew every figure)")
    pop_t, eager_t, loop_t, loop1_t, loopdl_t, bmm, sq, util = [], [], [], [], [], [], [], []
    pop_acc = loop_acc = None
    for r in range(args.repeats):
        t, u, res = run_population(spec, task, hp, seeds, args.epochs)
        pop_t.append(t)
        util.append(round(u, 2))
        pop_acc = res.metrics["test_acc"][:args.loop_models, -1]
        te, _, _ = run_population(spec, task, hp, seeds, args.epochs, compile=False)
        eager_t.append(te)
        t2, u2, loop_acc = run_loop(spec, task, loop_hp, seeds, args.loop_models, args.epochs)
        loop_t.append(t2)
        t1, u1, _ = run_loop(spec, task, loop_hp, seeds, args.loop_models, args.epochs, threads=1)
        loop1_t.append(t1)
        t3, _, _ = run_loop(spec, task, loop_hp, seeds, args.loop_models, args.epochs, dataloader=True)
        loopdl_t.append(t3)
        bmm.append(bmm_gflops(args.models, B, big.in_features, big.out_features))
        sq.append(square_gflops())
        log(f"  repeat {r + 1}/{args.repeats}: population {t:.2f} s ({args.models / t:.1f} models/s, cpu {u:.2f}), "
            f"eager {te:.2f} s ({args.models / te:.1f} models/s), "
            f"loop {t2:.2f} s for {args.loop_models} ({args.loop_models / t2:.2f} models/s, cpu {u2:.2f}), "
            f"loop 1 thread {t1:.2f} s ({args.loop_models / t1:.2f} models/s), "
            f"DataLoader loop {t3:.2f} s ({args.loop_models / t3:.2f} models/s), "
            f"bmm {bmm[-1]:.1f} GFLOP/s, square mm {sq[-1]:.1f} GFLOP/s")
    log(f"load average after training: {loadavg()}")

    pop_s, loop_s, loop1_s = statistics.median(pop_t), statistics.median(loop_t), statistics.median(loop1_t)
    pop_rate, loop_rate = args.models / pop_s, args.loop_models / loop_s
    ratio = pop_rate / loop_rate
    loopdl_rate = args.loop_models / statistics.median(loopdl_t)
    # A stricter baseline: one single-threaded loop per core, run side by side (ideal scaling).
    loop_par_rate = args.threads * args.loop_models / loop1_s
    ratio_par = pop_rate / loop_par_rate
    # Other processes only ever add time: best-of-repeats figures, for comparison with the medians.
    best = {"population_models_per_s": args.models / min(pop_t), "loop_models_per_s": args.loop_models / min(loop_t),
            "bmm_gflops": max(bmm)}
    best["ratio"] = best["population_models_per_s"] / best["loop_models_per_s"]
    best["population_gflops"] = flops["useful"] / min(pop_t) / 1e9
    best["fraction_of_bmm"] = best["population_gflops"] / best["bmm_gflops"]
    gflops = flops["useful"] / pop_s / 1e9
    bmm_g, sq_g = statistics.median(bmm), statistics.median(sq)
    fraction = gflops / bmm_g
    eager_s = statistics.median(eager_t)
    eager_rate, eager_gflops = args.models / eager_s, flops["useful"] / eager_s / 1e9
    fraction_eager = eager_gflops / bmm_g

    # reads
    tmpdir = None
    if args.out_dir is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="bench_zoo_")
        out_dir = Path(tmpdir.name)
    else:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench_zoo_read.h5"
    if path.exists():
        path.unlink()
    write_s = write_random_zoo(path, args.read_models, spec, task)
    n_disk = max(4, 10 * args.read_models // args.read_batch)
    disk_r, cold_r, mem_r = [], [], []
    for r in range(args.repeats):
        d, c, m = read_rates(path, args.read_batch, n_disk, 2000, seed=r)
        disk_r.append(d), cold_r.append(c), mem_r.append(m)
        log(f"  read repeat {r + 1}/{args.repeats}: chunk by chunk {d:,.0f} models/s, default reader first pass "
            f"{c:,.0f} models/s, warm pass {m:,.0f} models/s")
    disk, cold, mem = statistics.median(disk_r), statistics.median(cold_r), statistics.median(mem_r)
    file_mb = path.stat().st_size / 2 ** 20

    ok = lambda good: "PASS" if good else "MISS"
    log("")
    log(f"population trainer: {pop_rate:,.1f} models/s  ({args.models} models, {args.epochs} epochs, "
        f"median {pop_s:.2f} s of {args.repeats})")
    log(f"per-model loop:     {loop_rate:,.2f} models/s  ({args.loop_models} models sampled, "
        f"median {loop_s:.2f} s); loop would take {args.models / loop_rate:.0f} s for {args.models} models")
    log(f"ratio:              {ratio:.1f}x   target >= {TARGETS['ratio']:.0f}x (aim 30x): "
        f"{ok(ratio >= TARGETS['ratio'])}")
    log(f"  (per-model loop through a torch DataLoader, as published zoo code trains: {loopdl_rate:.2f} models/s; "
        f"ratio {pop_rate / loopdl_rate:.1f}x)")
    log(f"against {args.threads} single-threaded loops side by side (ideal scaling: "
        f"{args.loop_models / loop1_s:.2f} models/s per thread x {args.threads} = {loop_par_rate:.2f} models/s): "
        f"{ratio_par:.1f}x   target >= {TARGETS['ratio_vs_parallel_1thread_loops']:.0f}x: "
        f"{ok(ratio_par >= TARGETS['ratio_vs_parallel_1thread_loops'])}")
    log(f"  (best of {args.repeats} instead of medians: population {best['population_models_per_s']:.1f} models/s, "
        f"loop {best['loop_models_per_s']:.2f} models/s, ratio {best['ratio']:.1f}x, "
        f"{best['population_gflops']:.2f} GFLOP/s = {best['fraction_of_bmm']:.1%} of best bmm {best['bmm_gflops']:.1f})")
    log(f"  (sanity: mean test acc of the {args.loop_models} sampled models: population "
        f"{np.nanmean(pop_acc):.3f}, loop {np.mean(loop_acc):.3f}; dropout masks differ)")
    log(f"FLOPs: {flops['macs_per_example']} MACs/example forward; training 6*MACs/example, eval 2*MACs/example; "
        f"{flops['mean_steps_per_epoch_needed']:.1f} steps/epoch per model on average "
        f"(the largest subset needs {flops['steps_per_epoch']})")
    log(f"population achieved: {gflops:.2f} GFLOP/s useful ({flops['useful'] / 1e9:.1f} GFLOP), "
        f"{flops['executed'] / pop_s / 1e9:.2f} GFLOP/s executed incl. padded last batches "
        f"({flops['executed'] / 1e9:.1f} GFLOP); strict count without the first layer's input grad: "
        f"{flops['useful_strict'] / pop_s / 1e9:.2f} GFLOP/s")
    log(f"batched matmul:     {bmm_g:.1f} GFLOP/s  (torch.bmm [{args.models}, {B}, {big.in_features}] x "
        f"[{args.models}, {big.in_features}, {big.out_features}]); square 2048 mm {sq_g:.1f} GFLOP/s")
    log(f"fraction of bmm:    {fraction:.1%}   target >= {TARGETS['fraction_of_bmm']:.0%}: "
        f"{ok(fraction >= TARGETS['fraction_of_bmm'])}")
    log(f"eager steps (compile=False): {eager_rate:,.1f} models/s, {eager_gflops:.2f} GFLOP/s, {fraction_eager:.1%} of "
        f"bmm   target >= {TARGETS['fraction_of_bmm_eager']:.0%}: {ok(fraction_eager >= TARGETS['fraction_of_bmm_eager'])}")
    log(f"reads ({args.read_models}-model file, {file_mb:.1f} MiB, zoo.store's layout; written in {write_s:.1f} s), "
        f"random batches of {args.read_batch}:")
    log(f"  Zoo.batch, fresh open, one pass over all models (first batch reads the checkpoint): "
        f"{cold:,.0f} models/s   target >= {TARGETS['read_models_per_s']:,.0f}: {ok(cold >= TARGETS['read_models_per_s'])}")
    log(f"  Zoo.batch, second pass (checkpoint in memory): {mem:,.0f} models/s")
    log(f"  Zoo(cache_mb=0).batch, chunk by chunk from the file: {disk:,.0f} models/s")

    if args.profile:
        log("\n== cProfile: train_population ==")
        log(profile(lambda: train_population(spec, task, hp, seeds, epochs=args.epochs,
                                             checkpoints=[0, args.epochs])))
        log("== cProfile: Zoo.batch from disk ==")
        rng = np.random.default_rng(123)
        with Zoo(path) as z:
            log(profile(lambda: [z.batch(rng.choice(len(z), args.read_batch, replace=False), -1)
                                 for _ in range(n_disk)]))
    if tmpdir is not None:
        tmpdir.cleanup()

    summary = {
        "population_models_per_s": round(pop_rate, 2),
        "loop_models_per_s": round(loop_rate, 3),
        "ratio": round(ratio, 2),
        "dataloader_loop_models_per_s": round(loopdl_rate, 3),
        "ratio_vs_dataloader_loop": round(pop_rate / loopdl_rate, 2),
        "loop_1thread_models_per_s": round(args.loop_models / loop1_s, 3),
        "ratio_vs_parallel_1thread_loops": round(ratio_par, 2),
        "population_gflops": round(gflops, 3),
        "population_gflops_executed": round(flops["executed"] / pop_s / 1e9, 3),
        "population_gflops_strict": round(flops["useful_strict"] / pop_s / 1e9, 3),
        "bmm_gflops": round(bmm_g, 2),
        "square_mm_gflops": round(sq_g, 2),
        "fraction_of_bmm": round(fraction, 4),
        "eager_models_per_s": round(eager_rate, 2),
        "eager_gflops": round(eager_gflops, 3),
        "fraction_of_bmm_eager": round(fraction_eager, 4),
        "read_models_per_s_first_pass": round(cold, 1),
        "read_models_per_s_warm": round(mem, 1),
        "read_models_per_s_chunk_by_chunk": round(disk, 1),
        "population_s": round(pop_s, 3),
        "loop_s": round(loop_s, 3),
        "best_of_repeats": {k: round(v, 4) for k, v in best.items()},
        "population_cpu_utilisation": util,
        "loadavg_before_after": [load_before, loadavg()],
        "pass": {"ratio": bool(ratio >= TARGETS["ratio"]),
                 "ratio_vs_parallel_1thread_loops": bool(ratio_par >= TARGETS["ratio_vs_parallel_1thread_loops"]),
                 "fraction_of_bmm": bool(fraction >= TARGETS["fraction_of_bmm"]),
                 "fraction_of_bmm_eager": bool(fraction_eager >= TARGETS["fraction_of_bmm_eager"]),
                 "read": bool(cold >= TARGETS["read_models_per_s"])},
        "settings": {"models": args.models, "epochs": args.epochs, "loop_models": args.loop_models,
                     "threads": args.threads, "repeats": args.repeats, "read_models": args.read_models,
                     "read_batch": args.read_batch, "batch_size": B, "torch": torch.__version__,
                     "cpu_count": os.cpu_count()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
