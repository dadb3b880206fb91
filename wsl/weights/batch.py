"""Batched weights: a batch of networks of one weight space, as per-layer tensors.

``WeightBatch`` holds, for every layer of ``spec.layers``, a weight tensor ``[B, out, in, *kernel]``
and a bias tensor ``[B, out]`` (or ``None`` for a layer without bias). It converts to and from

- the stacked parameter list of the population trainer and of ``zoo.functional.population_forward``
  (``spec.params`` order),
- a zoo batch (``{"layers.0.weight": [B, ...], ...}``) and single ``state_dict``s, by the spec's
  explicit names, never key order,
- a flat vector ``[B, P]`` (``spec.params`` order, each tensor row-major).

The neural-graph form lives in ``wsl.weights.graph``; weight-shaped features with channels, the
form equivariant layers take, in ``wsl.weights.features`` (``features()`` lifts a batch to it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from zoo.weight_space import WeightSpaceSpec

from .features import WeightFeatures
from zoo.errors import InputError


@dataclass
class WeightBatch:
    spec: WeightSpaceSpec
    weights: list[Tensor]  # per layer [B, out, in, *kernel]
    biases: list[Tensor | None]  # per layer [B, out]
    # per-network activation names, for weight spaces whose activation varies per model (the spec's
    # is None); only encoders that run the networks need it (``wsl.nn.probe``)
    activation: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.spec.layers) or len(self.biases) != len(self.spec.layers):
            raise InputError(f"expected {len(self.spec.layers)} layers, found {len(self.weights)} weights "
                             f"and {len(self.biases)} biases")
        B = self.weights[0].shape[0]
        if self.activation is not None and len(self.activation) != B:
            raise InputError(f"activation: {len(self.activation)} names for {B} networks")
        for layer, w, b in zip(self.spec.layers, self.weights, self.biases):
            if tuple(w.shape[1:]) != layer.weight.shape or w.shape[0] != B:
                raise InputError(f"{layer.name}.weight: expected [{B}, {', '.join(map(str, layer.weight.shape))}], "
                                 f"found {list(w.shape)}")
            if (b is None) != (not layer.bias):
                raise InputError(f"{layer.name}.bias: expected {'a tensor' if layer.bias else 'None'}")
            if b is not None and tuple(b.shape) != (B, layer.out_features):
                raise InputError(f"{layer.name}.bias: expected [{B}, {layer.out_features}], found {list(b.shape)}")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_params(cls, spec: WeightSpaceSpec, params: list[Tensor] | Mapping[str, Tensor]) -> "WeightBatch":
        """From stacked parameters: a list in ``spec.params`` order or a name -> tensor mapping
        (a zoo batch). Mappings are checked against the spec's names and shapes."""
        if isinstance(params, Mapping):
            spec.check_state_dict({k: v[0] for k, v in params.items()}, "weights")
            params = [params[p.name] for p in spec.params]
        it = iter(params)
        weights, biases = [], []
        for layer in spec.layers:
            weights.append(next(it))
            biases.append(next(it) if layer.bias else None)
        return cls(spec, weights, biases)

    @classmethod
    def from_state_dicts(cls, spec: WeightSpaceSpec, state_dicts: list[Mapping[str, Tensor]],
                         source: str = "state_dict") -> "WeightBatch":
        """Stack plain ``state_dict``s (each checked: missing, unexpected or mis-shaped names raise)."""
        for k, sd in enumerate(state_dicts):
            spec.check_state_dict(sd, f"{source} {k}" if len(state_dicts) > 1 else source)
        return cls.from_params(spec, [torch.stack([sd[p.name] for sd in state_dicts]).float() for p in spec.params])

    @classmethod
    def from_flat(cls, spec: WeightSpaceSpec, flat: Tensor) -> "WeightBatch":
        if flat.dim() != 2 or flat.shape[1] != spec.num_params:
            raise InputError(f"flat weights must be [B, {spec.num_params}], found {list(flat.shape)}")
        parts, s = [], 0
        for p in spec.params:
            parts.append(flat[:, s:s + p.numel].reshape(-1, *p.shape))
            s += p.numel
        return cls.from_params(spec, parts)

    # --- conversion ---------------------------------------------------------------------------
    def params(self) -> list[Tensor]:
        """Stacked parameters in ``spec.params`` order (the population trainer's form)."""
        out = []
        for w, b in zip(self.weights, self.biases):
            out.append(w)
            if b is not None:
                out.append(b)
        return out

    def to_dict(self) -> dict[str, Tensor]:
        """name -> [B, *shape], the zoo's batch form."""
        return {p.name: t for p, t in zip(self.spec.params, self.params())}

    def state_dict(self, i: int) -> dict[str, Tensor]:
        """Network ``i`` as a ``state_dict`` for ``zoo.architectures.TorchNet(spec)``."""
        return {p.name: t[i] for p, t in zip(self.spec.params, self.params())}

    def flatten(self) -> Tensor:
        return torch.cat([t.flatten(1) for t in self.params()], 1)

    def features(self) -> WeightFeatures:
        """The one-channel weight-shaped features that equivariant layers take (zeros for the
        neurons of a layer without bias)."""
        return WeightFeatures(self.spec, [w.unsqueeze(1) for w in self.weights],
                              [w.new_zeros(w.shape[0], 1, w.shape[1]) if b is None else b.unsqueeze(1)
                               for w, b in zip(self.weights, self.biases)])

    # --- tensor plumbing ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def map(self, fn) -> "WeightBatch":
        """Apply ``fn`` to every tensor."""
        return WeightBatch(self.spec, [fn(w) for w in self.weights], [None if b is None else fn(b) for b in self.biases],
                           self.activation)

    def to(self, *args, **kwargs) -> "WeightBatch":
        return self.map(lambda t: t.to(*args, **kwargs))

    def __getitem__(self, idx) -> "WeightBatch":
        """Select networks (an int keeps the batch axis)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        out = WeightBatch(self.spec, *[[None if t is None else t[idx] for t in ts] for ts in (self.weights, self.biases)])
        if self.activation is not None:
            keep = torch.arange(len(self))[idx.cpu() if torch.is_tensor(idx) else idx].reshape(-1).tolist()
            out.activation = [self.activation[i] for i in keep]
        return out

    @staticmethod
    def cat(batches: list["WeightBatch"]) -> "WeightBatch":
        spec = batches[0].spec
        out = WeightBatch.from_params(spec, [torch.cat(ts) for ts in zip(*[b.params() for b in batches])])
        if all(b.activation is not None for b in batches):
            out.activation = [a for b in batches for a in b.activation]
        return out
