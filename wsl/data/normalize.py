"""Normalisation of weights and regression targets, stored as buffers so checkpoints carry it.

``WeightNormalizer`` maps every parameter tensor ``t`` to ``asinh(t / scale_t)`` with one scalar
``scale_t`` per tensor of the spec (``spec.params`` order). Why this form:

- a scalar per tensor, and no mean subtracted, commutes with the weight-space symmetries that
  learning on weights relies on: neuron permutations (any per-tensor scalar map does) and sign
  flips of tanh networks (``asinh`` is odd);
- the scale is the median over networks of each network's RMS of that tensor, so a few blown-up
  networks (weights around 1e5 and more appear in zoos with wide hyperparameter ranges) do not
  shrink everyone else's weights to zero, as a mean/std fit does;
- ``asinh`` is linear near zero and logarithmic far out, so those blown-up networks still give
  finite, moderate inputs, and it is exactly invertible (``scale * sinh``).

``WeightNormalizer(spec, per_parameter=True)`` standardises every parameter instead, with its own
mean and standard deviation over the training networks: for models on the flat vector of aligned
weights (diffusion generators on aligned or shared-initialisation zoos), where each parameter's
spread across networks, not its size, is what must be modelled (in a zoo of INRs fitted from one
shared initialisation the spread is 20-30% of the weights' size: the rest is the common init). It
does not commute with neuron permutations, so it is not for equivariant models.

``TargetNormalizer`` standardises a scalar regression target with mean and std of the training
split, so the predictor's loss is on a unit scale and predictions map back to the target's units.
It also keeps the smallest and largest training value (``observed_range``): what a generator saw,
against which ``wsl sample`` checks a request (checkpoints written before it have none).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch
from zoo.errors import InputError


def _weight_batches(data) -> Iterable[WeightBatch]:
    """A WeightBatch, or an iterable of WeightBatch or of (WeightBatch, ...) tuples (a loader)."""
    if isinstance(data, WeightBatch):
        yield data
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


class WeightNormalizer(nn.Module):
    """x -> asinh(x / scale) per parameter tensor; ``scale`` is a buffer fitted by ``fit``. With
    ``per_parameter``: x -> (x - mean) / std per parameter (flat, ``spec.num_params`` each)."""

    def __init__(self, spec: WeightSpaceSpec, per_parameter: bool = False):
        super().__init__()
        self.spec = spec
        self.register_buffer("scale", torch.ones(len(spec.params)))
        if per_parameter:  # the per-tensor form has no such buffers: its checkpoints hold "scale" only
            self.register_buffer("mean", torch.zeros(spec.num_params))
            self.register_buffer("std", torch.ones(spec.num_params))

    @property
    def per_parameter(self) -> bool:
        return "mean" in self._buffers

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Take the form of the state loaded: the per-parameter buffers come with a state that has
        them and go with one that has not."""
        has = prefix + "mean" in state_dict
        if has and not self.per_parameter:
            for name in ("mean", "std"):
                self.register_buffer(name, torch.empty_like(state_dict[prefix + name], device=self.scale.device))
        elif not has and self.per_parameter:
            del self._buffers["mean"], self._buffers["std"]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, data) -> "WeightNormalizer":
        """Set each tensor's scale to the median over networks of their RMS (non-finite and zero
        RMS ignored: an all-zero tensor, e.g. zero-initialised biases, must not give scale 0); per
        parameter also each parameter's mean and std over the networks with finite weights (a
        parameter that barely varies gets a std floor of 1e-3 of its tensor's scale). One pass."""
        # Python floats, not small tensors: kept between the batches' large temporaries, tensors would
        # pin the allocator's heap (glibc) and hold hundreds of MB of freed memory on a large zoo
        rms: list[list[float]] = [[] for _ in self.spec.params]
        total = torch.zeros(self.spec.num_params, dtype=torch.float64)
        square, count = torch.zeros_like(total), 0
        for wb in _weight_batches(data):
            self._check(wb)
            for k, t in enumerate(wb.params()):
                rms[k].extend(t.detach().flatten(1).double().pow(2).mean(1).sqrt().tolist())
            if self.per_parameter:
                flat = wb.flatten().detach().double().cpu()
                flat = flat[torch.isfinite(flat).all(1)]
                total, square, count = total + flat.sum(0), square + flat.pow(2).sum(0), count + len(flat)
        if not rms[0]:
            raise InputError("WeightNormalizer.fit: no weights given")
        scale = torch.ones(len(self.spec.params), dtype=torch.float64)
        for k, values in enumerate(rms):
            r = torch.tensor(values, dtype=torch.float64)
            r = r[torch.isfinite(r) & (r > 0)]
            if len(r):
                scale[k] = r.median()
        self.scale.copy_(scale.to(self.scale.dtype))
        if self.per_parameter:
            if count == 0:
                raise InputError("WeightNormalizer.fit: no network with finite weights for the per-parameter "
                                 "statistics")
            mean = total / count
            floor = torch.cat([torch.full((p.numel,), float(s) * 1e-3, dtype=torch.float64)
                               for p, s in zip(self.spec.params, scale)])
            std = (square / count - mean.pow(2)).clamp_min(0).sqrt().maximum(floor)
            self.mean.copy_(mean.to(self.mean.dtype))
            self.std.copy_(std.to(self.std.dtype))
        return self

    def _check(self, wb: WeightBatch) -> None:
        if len(wb.spec.params) != len(self.scale):
            raise InputError(f"WeightNormalizer has {len(self.scale)} parameter tensors "
                             f"({self.spec.param_names}), the batch {len(wb.spec.params)}")

    def forward(self, wb: WeightBatch, squash: bool = True) -> WeightBatch:
        """The normalized weights; ``squash=False``: divided by the per-tensor scale only (no asinh),
        a map that commutes with positive rescalings of neurons too (ReLU's symmetry)."""
        self._check(wb)
        if self.per_parameter:
            flat = wb.flatten()
            return WeightBatch.from_flat(wb.spec, (flat - self.mean.to(flat.dtype)) / self.std.to(flat.dtype))
        squash_fn = torch.asinh if squash else (lambda t: t)
        out = [squash_fn(t / s.to(t.dtype)) for t, s in zip(wb.params(), self.scale)]
        return WeightBatch.from_params(wb.spec, out)

    def inverse(self, wb: WeightBatch) -> WeightBatch:
        self._check(wb)
        if self.per_parameter:
            flat = wb.flatten()
            return WeightBatch.from_flat(wb.spec, flat * self.std.to(flat.dtype) + self.mean.to(flat.dtype))
        out = [torch.sinh(t) * s.to(t.dtype) for t, s in zip(wb.params(), self.scale)]
        return WeightBatch.from_params(wb.spec, out)

    def extra_repr(self) -> str:
        return ("per parameter, " if self.per_parameter else "") + "scale=[" + \
            ", ".join(f"{s:.3g}" for s in self.scale.tolist()) + "]"


class TargetNormalizer(nn.Module):
    """y -> (y - mean) / std for a scalar regression target (``columns=0``) or per column of
    ``[N, columns]`` values (a generator's conditions); buffers fitted on the training split, with
    the training values' ``low`` and ``high`` (registered by ``fit``, or by loading a state that has them)."""

    def __init__(self, columns: int = 0):
        super().__init__()
        shape = (int(columns),) if columns else ()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Take the range buffers with a state that has them (states written before them have none)."""
        has = prefix + "low" in state_dict
        for name in ("low", "high"):
            if has and name not in self._buffers:
                self.register_buffer(name, torch.empty_like(state_dict[prefix + name], device=self.mean.device))
            elif not has and name in self._buffers:
                del self._buffers[name]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def observed_range(self) -> tuple[Tensor, Tensor] | None:
        """(lowest, highest) finite training value (per column), or None when not recorded."""
        return (self.low, self.high) if "low" in self._buffers else None

    @torch.no_grad()
    def fit(self, y: Tensor) -> "TargetNormalizer":
        """Mean, std and range of the finite values (per column); a constant column keeps std 1 (no
        division by 0)."""
        y = torch.as_tensor(y).detach().double()
        y = y.reshape(-1, *self.mean.shape)
        mean = torch.zeros(self.mean.shape, dtype=torch.float64)
        std = torch.ones(self.mean.shape, dtype=torch.float64)
        low, high = torch.zeros_like(mean), torch.zeros_like(mean)
        for k, col in enumerate(y.reshape(len(y), -1).T):
            col = col[torch.isfinite(col)]
            if not len(col):
                raise InputError("TargetNormalizer.fit: no finite target values"
                                 + (f" in column {k}" if self.mean.dim() else ""))
            m, sd = col.mean(), col.std(unbiased=False)
            mean.view(-1)[k], low.view(-1)[k], high.view(-1)[k] = m, col.min(), col.max()
            if sd > 1e-12 * max(1.0, abs(m.item())):
                std.view(-1)[k] = sd
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.register_buffer("low", low.to(self.mean))
        self.register_buffer("high", high.to(self.mean))
        return self

    def forward(self, y: Tensor) -> Tensor:
        return (y - self.mean.to(y.dtype)) / self.std.to(y.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    def extra_repr(self) -> str:
        fmt = lambda t: f"{t.item():.4g}" if t.dim() == 0 else "[" + ", ".join(f"{v:.4g}" for v in t.tolist()) + "]"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"
