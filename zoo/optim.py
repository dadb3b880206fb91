"""A hand-written optimizer for a population: per-model hyperparameters held as tensors.

Model i follows exactly the update of ``torch.optim.SGD`` (momentum, no dampening, L2 weight decay),
``torch.optim.Adam`` (L2 weight decay) or ``torch.optim.AdamW`` (decoupled weight decay), with its
own learning rate, weight decay and momentum (SGD's momentum, Adam's beta1).

Models that are not ``active`` in a step (their epoch is over, or they diverged) must have zero
gradients; their parameters and state stay untouched. The mask is folded into the per-model
coefficients (momentum 1, learning rate 0), so a step costs a few fused passes over the
parameters and no ``torch.where``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .fused import FusedStep
from .errors import InputError

OPTIMIZERS = ("sgd", "adam", "adamw")


class PopulationOptimizer:
    """Per-model SGD / Adam / AdamW over stacked parameters ``[M, ...]``.

    ``kinds`` names each model's optimizer; models of one kind must be contiguous rows (the
    trainer orders them so), and each kind updates its slice of the parameters in place.
    """

    def __init__(self, params: list[Tensor], kinds: list[str], lr: Tensor, weight_decay: Tensor,
                 momentum: Tensor, beta2: float = 0.999, eps: float = 1e-8):
        bad = sorted({k for k in kinds if k not in OPTIMIZERS})
        if bad:
            raise InputError(f"hparams.optimizer: unknown optimizer {bad[0]!r}; expected one of {list(OPTIMIZERS)}")
        self.groups: list[_KindGroup] = []
        start = 0
        while start < len(kinds):
            end = start
            while end < len(kinds) and kinds[end] == kinds[start]:
                end += 1
            if any(g.kind == kinds[start] for g in self.groups):
                raise InputError("models of one optimizer kind must be contiguous rows of the population")
            sl = slice(start, end)
            self.groups.append(_KindGroup(kinds[start], sl, [p.detach()[sl] for p in params], lr[sl], weight_decay[sl],
                                          momentum[sl], beta2, eps))
            start = end

    def step(self, grads: list[Tensor], active: Tensor, compile: bool = False) -> None:
        """One update of every active model; ``active`` is a bool [M]. ``compile``: run the update
        through torch.compile (``zoo.fused``), worth it for long runs of large populations."""
        for g in self.groups:
            g.step([gr[g.rows] for gr in grads], active[g.rows], compile=compile)

    def step_group(self, index: int, grads: list[Tensor], active: Tensor, compile: bool = False) -> None:
        """One update of the first ``len(active)`` models of kind group ``index`` (the trainer's
        models still inside their epoch): ``grads`` and ``active`` cover only those rows."""
        self.groups[index].step(grads, active, compile=compile)


class _KindGroup:
    """The models of one optimizer kind: views into the population's parameters."""

    def __init__(self, kind: str, rows: slice, params: list[Tensor], lr: Tensor, weight_decay: Tensor,
                 momentum: Tensor, beta2: float, eps: float):
        self.kind, self.rows, self.params = kind, rows, params
        dev = params[0].device
        self.lr = lr.to(dev, torch.float32)
        self.weight_decay = weight_decay.to(dev, torch.float32)
        self.momentum = momentum.to(dev, torch.float32)
        self.beta2, self.eps = beta2, eps
        self.step_count = torch.zeros(params[0].shape[0], device=dev, dtype=torch.float64)
        if kind == "sgd":
            self.buf = [torch.zeros_like(p) for p in params]
            self.scratch = [torch.empty_like(p) for p in params]  # the eager update's d_p
        else:
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: list[Tensor], active: Tensor, compile: bool = False) -> None:
        """Update the group's first ``len(active)`` models (all of them, or a prefix)."""
        k = len(active)
        if k > self.params[0].shape[0]:
            raise InputError(f"{k} models' gradients for an optimizer group of {self.params[0].shape[0]}")
        params, lr, wd, mom = [p[:k] for p in self.params], self.lr[:k], self.weight_decay[:k], self.momentum[:k]
        if self.kind == "sgd":
            _SGD(params, grads, [b[:k] for b in self.buf], lr, wd, mom, active,
                 None if compile else [d[:k] for d in self.scratch], compile=compile)
        else:
            _ADAM(params, grads, [m[:k] for m in self.exp_avg], [v[:k] for v in self.exp_avg_sq],
                  self.step_count[:k], lr, wd, mom, active, self.beta2, self.eps, self.kind == "adamw",
                  compile=compile)


def sgd_update(params: list[Tensor], grads: list[Tensor], buf: list[Tensor], lr: Tensor, weight_decay: Tensor,
               momentum: Tensor, active: Tensor, scratch: list[Tensor] | None = None) -> None:
    """``torch.optim.SGD``'s update (momentum, no dampening, L2 decay) per model, in place.
    ``scratch`` (tensors shaped as ``params``) holds the decayed gradients of an eager update:
    written into a kept buffer, that pass runs several times faster than into a fresh tensor."""
    a = active.to(torch.float32)
    lr, wd = lr * a, weight_decay * a
    mom = torch.where(active, momentum, torch.ones_like(momentum))
    for n, (p, g, b) in enumerate(zip(params, grads, buf)):
        shape = (-1,) + (1,) * (p.dim() - 1)
        d_p = torch.addcmul(g, p, wd.view(shape), out=None if scratch is None else scratch[n])
        b.mul_(mom.view(shape)).add_(d_p)
        p.addcmul_(b, lr.view(shape), value=-1.0)


def adam_update(params: list[Tensor], grads: list[Tensor], exp_avg: list[Tensor], exp_avg_sq: list[Tensor],
                step_count: Tensor, lr: Tensor, weight_decay: Tensor, beta1: Tensor, active: Tensor,
                beta2: float, eps: float, decoupled: bool) -> None:
    """``torch.optim.Adam`` (L2 decay) or ``AdamW`` (``decoupled``) per model, in place."""
    a = active.to(torch.float32)
    lr, wd = lr * a, weight_decay * a
    step_count += active.to(torch.float64)
    t = step_count.clamp_min(1)
    step_size = (lr.double() / (1 - beta1.double() ** t)).float()
    sqrt_bc2 = (1 - beta2 ** t).sqrt().float()
    keep1 = torch.where(active, beta1, torch.ones_like(beta1))
    keep2 = torch.where(active, torch.full_like(a, beta2), torch.ones_like(a))
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
        shape = (-1,) + (1,) * (p.dim() - 1)
        if decoupled:  # AdamW decays the parameter before the Adam step
            p.mul_(1 - (lr * wd).view(shape))
        else:
            g = torch.addcmul(g, p, wd.view(shape))
        m.mul_(keep1.view(shape)).addcmul_(g, (1 - beta1).view(shape))
        v.mul_(keep2.view(shape)).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / sqrt_bc2.view(shape)).add_(eps)
        p.sub_(m / denom * step_size.view(shape))


# Compiled where the trainers ask (large populations on the CPU): one fused loop per parameter
# instead of about ten small ops.
_SGD = FusedStep(sgd_update, "the SGD update")
_ADAM = FusedStep(adam_update, "the Adam update")
