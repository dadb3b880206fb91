"""Scale-out, side by side in one run: zoo generation with 1 and 2 processes, weight-space training
with 1 and 2 DDP processes, and training read from memory against streamed through a small cache.

1. **Zoo generation** (``wsl zoo generate``): one process with every core's threads against
   ``--devices 2`` (Lightning Fabric, one thread per process), same config; the wall time of the
   command (start-up included), models/s, and whether the two files are equal model for model.
2. **Training** (``wsl fit``, a property predictor): one process against two DDP processes (gloo).
   networks/s = the extra networks of a (1 + E)-epoch fit over a 1-epoch fit, divided by the extra
   seconds, so start-up, reading and the process group's set-up cancel out.
3. **Reading**: the same fit from weights held in memory against weights streamed from the zoo file
   through a cache ``--cache-fraction`` of their size (``cache_mb``), in the main process and with
   one loader worker, each in a fresh process: networks/s of the training epochs after the first,
   and peak memory, the proportional set size (PSS: shared pages counted once) of the process and
   its loader workers, sampled every 0.2 s from /proc.

Each part runs its variants in turn, ``--repeats`` rounds, and keeps each variant's best round:
this machine's speed drifts by 10-40% between minutes, which a single pair of runs mistakes for
a difference between the variants.

On a 2-core machine two processes cannot beat one process with two threads: these figures show
correctness and overhead; on a cluster the same commands spread over machines (README). The last
line printed is one JSON object.

    .venv/bin/python scripts/bench_scale.py [--work-dir bench_scale] [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Generation: digits MLPs (the demo zoo's task and architecture), fewer models and epochs.
GEN_CONFIG = {
    "name": "scale_gen", "seed": 0, "num_models": 2048, "epochs": 20, "checkpoints": [0, 5, 20],
    "task": {"name": "digits"}, "architecture": {"name": "mlp", "hidden": [32, 32]},
    "hparams": {"lr": {"log_uniform": [0.001, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]},
                "momentum": 0.9, "init_scale": {"uniform": [0.5, 2.0]}, "batch_size": 32},
}
# Reading and training: MNIST-1D MLPs (40-32-32-10) with many checkpoints, a zoo made large for the
# purpose: 4,000 runs x 5 trained checkpoints, 10.8 KB each.
READ_CONFIG = {
    "name": "scale_read", "seed": 0, "num_models": 4000, "epochs": 5, "checkpoints": [0, 1, 2, 3, 4, 5],
    "task": {"name": "mnist1d", "num_samples": 4000, "n_val": 500},
    "architecture": {"name": "mlp", "hidden": [32, 32]},
    "hparams": {"lr": {"log_uniform": [0.0003, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]},
                "momentum": {"choice": [0.0, 0.9]}, "init_scale": {"log_uniform": [0.3, 3.0]},
                "data_fraction": {"uniform": [0.1, 1.0]}, "batch_size": 64},
}
DATA = {"target": "test_acc", "checkpoints": "all", "split": [0.7, 0.1, 0.2], "split_seed": 0, "batch_size": 64}
MODEL = {"encoder": "deepsets", "encoder_kwargs": {"hidden": 64}, "lr": 0.001}
CORES = os.cpu_count() or 1


def run(cmd: list[str], threads: int, cwd: Path) -> float:
    """Run a command with ``threads`` intra-op threads per process; its wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def wsl(*args: str) -> list[str]:
    return [sys.executable, "-m", "wsl.cli", *args]


def compare_zoos(a: Path, b: Path) -> dict:
    """Model for model: hyperparameters, seeds and status equal? The largest difference of any
    weight and of any metric (the metrics are evaluated in batches of a chunk's networks, so
    chunks of another size may round a loss differently)."""
    from zoo.store import Zoo

    with Zoo(a) as x, Zoo(b) as y:
        rows = np.arange(len(x))
        same = (len(x) == len(y) and np.array_equal(x.status, y.status) and np.array_equal(x.seed, y.seed)
                and all(np.array_equal(x.hparam(h), y.hparam(h)) for h in x.hparam_names))
        px, py = x.read_params(rows), y.read_params(rows)
        mx, my = x.read_metrics(rows), y.read_metrics(rows)
        return {"same_models": bool(same),
                "max_weight_diff": max(float(np.nanmax(np.abs(px[k] - py[k]))) for k in px),
                "max_metric_diff": max(float(np.nanmax(np.abs(mx[k] - my[k]))) for k in mx)}


def best_of(rounds: list[dict], key: str) -> dict:
    """The round with the highest ``key``, with every round's value beside it."""
    best = dict(max(rounds, key=lambda r: r[key]))
    best[f"{key}_rounds"] = [r[key] for r in rounds]
    return best


def bench_generation(work: Path, config: dict, repeats: int) -> dict:
    cfg = work / "scale_gen.yaml"
    cfg.write_text(yaml.safe_dump(config))
    rounds: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(repeats):
        for procs in (1, 2):
            path = work / f"gen_{procs}.h5"
            path.unlink(missing_ok=True)
            args = ["zoo", "generate", str(cfg), "--out", str(path), "--quiet", "--accelerator", "cpu"]
            if procs > 1:
                args += ["--devices", str(procs)]
            seconds = run(wsl(*args), max(1, CORES // procs), work)
            rounds[procs].append({"seconds": seconds, "models_per_s": config["num_models"] / seconds})
            print(f"generation, {procs} process(es): {config['num_models']} models in {seconds:.1f} s "
                  f"({config['num_models'] / seconds:.1f} models/s, start-up included)", flush=True)
    out = {procs: best_of(r, "models_per_s") for procs, r in rounds.items()}
    diff = compare_zoos(work / "gen_1.h5", work / "gen_2.h5")
    print(f"  2 processes against 1: same models, seeds, hyperparameters and status: {diff['same_models']}; "
          f"largest weight difference {diff['max_weight_diff']:.3g}, largest metric difference "
          f"{diff['max_metric_diff']:.3g}", flush=True)
    return {"processes_1": out[1], "processes_2": out[2], "ratio_2_over_1": out[2]["models_per_s"] / out[1]["models_per_s"],
            **diff}


def read_zoo(work: Path, config: dict) -> Path:
    """The reading benchmark's zoo, generated once into the work folder."""
    cfg = work / "scale_read.yaml"
    cfg.write_text(yaml.safe_dump(config))
    path = work / f"{config['name']}.h5"
    from zoo.config import load_config
    from zoo.store import Zoo

    if path.exists():
        with Zoo(path) as z:
            if z.config_hash == load_config(cfg).hash() and z.done.any() and (z.status != 0).all():
                return path
        path.unlink()
    seconds = run(wsl("zoo", "generate", str(cfg), "--out", str(path), "--quiet", "--accelerator", "cpu"), CORES, work)
    print(f"reading zoo: {config['num_models']} models generated in {seconds:.1f} s", flush=True)
    return path


def selection(zoo: Path) -> tuple[int, float]:
    """The fits' training items and the MB of weights they select, from the runs module (which
    decides the DataModule's split) without reading any weights."""
    from wsl.data.runs import ZooRuns

    runs = ZooRuns(str(zoo))
    split = runs.split(DATA["split"], DATA["split_seed"])
    per_run = len(runs.epoch_positions(0, DATA["checkpoints"]))
    return len(split.runs["train"]) * per_run, len(split.all_runs) * per_run * runs.item_bytes() / 2 ** 20


def bench_ddp(work: Path, zoo: Path, epochs: int, repeats: int) -> dict:
    """networks/s of wsl fit with 1 and 2 processes: (1 + epochs)-epoch fit minus 1-epoch fit."""
    n_train, _ = selection(zoo)
    rounds: dict[int, list[dict]] = {1: [], 2: []}
    for procs in [1, 2] * repeats:
        seconds, tau = {}, None
        for e in (1, 1 + epochs):
            root = work / f"fit_{procs}_{e}"
            shutil.rmtree(root, ignore_errors=True)  # a fresh log (and checkpoint) folder each round
            config = {"seed_everything": 0,
                      "trainer": {"max_epochs": e, "accelerator": "cpu", "devices": procs, "default_root_dir": str(root),
                                  "enable_progress_bar": False, "enable_model_summary": False,
                                  "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                             "init_args": {"save_dir": str(root), "name": "log"}}},
                      "data": {"zoos": [str(zoo)], **DATA}, "model": MODEL}
            if procs > 1:
                config["trainer"]["strategy"] = "ddp"
            cfg = work / f"fit_{procs}_{e}.yaml"
            cfg.write_text(yaml.safe_dump(config))
            seconds[e] = run(wsl("fit", "--config", str(cfg)), max(1, CORES // procs), work)
            rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
            tau = [float(r["val/tau"]) for r in rows if r.get("val/tau")][-1]
        extra = seconds[1 + epochs] - seconds[1]
        rounds[procs].append({"networks_per_s": epochs * n_train / extra, "seconds_1_epoch": seconds[1],
                              f"seconds_{1 + epochs}_epochs": seconds[1 + epochs], "val_tau": tau})
        print(f"training, {procs} process(es): {epochs * n_train / extra:.0f} networks/s "
              f"({epochs} extra epochs of {n_train} training checkpoints in {extra:.1f} s); "
              f"val tau after {1 + epochs} epochs {tau:.3f}", flush=True)
    out = {procs: best_of(r, "networks_per_s") for procs, r in rounds.items()}
    return {"processes_1": out[1], "processes_2": out[2],
            "ratio_2_over_1": out[2]["networks_per_s"] / out[1]["networks_per_s"]}


def pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children, in MB (Linux /proc; 0 elsewhere)."""
    total = 0.0
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                total += float(line.split()[1]) / 1024
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return total
    return total + sum(pss_mb(int(c)) for c in children)


class PeakMemory(threading.Thread):
    """Samples ``pss_mb`` of this process (and its loader workers) until stopped; ``peak`` in MB."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.peak, self.stopped = every, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, pss_mb(os.getpid()))
            self.stopped.wait(self.every)


def read_worker(zoo: str, mode: str, cache_mb: float | None, epochs: int, workers: int) -> dict:
    """One fit in this (fresh) process: networks/s of its epochs after the first, peak RSS."""
    import lightning.pytorch as pl
    import torch

    from wsl.data import PropertyDataModule
    from wsl.prediction.model import PropertyPredictor
    from wsl.core.trainer import make_trainer

    class EpochTimes(pl.Callback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_train_epoch_start(self, trainer, module):
            self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module):
            self.ends.append(time.perf_counter())

    torch.manual_seed(0)
    memory = PeakMemory()
    memory.start()
    t0 = time.perf_counter()
    dm = PropertyDataModule([zoo], **DATA, cache_mb=cache_mb, num_workers=workers)
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    model = PropertyPredictor(spec_json=dm.spec_json, num_outputs=1, target=DATA["target"], **MODEL)
    model.set_normalizers(**dm.normalizers())
    times = EpochTimes()
    trainer = make_trainer(1 + epochs, callbacks=[times], accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    n = len(dm._split_items["train"])
    seconds = times.ends[-1] - times.starts[1]  # the first epoch (workers starting, warm-up) excluded
    memory.stopped.set()
    memory.join()
    return {"mode": mode, "streamed": dm.streamed, "cache_mb": cache_mb, "workers": workers, "setup_s": setup_s,
            "networks_per_s": epochs * n / seconds, "peak_pss_mb": memory.peak}


def bench_reading(work: Path, zoo: Path, epochs: int, fraction: float, workers: int, repeats: int) -> dict:
    _, data_mb = selection(zoo)
    cache_mb = fraction * data_mb
    out = {"data_mb": data_mb}
    rounds: dict[str, list[dict]] = {}
    variants = (("memory", None, 0), ("streamed", cache_mb, 0), (f"streamed_{workers}_workers", cache_mb, workers))
    for mode, cache, w in variants * repeats:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--read-worker", mode, "--zoo", str(zoo),
               "--epochs", str(epochs), "--workers", str(w)] + (["--cache-mb", str(cache)] if cache else [])
        env = dict(os.environ, OMP_NUM_THREADS=str(CORES), PYTHONWARNINGS="ignore")
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-4000:])
        res = json.loads(done.stdout.strip().splitlines()[-1])
        rounds.setdefault(mode, []).append(res)
        print(f"reading, {mode}{f' (cache {cache:.1f} MB of {data_mb:.1f} MB, {w} loader worker(s))' if cache else ''}: "
              f"{res['networks_per_s']:.0f} networks/s, peak memory (PSS) {res['peak_pss_mb']:.0f} MB, "
              f"setup {res['setup_s']:.1f} s", flush=True)
    out.update({mode: best_of(r, "networks_per_s") for mode, r in rounds.items()})
    out["ratio_streamed_over_memory"] = out["streamed"]["networks_per_s"] / out["memory"]["networks_per_s"]
    out["ratio_streamed_workers_over_memory"] = (out[f"streamed_{workers}_workers"]["networks_per_s"]
                                                 / out["memory"]["networks_per_s"])
    out["memory_saved_mb"] = out["memory"]["peak_pss_mb"] - out["streamed"]["peak_pss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="bench_scale")
    ap.add_argument("--epochs", type=int, default=3, help="timed training epochs (after a first one)")
    ap.add_argument("--cache-fraction", type=float, default=0.125, help="cache size / selected weights' size")
    ap.add_argument("--workers", type=int, default=1, help="loader workers when streaming")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of each part's variants; the best is kept")
    ap.add_argument("--quick", action="store_true", help="small zoos (a smoke run, not figures)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["generation", "training", "reading"])
    ap.add_argument("--read-worker", help=argparse.SUPPRESS)
    ap.add_argument("--zoo", help=argparse.SUPPRESS)
    ap.add_argument("--cache-mb", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_worker:
        print(json.dumps(read_worker(args.zoo, args.read_worker, args.cache_mb, args.epochs, args.workers)))
        return
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gen, read = dict(GEN_CONFIG), dict(READ_CONFIG)
    if args.quick:
        gen.update(num_models=64, epochs=1, checkpoints=[0, 1])
        read.update(num_models=400, epochs=2, checkpoints=[0, 1, 2])
        read["name"] = "scale_read_quick"
    result = {"cores": CORES}
    if "generation" not in args.skip:
        result["generation"] = bench_generation(work, gen, args.repeats)
    if "training" in args.skip and "reading" in args.skip:
        print(json.dumps(result))
        return
    zoo = read_zoo(work, read)
    if "training" not in args.skip:
        result["training"] = bench_ddp(work, zoo, args.epochs, args.repeats)
    if "reading" not in args.skip:
        result["reading"] = bench_reading(work, zoo, args.epochs, args.cache_fraction, args.workers, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
