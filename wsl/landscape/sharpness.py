"""Sharpness of a population: Hessian trace and top Hessian eigenvalue of every network's loss.

The loss of network m is its mean training loss on a fixed batch (``zoo.train.per_example_loss``:
cross-entropy for classification, squared error for regression), with respect to all its
parameters. The networks of a population are independent, so the Hessian of the summed loss is
block diagonal, one block per network: one double backward through ``population_forward`` gives
every network's Hessian-vector product ``H_m v_m`` at once (Pearlmutter 1994). The gradient graph
is built once and reused for every probe; ``torch.func``'s forward-over-reverse ``jvp(grad(f))``
gives the same products but measured 1.8x slower here (1,000 digits MLPs, 10 probes, 2 CPU cores).

- **Trace** (Hutchinson 1989; as in PyHessian, Yao et al. 2020): ``tr H ≈ mean_k v_kᵀ H v_k`` over
  Rademacher probes ``v_k`` (entries ±1), unbiased with variance ``2 Σ_{i≠j} H_ij² / probes``.
- **Top eigenvalue** (power iteration, as in PyHessian): ``v ← H v / ‖H v‖`` from a seeded random
  start, the Rayleigh quotient ``vᵀ H v`` as the estimate; a network stops once its estimate moves
  by at most ``tol`` relative. It converges to the eigenvalue of largest magnitude.

Probes and starts are drawn once from ``seed`` and shared by all networks, so a network's result
does not depend on which networks share the call.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError
from zoo.functional import population_forward
from zoo.tasks import TaskData
from zoo.train import per_example_loss
from zoo.weight_space import WeightSpaceSpec


def _check(spec: WeightSpaceSpec, params: list[Tensor]) -> int:
    if len(params) != len(spec.params):
        raise InputError(f"expected {len(spec.params)} parameter tensors ({', '.join(spec.param_names)}), "
                         f"found {len(params)}")
    M = params[0].shape[0]
    for p, ps in zip(params, spec.params):
        if tuple(p.shape) != (M, *ps.shape):
            raise InputError(f"{ps.name}: expected [{M}, {', '.join(map(str, ps.shape))}], found {list(p.shape)}")
    return M


def _targets(task: TaskData, y: Tensor, M: int) -> Tensor:
    """Targets per network: shared ``[B]`` / ``[B, out]`` expanded, or already ``[M, B(, out)]``."""
    shared_dim = 1 if task.kind == "classification" else 2
    if y.dim() == shared_dim:
        return y.unsqueeze(0).expand(M, *y.shape)
    if y.dim() == shared_dim + 1 and y.shape[0] == M:
        return y
    raise InputError(f"targets of shape {list(y.shape)}: expected shared [B{'' if shared_dim == 1 else ', out'}] "
                     f"or per-network [{M}, B{'' if shared_dim == 1 else ', out'}]")


def _loss_and_grads(spec, params, task, x, y, activation) -> tuple[list[Tensor], list[Tensor]]:
    """Leaf copies of ``params`` and the gradients of the summed per-network mean losses, with graph."""
    leaves = [p.detach().requires_grad_(True) for p in params]
    out = population_forward(spec, leaves, x, activation=activation)  # [M, B, out]
    loss = per_example_loss(task, out, _targets(task, y, leaves[0].shape[0])).mean(1).sum()
    return leaves, list(torch.autograd.grad(loss, leaves, create_graph=True))


def _hvp(leaves: list[Tensor], grads: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    """Every network's ``H_m v_m`` ([M, ...] per parameter) from the gradient graph."""
    dot = sum((g * u).sum() for g, u in zip(grads, v))
    return [h.detach() for h in torch.autograd.grad(dot, leaves, retain_graph=True)]


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Per-network inner products [M]."""
    return sum((u * w).flatten(1).sum(1) for u, w in zip(a, b))


def _per_network(t: Tensor, like: Tensor) -> Tensor:
    """A per-network [M] tensor shaped to broadcast against a parameter [M, ...]."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def _split(spec: WeightSpaceSpec, flat: Tensor, M: int) -> list[Tensor]:
    """A flat vector [P] as per-parameter tensors shared by M networks ([M, ...], expanded)."""
    out, at = [], 0
    for ps in spec.params:
        out.append(flat[at:at + ps.numel].view(ps.shape).unsqueeze(0).expand(M, *ps.shape))
        at += ps.numel
    return out


def hessian_trace(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, *,
                  probes: int = 10, seed: int = 0, activation: str | list[str] | None = None) -> Tensor:
    """Hutchinson estimates [M] of every network's Hessian trace: the mean of ``vᵀ H v`` over
    ``probes`` Rademacher probes drawn from ``seed`` (the same probes for every network)."""
    if probes < 1:
        raise InputError(f"probes: expected a positive count, found {probes}")
    M = _check(spec, params)
    leaves, grads = _loss_and_grads(spec, params, task, x, y, activation)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(M, dtype=torch.float64, device=x.device)
    for _ in range(probes):
        flat = torch.randint(0, 2, (spec.num_params,), generator=gen).to(x.device, params[0].dtype) * 2 - 1
        v = _split(spec, flat, M)
        total += _dot(v, _hvp(leaves, grads, v)).double()
    return (total / probes).to(params[0].dtype)


def top_eigenvalue(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, *,
                   iters: int = 100, tol: float = 1e-4, seed: int = 0, activation: str | list[str] | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Power-iteration estimates [M] of every network's Hessian eigenvalue of largest magnitude, and
    the iterations [M] each used: at most ``iters``, fewer once ``|λ_t - λ_{t-1}| <= tol |λ_t|``. The
    start is a Gaussian vector from ``seed``; a converged network's estimate is frozen."""
    if iters < 1:
        raise InputError(f"iters: expected a positive count, found {iters}")
    M = _check(spec, params)
    leaves, grads = _loss_and_grads(spec, params, task, x, y, activation)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(spec.num_params, generator=gen).to(x.device, params[0].dtype)
    v = [t.clone() for t in _split(spec, start / start.norm(), M)]
    eig = torch.zeros(M, dtype=params[0].dtype, device=x.device)
    used = torch.zeros(M, dtype=torch.long, device=x.device)
    active = torch.ones(M, dtype=torch.bool, device=x.device)
    for t in range(iters):
        hv = _hvp(leaves, grads, v)
        new = _dot(v, hv)  # Rayleigh quotient, v of unit norm
        norm = _dot(hv, hv).sqrt().clamp_min(1e-30)
        done = (new - eig).abs() <= tol * new.abs()
        eig = torch.where(active, new, eig)
        used = torch.where(active, torch.full_like(used, t + 1), used)
        if t > 0:
            active = active & ~done
        if not bool(active.any()):
            break
        v = [torch.where(_per_network(active, u), h / _per_network(norm, u), u) for u, h in zip(v, hv)]
    return eig, used
