"""Benchmark HDF5 layouts for a zoo's weights: file size, reading one checkpoint of every model,
and reading one model at every checkpoint, side by side on the same weights.

    .venv/bin/python scripts/bench_store_layout.py zoos/digits_mlp.h5

The weights of ZOO's ``/params`` are copied into a scratch file once per layout (chunk shape and
filters); each read is timed from a fresh open (warm page cache), best of ``--repeats``. The layout
``zoo.store`` writes is the row marked "(zoo.store)". The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.store import models_per_chunk  # noqa: E402

GZIP = dict(compression="gzip", compression_opts=1, shuffle=True)
LAYOUTS = {  # name -> (models per chunk or None for zoo.store's rule, checkpoints per chunk or None for all, filters)
    "1 model x all checkpoints, gzip+shuffle": (1, None, GZIP),
    "16 models x 1 checkpoint, gzip+shuffle": (16, 1, GZIP),
    "16 models x 1 checkpoint, lzf+shuffle": (16, 1, dict(compression="lzf", shuffle=True)),
    "16 models x 1 checkpoint, uncompressed (zoo.store)": (None, 1, {}),
    "64 models x 1 checkpoint, uncompressed": (64, 1, {}),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo", help="a zoo file whose weights are copied into each layout")
    ap.add_argument("--repeats", type=int, default=3, help="timed reads per layout; the best counts (default 3)")
    ap.add_argument("--models", type=int, default=200, help="single models read for the per-model figure (default 200)")
    args = ap.parse_args(argv)
    with h5py.File(args.zoo, "r") as f:
        data = {k: f["params"][k][()] for k in f["params"]}
    M, C = next(iter(data.values())).shape[:2]
    print(f"{args.zoo}: {M} models, {C} checkpoints, {len(data)} parameters", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layout.h5"
        for name, (k, ck, filters) in LAYOUTS.items():
            with h5py.File(path, "w") as f:
                for key, a in data.items():
                    per = models_per_chunk(M, a[0, 0].size) if k is None else min(k, M)
                    f.create_dataset(key, data=a, chunks=(per, ck or C, *a.shape[2:]), fletcher32=True, **filters)
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with h5py.File(path, "r") as f:
                    for key in f:
                        f[key][:, C - 1]
                best = min(best, time.perf_counter() - t0)
            n = min(args.models, M)
            t0 = time.perf_counter()
            with h5py.File(path, "r") as f:
                for i in range(n):
                    for key in f:
                        f[key][i]
            one = (time.perf_counter() - t0) / n
            results[name] = {"file_mb": round(os.path.getsize(path) / 1e6, 1), "checkpoint_ms": round(best * 1e3, 1),
                             "checkpoint_models_per_s": round(M / best), "one_model_ms": round(one * 1e3, 2)}
            r = results[name]
            print(f"{name:52s} {r['file_mb']:7.1f} MB   one checkpoint {r['checkpoint_ms']:7.1f} ms "
                  f"({r['checkpoint_models_per_s']:,} models/s)   one model {r['one_model_ms']:.2f} ms", flush=True)
    print(json.dumps({"zoo": args.zoo, "models": M, "checkpoints": C, "layouts": results}))


if __name__ == "__main__":
    main()
