"""Benchmark zoo generation and INR fitting on a shared machine: their throughput alone and beside a
fixed competing load, with the adaptive thread sizing of ``zoo.threads`` and without it.

    .venv/bin/python scripts/bench_contention.py         # 1,000 MLPs x 6 epochs, 512 INRs x 200 steps, 2 threads

Nothing else should run on the machine during it: the competing load is the benchmark's own, and
any other process is a second, unmeasured one (the load average is printed before and after).

What it measures (each figure the median of ``--repeats``):

1. Two workloads, each in a fresh subprocess of this script (``--worker gen|inr``), so that
   ``WSL_ADAPT_THREADS`` and ``OMP_NUM_THREADS`` apply from the start and no compile cache or
   thread pool leaks between measurements; ``torch.set_num_threads(--threads)``:

   - ``gen``: ``zoo.train.train_population`` on ``--models`` digits MLPs built as
     scripts/bench_zoo.py builds them (``bench_zoo.bench_config``), ``--epochs`` epochs,
     checkpoints [0, epochs], compiled or not as ``wsl zoo generate`` would decide
     (``zoo.fused.run_worth_compiling`` of ``zoo.train.training_work``). Models/s.
   - ``inr``: ``zoo.inr.fit_population`` on ``--inr-models`` INRs built as scripts/bench_inr_fit.py
     builds them (configs/zoo/mnist_inr_sitzmann.yaml, or digits_inr without the MNIST files),
     ``--inr-steps`` steps, in chunks of ``zoo.generate.INR_CPU_CHUNK``. INRs/s.

   Each worker first makes one untimed warm-up call (which may compile), prints ``WARM`` and waits
   for a line on its stdin; then it times the real call and prints ``RESULT {json}``.
2. The competing load: another subprocess (``--load``) multiplying 1024x1024 matrices with
   ``torch.mm`` on ``--load-threads`` threads (default 2) until it is sent SIGTERM; it is started
   once the worker's warm-up is over and stopped right after the timed call. Its matmuls/s are
   reported alone (``--load-seconds``) and beside each worker, so the table shows how the cores
   were shared, not only the worker's side.
3. Per workload, the conditions ``solo`` (adaptive sizing on, no load), ``loaded`` (adaptive sizing
   on, beside the load) and ``loaded-fixed`` (``WSL_ADAPT_THREADS=0``, beside the load: the
   behaviour before ``zoo.threads``); ``--solo-fixed`` adds ``solo-fixed``. The target: ``loaded``
   keeps at least 40% of ``solo``.

The last line of output is one JSON object with every figure and setting.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_FRACTION = 0.40
UNITS = {"gen": "models/s", "inr": "INRs/s"}


def log(*a):
    print(*a, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------------------
# subprocess side: workers and the load
# --------------------------------------------------------------------------------------------

def record_core_shares():
    """Every ``CoreShare`` the trainers create, kept to report the thread counts they chose."""
    import zoo.inr
    import zoo.train
    from zoo.threads import CoreShare

    shares = []

    class Recorded(CoreShare):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            shares.append(self)

    zoo.train.CoreShare = Recorded
    zoo.inr.CoreShare = Recorded
    return shares


def gen_calls(args):
    """(warm-up call, timed call, number of models, description) of population training."""
    import numpy as np
    sys.path.insert(0, str(HERE))
    from bench_zoo import bench_config
    from zoo.config import model_seed, sample_hparams
    from zoo.fused import run_worth_compiling
    from zoo.generate import build_task_and_spec
    from zoo.train import train_population, training_work

    config = bench_config(args.models, args.epochs)
    task, spec = build_task_and_spec(config)
    hp = sample_hparams(config, np.arange(args.models))
    seeds = [model_seed(config.seed, i) for i in range(args.models)]
    # as zoo.generate decides it: from the whole run's work
    compile_run = run_worth_compiling(training_work(spec, task.x_train.shape[0], hp["data_fraction"], args.epochs))
    sizes = [spec.layers[0].in_features] + [l.out_features for l in spec.layers]

    def warm():
        train_population(spec, task, hp, seeds, epochs=1, checkpoints=[0, 1], compile=compile_run)

    def timed():
        train_population(spec, task, hp, seeds, epochs=args.epochs, checkpoints=[0, args.epochs], compile=compile_run)

    info = {"task": task.name, "config": config.name, "sizes": sizes, "batch_size": int(hp["batch_size"][0]),
            "compiled": compile_run}
    return warm, timed, args.models, info


def inr_calls(args):
    """(warm-up call, timed call, number of INRs, description) of INR fitting."""
    import numpy as np
    sys.path.insert(0, str(HERE))
    from bench_inr_fit import load_bench_task, run_population
    from zoo.config import model_seed, sample_hparams
    from zoo.fused import compile_enabled
    from zoo.generate import INR_CPU_CHUNK
    from zoo.inr import fit_population

    config, signals, spec = load_bench_task("mnist_inr_sitzmann", args.inr_models, args.inr_steps, log)
    hp = sample_hparams(config, np.arange(args.inr_models))
    seeds = [model_seed(config.seed, i) for i in range(args.inr_models)]
    chunk = INR_CPU_CHUNK
    w = min(chunk, args.inr_models)

    def warm():  # as bench_inr_fit's warm-up: the first chunk, 2 steps (compiles large chunks)
        fit_population(spec, signals.coords, signals.values[:w], {k: v[:w] for k, v in hp.items()}, seeds[:w],
                       epochs=2, checkpoints=[0, 2], peak=signals.peak)

    def timed():
        run_population(spec, signals, hp, seeds, args.inr_steps, chunk)

    sizes = [spec.layers[0].in_features] + [l.out_features for l in spec.layers]
    info = {"task": signals.name, "config": config.name, "sizes": sizes, "points": int(signals.coords.shape[0]),
            "chunk": chunk, "compile_enabled": compile_enabled()}
    return warm, timed, args.inr_models, info


def run_worker(args) -> None:
    """One workload: warm up, say WARM, wait for a line on stdin, time the call, say RESULT."""
    import torch
    torch.set_num_threads(args.threads)
    from zoo.threads import adapt_enabled

    shares = record_core_shares()
    warm, timed, n, info = (gen_calls if args.worker == "gen" else inr_calls)(args)
    t0 = time.perf_counter()
    warm()
    warmup_s = time.perf_counter() - t0
    del shares[:]
    print("WARM", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), time.process_time()
    timed()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    decisions = [t for s in shares for _, t in s.history]
    others = [o for s in shares for o, _ in s.history]
    result = {"rate": n / seconds, "seconds": seconds, "cpu_per_wall": cpu / seconds, "warmup_s": warmup_s,
              "threads": torch.get_num_threads(), "adapt_enabled": adapt_enabled(),
              "sizing_enabled": any(s.enabled for s in shares),
              "decisions": {str(k): v for k, v in sorted(Counter(decisions).items())},
              "others_mean": round(statistics.fmean(others), 3) if others else None, **info}
    print("RESULT " + json.dumps(result), flush=True)


def run_load(args) -> None:
    """torch.mm of 1024x1024 matrices until SIGTERM; then RESULT with the matmuls/s since READY."""
    import torch
    torch.set_num_threads(args.load_threads)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(True))
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    out = torch.empty(1024, 1024)
    torch.mm(a, b, out=out)  # warm-up
    print("READY", flush=True)
    n, t0 = 0, time.perf_counter()
    while not stop:
        torch.mm(a, b, out=out)
        n += 1
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"matmuls": n, "seconds": seconds, "rate": n / seconds,
                                  "threads": torch.get_num_threads()}), flush=True)


# --------------------------------------------------------------------------------------------
# parent side: orchestration
# --------------------------------------------------------------------------------------------

def spawn(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], cwd=str(ROOT), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def wait_for(proc: subprocess.Popen, word: str, name: str) -> str:
    """The text after ``word`` on the first stdout line that starts with it; other lines are echoed."""
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"{name} exited with status {proc.returncode} before saying {word}")
        line = line.rstrip("\n")
        if line == word or line.startswith(word + " "):
            return line[len(word):].strip()
        log(f"    [{name}] {line}")


def child_env(threads: int, adapt: bool | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    if adapt is not None:
        env["WSL_ADAPT_THREADS"] = "1" if adapt else "0"
    return env


def start_load(args) -> subprocess.Popen:
    proc = spawn(["--load", "--load-threads", str(args.load_threads)], child_env(args.load_threads))
    wait_for(proc, "READY", "load")
    return proc


def stop_load(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    result = json.loads(wait_for(proc, "RESULT", "load"))
    proc.stdin.close()
    proc.wait()
    return result


def load_alone(args) -> dict:
    proc = start_load(args)
    time.sleep(args.load_seconds)
    return stop_load(proc)


def measure(args, workload: str, condition: str) -> dict:
    """One timed call of ``workload`` under ``condition``; the load's figures beside it if loaded."""
    adapt = not condition.endswith("-fixed")
    loaded = condition.startswith("loaded")
    argv = ["--worker", workload, "--threads", str(args.threads), "--models", str(args.models),
            "--epochs", str(args.epochs), "--inr-models", str(args.inr_models), "--inr-steps", str(args.inr_steps)]
    worker = spawn(argv, child_env(args.threads, adapt))
    load = None
    try:
        wait_for(worker, "WARM", workload)
        load = start_load(args) if loaded else None
        worker.stdin.write("go\n")
        worker.stdin.flush()
        result = json.loads(wait_for(worker, "RESULT", workload))
        if load is not None:
            result["load"] = stop_load(load)
            load = None
        worker.stdin.close()
        worker.wait()
        return result
    finally:
        for p in (load, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", choices=["gen", "inr"], default=["gen", "inr"],
                    help="workloads to measure (default: gen inr)")
    ap.add_argument("--models", type=int, default=1000, help="gen: digits MLPs in the population (default 1000)")
    ap.add_argument("--epochs", type=int, default=6, help="gen: epochs (default 6)")
    ap.add_argument("--inr-models", type=int, default=512, help="inr: INRs fitted (default 512)")
    ap.add_argument("--inr-steps", type=int, default=200, help="inr: full-batch steps per INR (default 200)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the workers (default 2)")
    ap.add_argument("--load-threads", type=int, default=2, help="torch.set_num_threads of the load (default 2)")
    ap.add_argument("--load-seconds", type=float, default=5.0, help="seconds the load runs alone (default 5)")
    ap.add_argument("--repeats", type=int, default=1, help="repeats; medians are reported (default 1)")
    ap.add_argument("--solo-fixed", action="store_true", help="also measure solo with WSL_ADAPT_THREADS=0")
    # subprocess roles
    ap.add_argument("--worker", choices=["gen", "inr"], help=argparse.SUPPRESS)
    ap.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load:
        return run_load(args)
    if args.worker:
        return run_worker(args)
    if min(args.models, args.epochs, args.inr_models, args.inr_steps, args.threads, args.load_threads,
           args.repeats) < 1:
        ap.error("counts must be at least 1")

    conditions = ["solo", "loaded", "loaded-fixed"] + (["solo-fixed"] if args.solo_fixed else [])
    import torch
    log(f"torch {torch.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs; workers "
        f"{args.threads} threads, load {args.load_threads} threads of 1024x1024 torch.mm")
    if "gen" in args.workloads:
        log(f"gen: {args.models} digits MLPs (scripts/bench_zoo.py's population), {args.epochs} epochs")
    if "inr" in args.workloads:
        log(f"inr: {args.inr_models} INRs (scripts/bench_inr_fit.py's population), {args.inr_steps} steps")
    log(f"conditions: {', '.join(conditions)}; {args.repeats} repeat(s)")
    load_before = loadavg()
    log(f"load average before: {load_before} (other processes on the machine skew every figure)")

    alone, runs = [], {w: {c: [] for c in conditions} for w in args.workloads}
    for r in range(args.repeats):
        alone.append(load_alone(args))
        log(f"repeat {r + 1}/{args.repeats}: load alone {alone[-1]['rate']:.1f} matmuls/s")
        for w in args.workloads:
            for c in conditions:
                res = measure(args, w, c)
                runs[w][c].append(res)
                beside = f", load {res['load']['rate']:.1f} matmuls/s" if "load" in res else ""
                log(f"  {w:<3} {c:<12} {res['rate']:9.1f} {UNITS[w]} ({res['seconds']:.2f} s, "
                    f"{res['cpu_per_wall']:.2f} CPU/wall, thread decisions {res['decisions'] or '-'}, "
                    f"warm-up {res['warmup_s']:.1f} s){beside}")
    load_after = loadavg()
    log(f"load average after: {load_after}")

    load_rate = median([a["rate"] for a in alone])
    summary = {"load_alone_matmuls_per_s": round(load_rate, 2), "workloads": {}}
    log("")
    log(f"load alone: {load_rate:.1f} matmuls/s ({args.load_threads} threads)")
    for w in args.workloads:
        solo = median([x["rate"] for x in runs[w]["solo"]])
        out = {"unit": UNITS[w], "target_fraction": TARGET_FRACTION,
               **{k: v for k, v in runs[w]["solo"][0].items() if k in ("task", "config", "sizes", "batch_size",
                                                                       "compiled", "points", "chunk",
                                                                       "compile_enabled")}}
        log(f"{w}: {out.get('task')} ({out.get('config')})")
        for c in conditions:
            rate = median([x["rate"] for x in runs[w][c]])
            fig = {"rate": round(rate, 3), "fraction_of_solo": round(rate / solo, 4),
                   "seconds": round(median([x["seconds"] for x in runs[w][c]]), 3),
                   "cpu_per_wall": round(median([x["cpu_per_wall"] for x in runs[w][c]]), 3),
                   "warmup_s": round(median([x["warmup_s"] for x in runs[w][c]]), 2),
                   "decisions": [x["decisions"] for x in runs[w][c]],
                   "others_mean": median([x["others_mean"] for x in runs[w][c]]),
                   "per_repeat": [round(x["rate"], 3) for x in runs[w][c]]}
            line = f"  {c:<12} {rate:9.1f} {UNITS[w]}"
            if c != "solo":
                line += f"  {rate / solo:6.1%} of solo"
            if c.startswith("loaded"):
                lr = median([x["load"]["rate"] for x in runs[w][c]])
                fig["load_matmuls_per_s"] = round(lr, 2)
                fig["load_fraction_of_alone"] = round(lr / load_rate, 4)
                line += f"   load beside it {lr:6.1f} matmuls/s ({lr / load_rate:.0%} of alone)"
            if c == "loaded":
                ok = rate / solo >= TARGET_FRACTION
                out["target_met"] = ok
                line += f"   target >= {TARGET_FRACTION:.0%} of solo: {'PASS' if ok else 'MISS'}"
            log(line)
            out[c] = fig
        busy = out["solo"]["others_mean"]
        if busy is not None and busy > 0.25:
            log(f"  note: other processes kept {busy:.2f} cores busy during solo (the sizing saw them): "
                f"solo was not alone, every fraction above is skewed")
        if "loaded-fixed" in out and out["loaded-fixed"]["rate"] > 0:
            gain = out["loaded"]["rate"] / out["loaded-fixed"]["rate"]
            out["loaded_over_loaded_fixed"] = round(gain, 3)
            log(f"  adaptive sizing beside the load: {gain:.2f}x the fixed thread count")
        summary["workloads"][w] = out
    summary["loadavg_before_after"] = [load_before, load_after]
    summary["settings"] = {"workloads": args.workloads, "models": args.models, "epochs": args.epochs,
                           "inr_models": args.inr_models, "inr_steps": args.inr_steps, "threads": args.threads,
                           "load_threads": args.load_threads, "load_seconds": args.load_seconds,
                           "repeats": args.repeats, "conditions": conditions, "torch": torch.__version__,
                           "cpu_count": os.cpu_count()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
