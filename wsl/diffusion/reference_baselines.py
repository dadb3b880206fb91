"""Networks built from the reference networks that cannot generalize beyond them by construction,
as many as the generator's and seeded: they set the scale of the memorization suite.

References plus Gaussian noise (sigma a multiple of each tensor's RMS, and the sigma whose median
weight novelty matches the generator's), averages of k reference networks (aligned and not), and
a per-parameter Gaussian fitted to the references (aligned and not). A generator is only
interesting where it beats them: as accurate as the references, at a novelty that the noise
baseline reaches only by losing accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from wsl.diffusion.novelty import one_thread
from wsl.weights import WeightBatch
from wsl.weights.align import align
from zoo.errors import InputError


def _pick(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n reference positions: distinct while n <= m."""
    return rng.choice(m, n, replace=n > m)


def _noise_parts(reference: WeightBatch, n: int, seed: int) -> tuple[WeightBatch, list[Tensor], list[Tensor]]:
    """The sources, unit noise and per-tensor RMS of the noise baseline: noise at sigma is
    ``source + sigma * rms * eps``, the same draws for every sigma (so novelty grows smoothly)."""
    src = reference[torch.as_tensor(_pick(len(reference), n, np.random.default_rng(seed)))].to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    eps = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in src.params()]
    rms = [t.reshape(len(src), -1).pow(2).mean(1).sqrt().view(-1, *[1] * (t.dim() - 1)) for t in src.params()]
    return src, eps, rms


def _noisy(parts, sigma: float) -> WeightBatch:
    src, eps, rms = parts
    return WeightBatch.from_params(src.spec, [t + sigma * s * e for t, e, s in zip(src.params(), eps, rms)])


def noise_baseline(reference: WeightBatch, n: int, sigma: float, seed: int = 0) -> WeightBatch:
    """n reference networks (drawn at random) plus Gaussian noise of ``sigma`` times each tensor's
    RMS (per network and parameter tensor)."""
    return _noisy(_noise_parts(reference, n, seed), sigma)


def average_baseline(reference: WeightBatch, n: int, k: int, aligned: bool, seed: int = 0) -> WeightBatch:
    """n averages of k distinct random reference networks; ``aligned``: the other k - 1 first
    permuted onto the first by weight matching (averaging unaligned networks mixes unrelated
    neurons)."""
    m = len(reference)
    if not 1 <= k <= m:
        raise InputError(f"average of k={k} networks needs 1 <= k <= {m} (the reference networks)")
    rng = np.random.default_rng(seed)
    ref = reference.to(torch.float64)
    out = []
    for _ in range(n):
        pick = torch.as_tensor(rng.choice(m, k, replace=False))
        first, others = ref[pick[:1]], ref[pick[1:]]
        if aligned and k > 1:
            with one_thread():
                others = align(others, first, seed=seed)
        group = WeightBatch.cat([first, others]) if k > 1 else first
        out.append(group.map(lambda t: t.mean(0, keepdim=True)))
    return WeightBatch.cat(out)


def gaussian_baseline(reference: WeightBatch, n: int, aligned: bool = False, seed: int = 0) -> WeightBatch:
    """n draws from a per-parameter Gaussian fitted to the references (mean and std of each
    parameter); ``aligned``: fitted after aligning every reference to one of them (drawn)."""
    ref = reference.to(torch.float64)
    if aligned:
        anchor = int(np.random.default_rng(seed).integers(len(ref)))
        with one_thread():
            ref = align(ref, ref[anchor], seed=seed)
    gen = torch.Generator().manual_seed(seed)
    params = [t.mean(0) + t.std(0, correction=0) * torch.randn((n, *t.shape[1:]), generator=gen, dtype=torch.float64)
              for t in ref.params()]
    return WeightBatch.from_params(ref.spec, params)


def calibrate_noise(reference: WeightBatch, n: int, target: float, novelty: Callable[[WeightBatch], float], *,
                    seed: int = 0, bracket: tuple[float, float] = (1e-4, 10.0), rtol: float = 0.02,
                    max_iter: int = 16, known: dict[float, float] | None = None) -> dict[str, Any]:
    """The sigma whose noise baseline has median weight novelty ``target``, by bisection of log
    sigma; ``novelty(wb)`` is that median. ``known``: sigma -> median already computed (the grid),
    to start from the tightest bracket. The draws are the same at every sigma."""
    parts = _noise_parts(reference, n, seed)
    seen = {s: v for s, v in (known or {}).items() if math.isfinite(v)}
    before = len(seen)

    def f(s: float) -> float:
        if s not in seen:
            seen[s] = novelty(_noisy(parts, s))
        return seen[s]

    def result(sigma: float, **extra) -> dict[str, Any]:
        return {"sigma": sigma, "median_weight_novelty": f(sigma), "target": target,
                "converged": abs(f(sigma) - target) <= rtol * abs(target), "evaluations": len(seen) - before} | extra

    lo = max((s for s, v in seen.items() if v <= target), default=bracket[0])
    hi = min((s for s, v in seen.items() if v >= target), default=bracket[1])
    if f(lo) > target:
        return result(lo, note=f"even sigma {lo:g} gives more novelty than the generator")
    if f(hi) < target:
        return result(hi, note=f"even sigma {hi:g} gives less novelty than the generator")
    sigma = lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi
    for _ in range(max_iter):
        if abs(f(sigma) - target) <= rtol * abs(target):
            break
        sigma = math.sqrt(lo * hi)
        if f(sigma) < target:
            lo = sigma
        else:
            hi = sigma
    return result(sigma)
