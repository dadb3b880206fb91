"""Invariant pooling of weight-shaped features.

Every tensor is averaged over its permutable (hidden-neuron) axes and keeps its fixed axes (the
network's inputs and outputs, and a convolution's kernel taps), which no symmetry moves; the
result is flattened and concatenated. Means commute with permutations, so the output is invariant
to hidden-neuron permutations of the input network whenever the features are equivariant.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightFeatures


class InvariantPool(nn.Module):
    """``WeightFeatures`` with ``channels`` channels -> ``[B, self.dim]``."""

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__()
        self.spec = spec
        perm = set(spec.permutable)
        self.weight_dims, self.bias_dims, dim = [], [], 0
        for layer in spec.layers:
            self.weight_dims.append(tuple(d for d, g in ((2, layer.out_group), (3, layer.in_group)) if g in perm))
            self.bias_dims.append((2,) if layer.out_group in perm else ())
            keep_o = 1 if layer.out_group in perm else layer.out_features
            keep_i = 1 if layer.in_group in perm else layer.in_features
            dim += channels * math.prod(layer.kernel) * keep_o * keep_i + channels * keep_o
        self.dim = dim

    def forward(self, feats: WeightFeatures) -> Tensor:
        out = []
        for w, b, dw, db in zip(feats.weights, feats.biases, self.weight_dims, self.bias_dims):
            out += [_mean(w, dw).flatten(1), _mean(b, db).flatten(1)]
        return torch.cat(out, 1)


def _mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """A mean as a sum times 1/n: its backward is a broadcast view, not a full-size division."""
    if not dims:
        return x
    return x.sum(dims) * (1.0 / math.prod(x.shape[d] for d in dims))
