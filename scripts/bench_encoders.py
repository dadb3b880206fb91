"""Benchmark weight-space encoders: training throughput and peak memory, ours against the ``nfn``
package (Zhou et al.'s reference implementation of NFNs), and the neural-graph encoders on PyG
against their dense twins (the same functions).

    .venv/bin/python scripts/bench_encoders.py                      # CPU, 2 threads, B=64, 5 repeats
    .venv/bin/python scripts/bench_encoders.py --device cuda --threads 8
    .venv/bin/python scripts/bench_encoders.py --baseline-src /path/to/old/checkout   # before vs after
    .venv/bin/python scripts/bench_encoders.py --space mnist-inr --encoders ngnn,scalegmn --channels 64 \
        --layers 4 --threads 1                                       # ScaleGMN against NG-GNN on SIRENs
    .venv/bin/python scripts/bench_encoders.py --space mnist-inr --configs mnist_inr \
        --encoders hnp,ngnn,ngnn-dense,ngt,ngt-dense,scalegmn       # at the shipped MNIST-INR settings

Encoders (all at ``--channels`` width and ``--layers`` depth, on the MLP 64-32-32-10 weight space
unless ``--space`` says otherwise):

- ``hnp``: our ``NFNEncoder(mode="hnp")``: lift -> [HNPLinear, ReLU] x layers -> invariant pool ->
  MLP head (``--head-hidden``).
- ``nfn-hnp``: the same pipeline built from the ``nfn`` package (``nfn.layers.HNPLinear``,
  ``TupleOp(ReLU)``, ``HNPPool``) with the same head. Skipped, with a note, when ``nfn`` is not
  importable (``pip install nfn``). Its HNP layer is not parameter-for-parameter ours: on the fixed
  input/output axes it mixes all indices (``n^2 C^2`` parameters) where ours is per-index, so the
  work differs a little; both are what a user gets from ``hnp`` in each library.
- ``ngnn``: NG-GNN on PyG, ``build_encoder("ngnn")`` (hidden size ``--channels``, ``--layers``
  message-passing layers, one head).
- ``ngnn-dense``: the same NG-GNN (same parameters, same function) on dense per-layer edge tensors,
  ``build_encoder("ngnn-dense")``; the JSON line gives ``ngnn_speed_ratio_pyg_over_dense``.
- ``ngt``: the neural-graph transformer on PyG, ``build_encoder("ngt")``, same width and depth.
- ``ngt-dense``: the same NG-T on dense edge tensors, ``build_encoder("ngt-dense")``; the JSON line
  gives ``ngt_speed_ratio_pyg_over_dense``.
- ``scalegmn``: ScaleGMN on PyG (Kalogeropoulos et al. 2024: also invariant to the activation's
  scalings), ``build_encoder("scalegmn")``, same width and depth; the JSON line gives
  ``scalegmn_time_ratio_over_ngnn`` (the issue's target: at most 2).

``--configs PREFIX`` builds every encoder as its shipped config ``configs/predict/PREFIX_<name>.yaml``
does (``-dense``: its PyG twin's config), at that config's batch size: the issue's "at the shipped
widths". With HNP among them, the JSON line gives each neural graph's time per step over HNP's
(``*_time_ratio_over_hnp``, the issue's target: at most 2) and what its matrix products alone take
against HNP's whole step (``*_matmul_time_ratio_over_hnp``, from the profiler's share of matmul
time, ``matmul_share``): the part no rewrite of the rest can remove at those widths.

``--space mnist-inr`` benchmarks on the 2-32-32-1 SIREN weight space of ``configs/zoo/mnist_inr.yaml``
instead (sign symmetry for ``scalegmn``; the MLP is ReLU: positive scaling).

What is measured: one training step is forward + ``sum().backward()`` on a batch of ``--batch``
random networks (the conversion from a ``WeightBatch`` into each library's input form included),
after ``--warmup`` steps. Each encoder runs in a fresh subprocess per repeat, which times
``--steps`` steps one by one and reports ``batch / median step time``; the encoders take turns in
every repeat (side by side, so CPU noise hits them alike) and the figures are medians over
``--repeats``.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the timed steps minus the memory
allocated before them (model, optimizer-free, inputs). On CPU torch's allocations are invisible to
tracemalloc, so the worker reports its process's peak resident set size (``ru_maxrss`` of
``resource.getrusage``) minus its resident set size just before the first step (``VmRSS``): the
peak *growth* caused by training steps, allocator caching included. A fresh process per run keeps
earlier runs out of the peak. It is coarse (page granularity, glibc's caching) but honest.

The last line of output is one JSON object with the headline figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("hnp", "nfn-hnp", "ngnn", "ngnn-dense", "ngt", "ngt-dense", "scalegmn")
SPACES = {"mlp": "MLP 64-32-32-10", "mnist-inr": "SIREN 2-32-32-1 (MNIST-INR)"}


# --- worker: one encoder, one fresh process -------------------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _nfn_hnp(spec, channels: int, layers: int, head_hidden: int, out_dim: int, fourier: int = 0,
             fourier_scale: float = 1.0):
    """The nfn package's HNP encoder with the same depth, width, activation, pool and head as ours
    (and, with ``fourier``, the same Fourier encoding of each weight in front)."""
    import torch
    from torch import nn
    from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
    from nfn.layers import HNPLinear, HNPPool, TupleOp
    from wsl.nn.base import weight_encoding

    example = WeightSpaceFeatures([torch.zeros(1, 1, *l.weight.shape) for l in spec.layers],
                                  [torch.zeros(1, 1, l.out_features) for l in spec.layers])
    nspec = network_spec_from_wsfeat(example)

    class NFNPackageHNP(nn.Module):
        raw_weights = False  # as our encoders: it reads normalized weights (wsl.nn.base)

        def __init__(self):
            super().__init__()
            self.encode, c_in = weight_encoding(fourier, fourier_scale)
            mods = []
            for k in range(layers):
                mods += [HNPLinear(nspec, c_in if k == 0 else channels, channels), TupleOp(nn.ReLU())]
            self.layers = nn.Sequential(*mods)
            self.pool = HNPPool(nspec)
            self.head = nn.Sequential(nn.Linear(HNPPool.get_num_outs(nspec) * channels, head_hidden), nn.ReLU(),
                                      nn.Linear(head_hidden, out_dim))

        def forward(self, wb):
            feats = self.encode(wb.features())
            feats = WeightSpaceFeatures(list(feats.weights), list(feats.biases))
            return self.head(self.pool(self.layers(feats)).flatten(1))

    return NFNPackageHNP()


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from wsl.weights import WeightBatch
    from zoo.architectures import build_spec

    if args.space == "mnist-inr":
        spec = build_spec("siren", (2,), 1, hidden=[32, 32], omega_0=30.0)
    else:
        spec = build_spec("mlp", (64,), 10, hidden=[32, 32])
    torch.manual_seed(0)
    name = args.worker
    if args.configs:
        from wsl.nn import build_encoder
        model = build_encoder(name, spec, 10, **shipped_settings(args.configs, name)[0])
    elif name == "hnp":
        try:
            from wsl.nn.nfn import NFNEncoder
        except ImportError:  # a --baseline-src checkout from before wsl/ was grouped by role
            from wsl.encoders.nfn import NFNEncoder
        model = NFNEncoder(spec, 1, mode="hnp", channels=args.channels, layers=args.layers,
                           head_hidden=args.head_hidden)
    elif name in ("ngnn", "ngnn-dense", "ngt", "ngt-dense", "scalegmn"):
        from wsl.nn import build_encoder
        model = build_encoder(name, spec, 1, hidden=args.channels, layers=args.layers)
    elif name == "nfn-hnp":
        model = _nfn_hnp(spec, args.channels, args.layers, args.head_hidden, 1)
    else:
        raise ValueError(f"unknown encoder {name!r}")
    dev = torch.device(args.device)
    model = model.to(dev).train()
    gen = torch.Generator().manual_seed(1)
    wb = WeightBatch.from_params(spec, [0.3 * torch.randn(args.batch, *p.shape, generator=gen) for p in spec.params])
    wb = wb.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        model.zero_grad(set_to_none=True)
        model(wb).sum().backward()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib() * 1024
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"encoder": name, "networks_per_s": args.batch / statistics.median(times),
            "peak_mem_mib": max(peak, 0) / 2**20, "params": sum(p.numel() for p in model.parameters()),
            "matmul_share": matmul_share(step) if dev.type == "cpu" else None,
            "wsl": str(Path(sys.modules["wsl"].__file__).parent.parent)}


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_share(step, steps: int = 2) -> float:
    """The fraction of a training step's CPU time spent in matrix products (``MATMULS``, forward and
    backward), from ``torch.profiler`` over ``steps`` steps: what no rewrite of the rest can remove
    at this width and depth."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / max(total, 1e-9)


def shipped_settings(prefix: str, name: str) -> tuple[dict, int]:
    """``(encoder_kwargs, batch_size)`` of the shipped config ``configs/predict/<prefix>_<name>.yaml``."""
    import yaml

    name = name.removesuffix("-dense")  # the dense models are the same models: the same settings
    path = ROOT / "configs" / "predict" / f"{prefix}_{name}.yaml"
    if not path.exists():
        raise SystemExit(f"--configs {prefix}: no shipped config {path.relative_to(ROOT)} for encoder {name!r}")
    cfg = yaml.safe_load(path.read_text())
    return cfg["model"]["init_args"].get("encoder_kwargs", {}), int(cfg["data"]["init_args"]["batch_size"])


# --- driver ---------------------------------------------------------------------------------------
def run_one(args, name: str, src: str | None) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    for opt in ("device", "threads", "batch", "channels", "layers", "head_hidden", "steps", "warmup", "space", "configs"):
        if getattr(args, opt) is None:
            continue
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"  {name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def nfn_available() -> bool:
    try:
        import nfn.layers  # noqa: F401
        return True
    except Exception:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (median step time)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--head-hidden", type=int, default=256)
    p.add_argument("--encoders", default=",".join(ENCODERS), help=f"comma-separated subset of {ENCODERS}")
    p.add_argument("--space", default="mlp", choices=sorted(SPACES), help="the weight space of the random networks")
    p.add_argument("--baseline-src", default=None,
                   help="a directory holding another version of the wsl and zoo packages (e.g. a checkout "
                        "before a change): our encoders from there are run too, as NAME@base")
    p.add_argument("--configs", default=None, metavar="PREFIX",
                   help="build each encoder as its shipped config configs/predict/PREFIX_<encoder>.yaml does "
                        "(its encoder_kwargs and batch size; --channels, --layers and --batch are ignored), "
                        "e.g. --space mnist-inr --configs mnist_inr")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.configs and not args.worker:
        names = [n.strip() for n in args.encoders.split(",") if n.strip()]
        batches = {shipped_settings(args.configs, n)[1] for n in names if n != "nfn-hnp"}
        if len(batches) > 1:
            p.error(f"--configs {args.configs}: the shipped configs differ in batch size {sorted(batches)}")
        args.batch = batches.pop() if batches else args.batch

    if args.worker:
        print(json.dumps(worker(args)))
        return

    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    for n in names:
        if n not in ENCODERS:
            p.error(f"unknown encoder {n!r}; expected some of {ENCODERS}")
    has_nfn = nfn_available()
    if "nfn-hnp" in names and not has_nfn:
        print("note: the nfn package is not importable (pip install nfn): benchmarking ours only")
        names.remove("nfn-hnp")
    runs = [(n, None) for n in names]
    if args.baseline_src:
        src = str(Path(args.baseline_src).resolve())
        runs += [(f"{n}@base", src) for n in names if n != "nfn-hnp"]

    widths = (f"each as configs/predict/{args.configs}_<encoder>.yaml builds it" if args.configs
              else f"channels={args.channels} layers={args.layers}")
    print(f"encoders on {SPACES[args.space]} weights: device={args.device} threads={args.threads} batch={args.batch} "
          f"{widths} repeats={args.repeats} steps={args.steps}")
    results: dict[str, list[dict]] = {label: [] for label, _ in runs}
    for r in range(args.repeats):
        for label, src in runs:
            out = run_one(args, label.split("@")[0], src)
            if out is not None:
                results[label].append(out)
                print(f"  repeat {r + 1}/{args.repeats} {label:15s} {out['networks_per_s']:8.1f} networks/s  "
                      f"peak +{out['peak_mem_mib']:7.1f} MiB", flush=True)

    summary: dict[str, dict] = {}
    for label, outs in results.items():
        if outs:
            summary[label] = {
                "networks_per_s": statistics.median(o["networks_per_s"] for o in outs),
                "peak_mem_mib": statistics.median(o["peak_mem_mib"] for o in outs),
                "params": outs[0]["params"], "runs": len(outs), "wsl": outs[0]["wsl"],
                "matmul_share": (statistics.median(o["matmul_share"] for o in outs)
                                 if outs[0].get("matmul_share") is not None else None),
            }
    mem_kind = "max_memory_allocated growth" if args.device == "cuda" else "peak RSS growth"
    print(f"\nmedians over {args.repeats} repeats ({mem_kind} during training steps):")
    print(f"  {'encoder':15s} {'networks/s':>11s} {'peak MiB':>9s} {'params':>9s} {'matmuls':>8s}")
    for label, s in summary.items():
        share = "" if s["matmul_share"] is None else f"{s['matmul_share']:8.0%}"
        print(f"  {label:15s} {s['networks_per_s']:11.1f} {s['peak_mem_mib']:9.1f} {s['params']:9d} {share}")

    headline = {"device": args.device, "space": args.space, "threads": args.threads, "batch": args.batch,
                "channels": args.channels, "layers": args.layers, "configs": args.configs, "repeats": args.repeats,
                "memory": mem_kind, "nfn_available": has_nfn}
    for label, s in summary.items():
        key = label.replace("-", "_").replace("@", "_")
        headline[f"{key}_networks_per_s"] = round(s["networks_per_s"], 1)
        headline[f"{key}_peak_mib"] = round(s["peak_mem_mib"], 1)
    if "hnp" in summary and "nfn-hnp" in summary:
        ours, ref = summary["hnp"], summary["nfn-hnp"]
        headline["hnp_speed_ratio_ours_over_nfn"] = round(ours["networks_per_s"] / ref["networks_per_s"], 2)
        if ref["peak_mem_mib"] > 0:
            headline["hnp_memory_ratio_ours_over_nfn"] = round(ours["peak_mem_mib"] / ref["peak_mem_mib"], 2)
        print(f"\nours / nfn (HNP): {headline['hnp_speed_ratio_ours_over_nfn']:.2f}x networks/s")
    for n in ("ngnn", "ngt"):
        if n in summary and f"{n}-dense" in summary:
            ratio = summary[n]["networks_per_s"] / summary[f"{n}-dense"]["networks_per_s"]
            headline[f"{n}_speed_ratio_pyg_over_dense"] = round(ratio, 2)
            print(f"{n}, PyG / dense: {ratio:.2f}x networks/s")
    if "hnp" in summary:  # the bar: neural graphs at most 2x HNP's time per step
        hnp = summary["hnp"]["networks_per_s"]
        for n in ("ngnn", "ngnn-dense", "ngt", "ngt-dense", "scalegmn"):
            if n in summary:
                key = n.replace("-", "_")
                ratio = hnp / summary[n]["networks_per_s"]
                headline[f"{key}_time_ratio_over_hnp"] = round(ratio, 2)
                line = f"{n} / HNP: {ratio:.2f}x time per step"
                if summary[n]["matmul_share"] is not None:  # its matrix products alone, against HNP's whole step
                    floor = ratio * summary[n]["matmul_share"]
                    headline[f"{key}_matmul_time_ratio_over_hnp"] = round(floor, 2)
                    line += f" (its matrix products alone: {floor:.2f}x)"
                print(line)
    if "scalegmn" in summary and "ngnn" in summary:
        ratio = summary["ngnn"]["networks_per_s"] / summary["scalegmn"]["networks_per_s"]
        headline["scalegmn_time_ratio_over_ngnn"] = round(ratio, 2)
        print(f"ScaleGMN / NG-GNN: {ratio:.2f}x time per step")
    for n in ("hnp", "ngnn", "ngnn-dense", "ngt", "ngt-dense", "scalegmn"):
        if n in summary and f"{n}@base" in summary:
            headline[f"{n}_speedup_over_base"] = round(summary[n]["networks_per_s"] / summary[f"{n}@base"]["networks_per_s"], 2)
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
