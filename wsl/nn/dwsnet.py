"""DWSNet (Navon et al. 2023, "Equivariant Architectures for Learning in Deep Weight Spaces"),
for MLP weight spaces.

The weight space of an MLP with neuron groups ``d_0 .. d_M`` is the direct sum of the weights
``W_m [d_m, d_{m-1}]`` and biases ``b_m [d_m]``, each with ``C`` channels. The hidden groups
``d_1 .. d_{M-1}`` are permuted by the symmetry; the input ``d_0`` and the output ``d_M`` are not.
``DWSLayer`` is a linear map of this space to itself that commutes with every hidden permutation,
built block by block: one block for every pair (source tensor T, target tensor U) among all weights
and biases, including weight-to-weight, bias-to-weight, weight-to-bias and bias-to-bias blocks of
the same, adjacent and distant layers.

A block is a sum of terms, one for each way of treating the groups that T and U share: *keep* the
index (the term acts index-wise, out[.., i, ..] from in[.., i, ..]) or *pool* it (mean over T's index,
broadcast along U's). Groups of T that U lacks are pooled, groups of U that T lacks are broadcast.
For ``W_m -> W_m`` this gives the paper's four terms (elementwise, row pooled, column pooled, fully
pooled); for ``W_m -> W_{m+1}`` the shared neuron group is kept and the other axes pooled /
broadcast; for distant layers only the fully pooled term is left. Permutations commute with means,
broadcasts and index-wise maps, hence the layer is equivariant, and these terms span every
equivariant map on the permuted axes.

Fixed axes are not permuted, so their parameters are per index: a pooled fixed axis of T is a
learned per-index weighted sum (not a mean), a broadcast fixed axis of U gets a per-index weight, and a
kept fixed axis gets a per-index (diagonal) weight. On a fixed axis shared by T and U this spans
"diagonal + rank one" rather than a full ``d x d`` matrix, which would cost ``C^2 d_0^2`` parameters
(160M for MNIST inputs at 16 channels).
"""
from __future__ import annotations

from itertools import product

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.base import Backbone, PooledEncoder, mlp, weight_encoding
from wsl.nn.pool import InvariantPool
from wsl.weights import WeightFeatures
from zoo.errors import InputError

_LETTERS = "defghijklmnpqrstuvwxyz"  # einsum letters; b (batch), c (in channel), o (out channel) are taken


def check_mlp_spec(spec: WeightSpaceSpec) -> None:
    """DWSNet's blocks are derived for a chain of linear layers; refuse anything else clearly."""
    for layer in spec.layers:
        if layer.kind != "linear":
            raise InputError(f"DWSNet supports MLP weight spaces only (linear layers); layer {layer.name!r} of "
                             f"{spec.architecture!r} is a {layer.kind!r} layer. Use the NG-GNN encoder ('ngnn') "
                             f"for convolutional weight spaces.")
    spec.check_chain("DWSNet")


def weight_space_tensors(spec: WeightSpaceSpec) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, axis groups)`` of every feature tensor, layer by layer: weights, then neurons (a
    layer without bias has neuron features too, see ``wsl.weights.features``)."""
    out = []
    for layer in spec.layers:
        out += [(f"{layer.name}.weight", (layer.out_group, layer.in_group)), (f"{layer.name}.bias", (layer.out_group,))]
    return out


class DWSLayer(nn.Module):
    """Equivariant linear map of MLP weight features with ``c_in`` channels to ``c_out`` channels.

    ``forward`` takes and returns ``WeightFeatures``; ``forward_tensors`` works on the list of
    tensors in ``weight_space_tensors(spec)`` order: weights ``[B, C, out, in]``, biases ``[B, C, out]``.
    """

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int):
        super().__init__()
        check_mlp_spec(spec)
        self.spec, self.c_in, self.c_out = spec, c_in, c_out
        self.tensors = weight_space_tensors(spec)
        size, perm = spec.groups, set(spec.permutable)
        # terms[u] = list of (t, dims to mean over, einsum equation, broadcast view of the result)
        self.terms: list[list[tuple[int, tuple[int, ...], str, tuple[int, ...]]]] = []
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for u, (_, axes_u) in enumerate(self.tensors):
            plans = []
            for t, (_, axes_t) in enumerate(self.tensors):
                shared = [g for g in axes_t if g in axes_u]
                for keep in product((True, False), repeat=len(shared)):
                    kept = {g for g, k in zip(shared, keep) if k}
                    plans.append((t, *self._plan(axes_t, axes_u, kept, size, perm)))
            self.terms.append([(t, mean_dims, eq, view) for t, mean_dims, eq, view, _, _ in plans])
            for t, _, _, _, shape, fan in plans:
                # Every target sums len(plans) terms: scale so each target starts with unit-order variance.
                std = (2.0 / (c_in * fan * len(plans))) ** 0.5
                self.weights.append(nn.Parameter(torch.randn(shape) * std))
            self.biases.append(nn.Parameter(torch.zeros(c_out, *[size[g] if g not in perm else 1 for g in axes_u])))

    def _plan(self, axes_t, axes_u, kept, size, perm):
        """One term: which axes of T are averaged, the einsum with its parameter, and how it broadcasts."""
        letters = iter(_LETTERS)
        shared_l = {g: next(letters) for g in kept}
        x_l, p_l, out_l = "bc", "oc", "bo"
        shape, mean_dims, view, fan = [self.c_out, self.c_in], [], [-1, self.c_out], 1
        for k, g in enumerate(axes_t):
            if g in kept:
                x_l += shared_l[g]
                if g not in perm:  # kept fixed axis: per-index (diagonal) parameter
                    p_l += shared_l[g]
                    shape.append(size[g])
            elif g in perm:
                mean_dims.append(2 + k)
            else:  # pooled fixed axis: learned per-index weighted sum
                letter = next(letters)
                x_l += letter
                p_l += letter
                shape.append(size[g])
                fan *= size[g]
        for g in axes_u:
            if g in kept:
                out_l += shared_l[g]
                view.append(size[g])
            elif g not in perm and g not in axes_t:  # broadcast fixed axis: per-index parameter
                letter = next(letters)
                out_l += letter
                p_l += letter
                shape.append(size[g])
                view.append(size[g])
            else:  # broadcast uniformly (permuted axis, or a fixed axis T already contracted)
                view.append(1)
        return tuple(mean_dims), f"{x_l},{p_l}->{out_l}", tuple(view), tuple(shape), fan

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        if feats.channels != self.c_in:
            raise InputError(f"DWSLayer takes {self.c_in} channels, found {feats.channels}")
        xs = [t for pair in zip(feats.weights, feats.biases) for t in pair]
        ys = self.forward_tensors(xs)
        return WeightFeatures(self.spec, ys[0::2], ys[1::2])

    def forward_tensors(self, xs: list[Tensor]) -> list[Tensor]:
        if len(xs) != len(self.tensors):
            raise InputError(f"DWSLayer expects {len(self.tensors)} tensors, found {len(xs)}")
        means: dict[tuple[int, tuple[int, ...]], Tensor] = {}  # shared reductions, computed once per call
        outs, p = [], 0
        for u, terms in enumerate(self.terms):
            acc = self.biases[u].unsqueeze(0)
            for t, mean_dims, eq, view in terms:
                key = (t, mean_dims)
                if key not in means:
                    means[key] = xs[t].mean(mean_dims) if mean_dims else xs[t]
                acc = acc + torch.einsum(eq, means[key], self.weights[p]).reshape(view)
                p += 1
            outs.append(acc)
        return outs


class DWSBackbone(Backbone):
    """DWS layers with ReLUs between them (see ``wsl.nn.base.Backbone`` for ``out_channels``)."""

    def __init__(self, spec: WeightSpaceSpec, in_channels: int = 1, channels: int = 16, layers: int = 3,
                 out_channels: int | None = None):
        check_mlp_spec(spec)
        super().__init__(lambda c_in, c_out: DWSLayer(spec, c_in, c_out), in_channels, channels, layers, out_channels)


class DWSNetEncoder(PooledEncoder):
    """DWS layers with ReLUs -> invariant pool (hidden axes averaged, input/output axes kept) -> MLP.
    ``fourier`` > 0 encodes every weight by random Fourier features first (``wsl.nn.base``)."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, channels: int = 16, layers: int = 3,
                 head_hidden: int = 256, fourier: int = 0, fourier_scale: float = 1.0):
        check_mlp_spec(spec)
        pool = InvariantPool(spec, channels)
        encode, c_in = weight_encoding(fourier, fourier_scale)
        super().__init__(spec, out_dim, DWSBackbone(spec, c_in, channels, layers), pool,
                         mlp(pool.dim, head_hidden, out_dim, 2), encode)
