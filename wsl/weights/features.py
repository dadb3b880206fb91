"""Weight-shaped features: what every equivariant layer takes and returns.

A ``WeightFeatures`` holds, for every layer of a weight space, a weight-shaped tensor
``[B, C, out, in, *kernel]`` and a neuron-shaped tensor ``[B, C, out]``: ``C`` channels per weight
and per neuron. A batch of weights is its one-channel case (``WeightBatch.features()`` lifts it,
``WeightFeatures.to_weights()`` reads it back), so a map from weights to weights is a stack of
equivariant layers from one channel to one channel, and layers compose in ``nn.Sequential``.

Every layer has a neuron tensor, also a layer without bias: after the first equivariant layer its
neurons carry features (a bias-free layer's input is lifted as zeros, and ``to_weights`` drops them
again), so all layers' outputs have one shape rule.

Layers that compute channels last (the NFN layers) read and write through ``channels_last`` and
``from_channels_last``: the channels-first tensors they return are views of channels-last storage,
so a stack of such layers never copies between the two layouts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError


@dataclass
class WeightFeatures:
    spec: WeightSpaceSpec
    weights: list[Tensor]  # per layer [B, C, out, in, *kernel]
    biases: list[Tensor]  # per layer [B, C, out]

    def __post_init__(self) -> None:
        L = len(self.spec.layers)
        if len(self.weights) != L or len(self.biases) != L:
            raise InputError(f"weight features: expected {L} layers, found {len(self.weights)} weight and "
                             f"{len(self.biases)} neuron tensors")
        B, C = self.weights[0].shape[:2]
        for layer, w, b in zip(self.spec.layers, self.weights, self.biases):
            if tuple(w.shape) != (B, C, *layer.weight.shape):
                raise InputError(f"{layer.name}: weight features must be [{B}, {C}, "
                                 f"{', '.join(map(str, layer.weight.shape))}], found {list(w.shape)}")
            if b is None or tuple(b.shape) != (B, C, layer.out_features):
                raise InputError(f"{layer.name}: neuron features must be [{B}, {C}, {layer.out_features}], "
                                 f"found {None if b is None else list(b.shape)}")

    @property
    def channels(self) -> int:
        return self.weights[0].shape[1]

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def to_weights(self):
        """The one-channel case as a ``WeightBatch`` (neuron features of bias-free layers dropped)."""
        from .batch import WeightBatch

        if self.channels != 1:
            raise InputError(f"weight features with {self.channels} channels are not weights; map them to one "
                             f"channel first (a backbone with out_channels=1)")
        return WeightBatch(self.spec, [w[:, 0] for w in self.weights],
                           [b[:, 0] if layer.bias else None for layer, b in zip(self.spec.layers, self.biases)])

    def map(self, fn: Callable[[Tensor], Tensor]) -> "WeightFeatures":
        """Apply ``fn`` to every tensor (a pointwise nonlinearity keeps equivariance)."""
        return WeightFeatures(self.spec, [fn(w) for w in self.weights], [fn(b) for b in self.biases])

    def channels_last(self) -> tuple[list[Tensor], list[Tensor]]:
        """``[B, out, in, C * taps]`` (channel-major, taps minor) and ``[B, out, C]`` per layer."""
        return ([w.movedim(1, 3).flatten(3) for w in self.weights], [b.transpose(1, 2) for b in self.biases])

    @classmethod
    def from_channels_last(cls, spec: WeightSpaceSpec, weights: list[Tensor],
                           biases: list[Tensor]) -> "WeightFeatures":
        """The inverse of ``channels_last``: views, no copies."""
        out_w = []
        for layer, w in zip(spec.layers, weights):
            taps = math.prod(layer.kernel)
            out_w.append(w.view(*w.shape[:3], w.shape[3] // taps, *layer.kernel).movedim(3, 1))
        return cls(spec, out_w, [b.transpose(1, 2) for b in biases])
