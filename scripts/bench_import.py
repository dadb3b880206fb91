"""Benchmark of ``wsl zoo import``: checkpoints per second from a folder in the page cache, and peak memory.

Writes N state_dicts of the demo architecture (the digits MLP of configs/zoo/digits_mlp.yaml,
64-32-32-10, 3,466 parameters) as safetensors files and as .pt files, reads each folder once
(into the page cache), then imports each in a fresh process, timed from the start of the import
to the renamed zoo file (the import of torch and Lightning before it is reported apart, as startup). Peak memory is that process's maximum resident set, for N and for
``--small`` files: an import streams, so it must not grow with the folder. Prints a table with the
targets, then one JSON line.

    .venv/bin/python scripts/bench_import.py --files 20000 --small 5000 --work-dir bench_import
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"safetensors": 2000.0, "pt": 500.0}  # checkpoints/s on 2 cores
HIDDEN = [32, 32]


def write_folder(folder: Path, n: int, fmt: str) -> None:
    import torch
    from safetensors.torch import save_file
    from torch import nn

    if folder.exists() and len(list(folder.iterdir())) == n:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    for i in range(n):
        sd = {k: v + 0.001 * i for k, v in net.state_dict().items()}
        if fmt == "safetensors":
            save_file(sd, str(folder / f"net_{i:07d}.safetensors"))
        else:
            torch.save(sd, folder / f"net_{i:07d}.pt")


def warm(folder: Path) -> None:
    for f in folder.iterdir():
        f.read_bytes()


def one(folder: Path, out: Path, workers: int) -> dict:
    """One import in this process: its rate and this process's peak memory."""
    t0 = time.perf_counter()
    from wsl.interchange.formats import detect_format, import_zoo

    detect_format([folder])  # imports the format modules (torch, Lightning): once per command, not per file
    startup = time.perf_counter() - t0
    n = len(list(folder.iterdir()))
    t0 = time.perf_counter()
    import_zoo([folder], out, activation="relu", workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    return {"files": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1), "startup_s": round(startup, 2),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_child(folder: Path, out: Path, workers: int) -> dict:
    out.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, __file__, "--one", str(folder), "--out", str(out), "--workers", str(workers)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    out.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000, help="checkpoints in the large folder of each format")
    ap.add_argument("--small", type=int, default=5000, help="checkpoints in the small folder (peak memory)")
    ap.add_argument("--workers", type=int, default=1, help="processes reading files (default 1)")
    ap.add_argument("--work-dir", default="bench_import")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(Path(args.one), Path(args.out), args.workers)))
        return
    work = Path(args.work_dir)
    results = {}
    for fmt in ("safetensors", "pt"):
        for size in (args.small, args.files):
            folder = work / f"{fmt}_{size}"
            write_folder(folder, size, fmt)
            warm(folder)
            results[f"{fmt}_{size}"] = run_child(folder, work / "zoo.h5", args.workers)
    print(f"{'folder':<22}{'files':>8}{'seconds':>9}{'ckpt/s':>9}{'target':>8}{'peak MB':>9}")
    for key, r in results.items():
        fmt = key.split("_")[0]
        print(f"{key:<22}{r['files']:>8}{r['seconds']:>9}{r['per_s']:>9}{TARGETS[fmt]:>8.0f}{r['peak_mb']:>9}")
    summary = {"workers": args.workers, "cpus": os.cpu_count(), "targets": TARGETS, "results": results,
               "peak_growth_mb": {fmt: round(results[f"{fmt}_{args.files}"]["peak_mb"]
                                             - results[f"{fmt}_{args.small}"]["peak_mb"], 1) for fmt in TARGETS}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
