"""What a hypernetwork is conditioned on, as vectors: hyperparameters (ranges from a zoo config) and
integer labels (a task index, an INR's class).

Hyperparameters are mapped to a unit value ``u`` in [0, 1] over their range, on a log scale where
the zoo samples them log-uniformly, so that sampling ``u`` uniformly draws λ as the zoo draws it
(Lorraine & Duvenaud train over such a distribution of λ). The encoding is either plain
(``2u - 1``) or magnitude-invariant (Ortiz et al. 2024, MIP): ``[cos(πu/2), sin(πu/2)]`` per
hyperparameter, a point on the unit circle, so every input has the same norm whatever λ is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.config import HPARAMS
from zoo.errors import InputError

# Hyperparameters whose effect the functional loss can reproduce (the learning rate has no meaning
# without an optimizer training the emitted network; structural ones are not numbers).
FUNCTIONAL_HPARAMS = ("weight_decay", "dropout", "label_noise", "data_fraction")
# Functional conditions the loss applies but the emitted networks do not follow as trained ones do:
# one emitter learns from every example and every clean label across all λ, so a network emitted at
# a small data fraction or a high label noise is far better than one trained there (digits grid:
# 0.96 at label noise 0.4 against 0.81 trained). Distillation from a zoo (signal: outputs) emulates them.
LEAKING_HPARAMS = ("label_noise", "data_fraction")


@dataclass(frozen=True)
class HparamRange:
    name: str
    low: float
    high: float
    log: bool

    def to_unit(self, v: Tensor) -> Tensor:
        if self.high == self.low:
            return torch.zeros_like(v)
        if self.log:
            return (v.clamp_min(1e-30).log() - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def from_unit(self, u: Tensor) -> Tensor:
        if self.log:
            return torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log}


def hparam_range(config_hparams: dict[str, Any], name: str, source: str = "config") -> HparamRange:
    """The range of hyperparameter ``name`` in a (normalised) zoo config's hparam space: a
    uniform or log-uniform range as given; a grid or choice of numbers from its least to its
    largest value, on a log scale when all are positive and span a factor of 10 or more."""
    if name not in config_hparams:
        raise InputError(f"{source}: {name!r} is not a hyperparameter of the config; expected some of "
                         f"{sorted(config_hparams)}")
    space = config_hparams[name]
    if not isinstance(space, dict):
        raise InputError(f"{source}: hyperparameter {name!r} is fixed to {space!r}; conditioning on it needs a range")
    sampler, args = next(iter(space.items()))
    if HPARAMS[name][1] not in ("float", "int") or not all(isinstance(a, (int, float)) for a in args):
        raise InputError(f"{source}: hyperparameter {name!r} ({sampler} {args}) is not numeric")
    if sampler in ("uniform", "int_uniform"):
        return HparamRange(name, float(args[0]), float(args[1]), False)
    if sampler == "log_uniform":
        return HparamRange(name, float(args[0]), float(args[1]), True)
    lo, hi = float(min(args)), float(max(args))
    return HparamRange(name, lo, hi, lo > 0 and hi / lo >= 10)


class HparamEncoder(nn.Module):
    """λ (in their own units, ``[B, K]``) -> the hypernetwork's input ``[B, K]`` (plain) or ``[B, 2K]`` (MIP)."""

    def __init__(self, ranges: list[dict[str, Any]], mip: bool = False):
        super().__init__()
        self.ranges = [HparamRange(**r) for r in ranges]
        self.mip = bool(mip)
        self.out_dim = len(self.ranges) * (2 if mip else 1)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.ranges]

    def to_unit(self, values: Tensor) -> Tensor:
        self._check(values)
        if not self.ranges:
            return values[:, :0]
        return torch.stack([r.to_unit(values[:, k]) for k, r in enumerate(self.ranges)], 1)

    def from_unit(self, u: Tensor) -> Tensor:
        if not self.ranges:
            return u[:, :0]
        return torch.stack([r.from_unit(u[:, k]) for k, r in enumerate(self.ranges)], 1)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """``n`` λ drawn as the zoo draws them (uniform in each range's unit value)."""
        u = torch.rand(n, len(self.ranges), generator=generator)
        return self.from_unit(u.to(device) if device is not None else u)

    def encode_unit(self, u: Tensor) -> Tensor:
        if self.mip:
            angle = u * (math.pi / 2)
            return torch.cat([torch.cos(angle), torch.sin(angle)], 1)
        return 2 * u - 1

    def forward(self, values: Tensor) -> Tensor:
        return self.encode_unit(self.to_unit(values))

    def _check(self, values: Tensor) -> None:
        if values.dim() != 2 or values.shape[1] != len(self.ranges):
            raise InputError(f"hyperparameters: expected [B, {len(self.ranges)}] values of {self.names}, "
                             f"found {list(values.shape)}")


class LabelEncoder(nn.Module):
    """Integer labels (a class, a task index) ``[B]`` -> learned embeddings ``[B, dim]``; with MIP,
    the embeddings are projected onto the unit sphere (constant norm, as MIP asks of inputs)."""

    def __init__(self, num_labels: int, dim: int = 32, mip: bool = False):
        super().__init__()
        if num_labels < 1:
            raise InputError(f"num_labels must be >= 1, found {num_labels}")
        self.num_labels, self.mip, self.out_dim = int(num_labels), bool(mip), int(dim)
        self.table = nn.Embedding(num_labels, dim)

    def forward(self, labels: Tensor) -> Tensor:
        labels = labels.long().reshape(-1)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
            raise InputError(f"labels must lie in [0, {self.num_labels}), found {int(labels.min())}..{int(labels.max())}")
        e = self.table(labels)
        return nn.functional.normalize(e, dim=1) if self.mip else e
