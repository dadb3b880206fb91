"""The non-equivariant baseline: an MLP on the flattened weight vector.

It sees every parameter at a fixed position, so two networks that differ only by a hidden-neuron
permutation (the same function) look different to it; it is the reference the symmetry-aware
encoders should beat.
"""
from __future__ import annotations

from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch


def mlp(d_in: int, hidden: int, d_out: int, layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` linear maps with ReLU (and dropout) between them."""
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, found layers={layers}")
    dims = [d_in] + [hidden] * (layers - 1) + [d_out]
    mods: list[nn.Module] = []
    for k in range(layers):
        mods.append(nn.Linear(dims[k], dims[k + 1]))
        if k < layers - 1:
            mods += [nn.ReLU(), nn.Dropout(dropout)] if dropout > 0 else [nn.ReLU()]
    return nn.Sequential(*mods)


class FlatMLP(nn.Module):
    """MLP on ``WeightBatch.flatten()`` (``[B, num_params]``) -> ``[B, out_dim]``."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 256, layers: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.spec = spec
        self.net = mlp(spec.num_params, hidden, out_dim, layers, dropout)

    def forward(self, wb: WeightBatch) -> Tensor:
        return self.net(wb.flatten())
