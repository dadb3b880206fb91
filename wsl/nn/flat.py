"""The non-equivariant baseline: an MLP on the flattened weight vector.

It sees every parameter at a fixed position, so two networks that differ only by a hidden-neuron
permutation (the same function) look different to it; it is the reference the symmetry-aware
encoders should beat.
"""
from __future__ import annotations

from torch import Tensor

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.base import Encoder, mlp
from wsl.weights import WeightBatch


class FlatMLP(Encoder):
    """MLP on ``WeightBatch.flatten()`` (``[B, num_params]``) -> ``[B, out_dim]``."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 256, layers: int = 3,
                 dropout: float = 0.0):
        super().__init__(spec, out_dim)
        self.net = mlp(spec.num_params, hidden, out_dim, layers, dropout)

    def forward(self, wb: WeightBatch) -> Tensor:
        return self.net(wb.flatten())
