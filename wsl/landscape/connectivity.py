"""Linear mode connectivity: the loss and accuracy along the straight line between two networks.

For networks ``θ_a``, ``θ_b`` and ``α`` on a fixed grid of ``points`` values in [0, 1], the path is
``θ(α) = (1 - α) θ_a + α θ_b``. Its loss barrier is Entezari et al.'s (2022, "The role of permutation
invariance in linear mode connectivity of neural networks"):

    B(θ_a, θ_b) = max_α  L(θ(α)) - [(1 - α) L(θ_a) + α L(θ_b)]

the largest rise of the loss over the linear interpolation of the endpoints' losses (Frankle et al.
2020 subtract the endpoints' mean instead; the two agree when the endpoints' losses are equal).
For classification the accuracy barrier is the same with the signs turned: the largest drop of
accuracy under the interpolation of the endpoints' accuracies. Both are computed raw and after
weight matching ``θ_b`` onto ``θ_a`` (``wsl.weights.align``: same function, permuted neurons),
which removes the barriers that only the permutation symmetry makes (Ainsworth et al. 2023).

Many pairs are evaluated at once: every ``b[n]`` is weight matched onto its ``a[n]`` in one call
(``align(..., per_network=True)``), and all pairs x points networks go through the population
forward (``zoo.train.evaluate``), in passes of at most ``networks_per_pass``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wsl.weights import WeightBatch
from wsl.weights.align import align
from zoo.errors import InputError
from zoo.train import evaluate

KINDS = ("classification", "regression")


@dataclass(frozen=True)
class TaskKind:
    """What ``zoo.train.evaluate`` reads of a task: whether it is classification or regression."""
    kind: str


def interpolate(a: WeightBatch, b: WeightBatch, alphas: Tensor) -> WeightBatch:
    """``[N * K]`` networks ``(1 - α) θ_a + α θ_b``, pair-major: network ``n K + k`` is pair n at ``alphas[k]``."""
    if len(a) != len(b):
        raise InputError(f"pairs need as many networks on each side, found {len(a)} and {len(b)}")
    if a.spec.to_dict() != b.spec.to_dict():
        raise InputError("the two sides of the pairs have different weight spaces")
    fa, fb = a.flatten(), b.flatten().to(a.weights[0])
    al = alphas.to(fa)[None, :, None]  # [1, K, 1]
    path = ((1 - al) * fa[:, None] + al * fb[:, None]).reshape(-1, fa.shape[1])  # [N*K, P]
    out = WeightBatch.from_flat(a.spec, path)
    if a.activation is not None:
        out.activation = [act for act in a.activation for _ in range(len(alphas))]
    return out


def path_metrics(a: WeightBatch, b: WeightBatch, x: Tensor, y: Tensor, kind: str, points: int = 11,
                 networks_per_pass: int = 256) -> dict[str, Tensor]:
    """Along the path of each pair: ``alpha`` [K], ``loss`` [N, K] and, for classification, ``acc``
    [N, K] on inputs ``x`` and targets ``y`` (classes [n] or values [n, out]), as ``zoo.train.evaluate``
    computes them (cross-entropy or mean squared error)."""
    if kind not in KINDS:
        raise InputError(f"task kind must be one of {list(KINDS)}, found {kind!r}")
    if points < 2:
        raise InputError(f"a path needs at least 2 points (its ends), found {points}")
    if a.activation is not None and b.activation is not None and a.activation != b.activation:
        raise InputError("each pair's networks must share their activation")
    alphas = torch.linspace(0, 1, points, dtype=torch.float64)
    path = interpolate(a, b, alphas)
    params = [t.to(device=x.device, dtype=torch.float32) for t in path.params()]
    res: dict[str, list[Tensor]] = {}
    for s in range(0, len(path), networks_per_pass):
        act = path.activation[s:s + networks_per_pass] if path.activation is not None else None
        part = evaluate(a.spec, [t[s:s + networks_per_pass] for t in params], TaskKind(kind), x, y, activation=act)
        for k, v in part.items():
            res.setdefault(k, []).append(v.double().cpu())
    out = {k: torch.cat(v).reshape(len(a), points) for k, v in res.items()}
    return {"alpha": alphas, **out}


def barrier(values: Tensor, alphas: Tensor, higher_is_better: bool = False) -> Tensor:
    """``[N]``: ``max_α v(α) - [(1 - α) v(0) + α v(1)]`` of ``values`` [N, K] (a loss; an accuracy
    with ``higher_is_better``: its largest drop under the endpoints' interpolation)."""
    v = -values if higher_is_better else values
    line = (1 - alphas)[None] * v[:, :1] + alphas[None] * v[:, -1:]
    return (v - line).amax(1)


def linear_mode_connectivity(a: WeightBatch, b: WeightBatch, x: Tensor, y: Tensor, kind: str, points: int = 11,
                             matched: bool = True, max_iter: int = 50, seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """For N pairs ``(a[n], b[n])``: ``{"raw": ..., "matched": ...}`` (the latter with ``b[n]`` weight
    matched onto ``a[n]``; only if ``matched``), each with ``alpha``, ``loss`` [N, K], ``acc`` [N, K]
    (classification), ``loss_barrier`` [N] and ``acc_barrier`` [N] (classification)."""
    sides = {"raw": b}
    if matched:
        sides["matched"] = align(b, a, max_iter=max_iter, seed=seed, per_network=True)  # b[n] onto a[n], all pairs at once
    out = {}
    for name, other in sides.items():
        m = path_metrics(a, other, x, y, kind, points)
        m["loss_barrier"] = barrier(m["loss"], m["alpha"])
        if "acc" in m:
            m["acc_barrier"] = barrier(m["acc"], m["alpha"], higher_is_better=True)
        out[name] = m
    return out
