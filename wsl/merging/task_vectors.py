"""Task vectors: merging networks fine-tuned from one pretrained network through their differences to it.

Network i's task vector is ``τ_i = θ_i - θ_pre`` (a flat vector, ``spec.params`` order). Each method
merges the task vectors into one, ``τ_m``, and returns ``θ = θ_pre + λ τ_m``, for one scale λ or a
grid of them (one network per λ, scored at once; ``best_by_score`` picks one on validation data):

- **task arithmetic** (Ilharco et al. 2023, "Editing models with task arithmetic"): ``τ_m = Σ_i τ_i``.
- **TIES-merging** (Yadav et al. 2023): *trim* each ``τ_i`` to its ``top_k`` fraction of largest
  magnitudes (``τ̂_i``, the rest 0); *elect* a sign per parameter, ``γ_p = sgn(Σ_i τ̂_i,p)``;
  *disjoint mean* ``τ_m,p = mean{τ̂_i,p : sgn(τ̂_i,p) = γ_p}`` (0 where no entry agrees).
- **DARE** (Yu et al. 2024, "Language models are Super Mario"): drop each entry with probability p
  and rescale the rest, ``τ̃_i = m_i ⊙ τ_i / (1 - p)``, ``m_i,p ~ Bernoulli(1 - p)`` (so
  ``E[τ̃_i] = τ_i``), then task arithmetic or TIES on the ``τ̃_i``.
- **model breadcrumbs** (Davari & Belilovsky 2024): in each parameter tensor of each ``τ_i``, mask
  (zero) the ``beta`` fraction of largest and the ``gamma`` fraction of smallest magnitudes
  (outliers and noise), then task arithmetic.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from wsl.merging.soups import Score, check_mergeable
from wsl.weights import WeightBatch
from zoo.errors import InputError

#: How ``dare`` merges the rescaled task vectors.
DARE_MERGES = ("task-arithmetic", "ties")


def task_vectors(pretrained: WeightBatch, finetuned: WeightBatch) -> Tensor:
    """``[T, P]``: ``τ_i = θ_i - θ_pre`` for the T networks of ``finetuned``."""
    if len(pretrained) != 1:
        raise InputError(f"the pretrained network must be one network, found a batch of {len(pretrained)}")
    if pretrained.spec.to_dict() != finetuned.spec.to_dict():
        raise InputError("the pretrained and the fine-tuned networks have different weight spaces")
    check_mergeable(finetuned, least=1)
    return finetuned.flatten() - pretrained.flatten().to(finetuned.weights[0])


def with_task_vector(pretrained: WeightBatch, tau: Tensor, lam: float | Sequence[float] = 1.0) -> WeightBatch:
    """``θ_pre + λ τ`` for each λ of ``lam`` (one network per λ); ``tau`` is ``[P]``."""
    lams = torch.as_tensor([lam] if isinstance(lam, (int, float)) else list(lam), dtype=tau.dtype, device=tau.device)
    if lams.numel() == 0:
        raise InputError("expected at least one lambda, found none")
    out = WeightBatch.from_flat(pretrained.spec, pretrained.flatten().to(tau) + lams[:, None] * tau)  # [L, P]
    out.activation = None if pretrained.activation is None else pretrained.activation[:1] * len(lams)
    return out


def _check_fraction(name: str, value: float, low_open: bool) -> None:
    if not ((0 < value if low_open else 0 <= value) and value <= 1):
        raise InputError(f"{name} must lie in {'(0' if low_open else '[0'}, 1], found {value}")


def check_options(top_k: float = 0.2, p: float = 0.5, beta: float = 0.01, gamma: float = 0.85) -> None:
    """Raise unless the options lie in their ranges: ``0 < top_k <= 1``, ``0 <= p < 1``,
    ``beta, gamma >= 0`` with ``beta + gamma < 1``."""
    _check_fraction("top_k", top_k, low_open=True)
    if not 0 <= p < 1:
        raise InputError(f"the drop probability p must lie in [0, 1), found {p}")
    if not (0 <= beta and 0 <= gamma and beta + gamma < 1):
        raise InputError(f"beta and gamma must be >= 0 with beta + gamma < 1, found beta {beta}, gamma {gamma}")


def ties_vector(taus: Tensor, top_k: float = 0.2) -> Tensor:
    """``[P]``: TIES's trim (keep the ``ceil(top_k P)`` largest ``|τ_i,p|`` of each row), elect
    (``γ = sgn Σ_i τ̂_i``) and disjoint mean of the entries whose sign agrees with ``γ``."""
    _check_fraction("top_k", top_k, low_open=True)
    keep = math.ceil(top_k * taus.shape[1] - 1e-9)
    idx = taus.abs().topk(keep, dim=1).indices
    trimmed = torch.zeros_like(taus).scatter(1, idx, taus.gather(1, idx))  # τ̂: [T, P]
    elected = torch.sign(trimmed.sum(0))  # γ: [P]
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)  # [T, P]
    return (trimmed * agree).sum(0) / agree.sum(0).clamp_min(1)


def dare_vectors(taus: Tensor, p: float, seed: int = 0) -> Tensor:
    """``[T, P]``: DARE's drop and rescale. Entry (i, q) is kept where ``u[i, q] >= p``, ``u`` drawn by
    ``torch.rand(T, P, dtype=float64)`` from a CPU generator seeded with ``seed``, and divided by 1 - p."""
    check_options(p=p)
    u = torch.rand(taus.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return taus * (u >= p).to(taus) / (1 - p)


def breadcrumbs_vectors(pretrained: WeightBatch, taus: Tensor, beta: float = 0.01, gamma: float = 0.85) -> Tensor:
    """``[T, P]``: the task vectors with, in each parameter tensor of each (``spec.params``, n
    entries), the ``floor(beta n)`` largest and the ``floor(gamma n)`` smallest magnitudes set to 0."""
    check_options(beta=beta, gamma=gamma)
    out, s = taus.clone(), 0
    for p in pretrained.spec.params:
        part = taus[:, s:s + p.numel]  # [T, n]
        rank = part.abs().argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # 0 = smallest magnitude
        masked = (rank < int(gamma * p.numel)) | (rank >= p.numel - int(beta * p.numel))
        out[:, s:s + p.numel] = part.masked_fill(masked, 0)
        s += p.numel
    return out


def task_arithmetic(pretrained: WeightBatch, finetuned: WeightBatch, lam: float | Sequence[float] = 1.0) -> WeightBatch:
    """Task arithmetic: ``θ_pre + λ Σ_i τ_i`` (Ilharco et al. 2023), one network per λ."""
    return with_task_vector(pretrained, task_vectors(pretrained, finetuned).sum(0), lam)


def ties_merging(pretrained: WeightBatch, finetuned: WeightBatch, top_k: float = 0.2,
                 lam: float | Sequence[float] = 1.0) -> WeightBatch:
    """TIES-merging: ``θ_pre + λ τ_TIES`` (Yadav et al. 2023; ``ties_vector``), one network per λ."""
    return with_task_vector(pretrained, ties_vector(task_vectors(pretrained, finetuned), top_k), lam)


def dare(pretrained: WeightBatch, finetuned: WeightBatch, p: float = 0.5, seed: int = 0,
         merge: str = "task-arithmetic", top_k: float = 0.2, lam: float | Sequence[float] = 1.0) -> WeightBatch:
    """DARE (Yu et al. 2024): the task vectors dropped and rescaled (``dare_vectors``), then summed
    (``merge="task-arithmetic"``) or TIES-merged with ``top_k`` (``merge="ties"``), scaled by λ."""
    if merge not in DARE_MERGES:
        raise InputError(f"DARE merges by one of {list(DARE_MERGES)}, found {merge!r}")
    taus = dare_vectors(task_vectors(pretrained, finetuned), p, seed)
    return with_task_vector(pretrained, taus.sum(0) if merge == "task-arithmetic" else ties_vector(taus, top_k), lam)


def model_breadcrumbs(pretrained: WeightBatch, finetuned: WeightBatch, beta: float = 0.01, gamma: float = 0.85,
                      lam: float | Sequence[float] = 1.0) -> WeightBatch:
    """Model breadcrumbs (Davari & Belilovsky 2024): ``θ_pre + λ Σ_i mask_i ⊙ τ_i``
    (``breadcrumbs_vectors``), one network per λ."""
    taus = breadcrumbs_vectors(pretrained, task_vectors(pretrained, finetuned), beta, gamma)
    return with_task_vector(pretrained, taus.sum(0), lam)


def best_by_score(candidates: WeightBatch, score: Score) -> tuple[int, Tensor]:
    """The index of the best-scoring candidate (the first of equals) and every candidate's score."""
    scores = score(candidates).detach().double().cpu()
    if not torch.isfinite(scores).any():
        raise InputError("no candidate merge has a finite validation score")
    return int(torch.nan_to_num(scores, nan=-math.inf).argmax()), scores
