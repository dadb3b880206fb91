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

from wsl.weights import WeightBatch

_LETTERS = "defghijklmnpqrstuvwxyz"  # einsum letters; b (batch), c (in channel), o (out channel) are taken


def check_mlp_spec(spec: WeightSpaceSpec) -> None:
    """DWSNet's blocks are derived for a chain of linear layers; refuse anything else clearly."""
    for layer in spec.layers:
        if layer.kind != "linear":
            raise ValueError(f"DWSNet supports MLP weight spaces only (linear layers); layer {layer.name!r} of "
                             f"{spec.architecture!r} is a {layer.kind!r} layer. Use the NG-GNN encoder ('ngnn') "
                             f"for convolutional weight spaces.")
    spec.check_chain("DWSNet")


def weight_space_tensors(spec: WeightSpaceSpec) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, axis groups)`` of every tensor of the weight space, in ``spec.params`` order."""
    out = []
    for layer in spec.layers:
        out.append((f"{layer.name}.weight", (layer.out_group, layer.in_group)))
        if layer.bias:
            out.append((f"{layer.name}.bias", (layer.out_group,)))
    return out


class DWSLayer(nn.Module):
    """Equivariant linear map of an MLP weight space with ``c_in`` channels to one with ``c_out``.

    ``forward(xs)`` takes and returns a list of tensors in ``weight_space_tensors(spec)`` order:
    weights ``[B, C, out, in]`` and biases ``[B, C, out]``.
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

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        if len(xs) != len(self.tensors):
            raise ValueError(f"DWSLayer expects {len(self.tensors)} tensors, found {len(xs)}")
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


class DWSNetEncoder(nn.Module):
    """DWS layers with ReLUs, then an invariant pooling head: ``WeightBatch -> [B, out_dim]``.

    The head averages every tensor over its hidden-neuron axes and keeps its fixed (input/output)
    axes, which no symmetry moves, then applies an MLP.
    """

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, channels: int = 16, layers: int = 3,
                 head_hidden: int = 256):
        super().__init__()
        check_mlp_spec(spec)
        self.spec = spec
        self.layers = nn.ModuleList(DWSLayer(spec, 1 if i == 0 else channels, channels) for i in range(layers))
        perm = set(spec.permutable)
        self.tensors = weight_space_tensors(spec)
        self.pool_dims = [tuple(2 + k for k, g in enumerate(axes) if g in perm) for _, axes in self.tensors]
        n_feat = 0
        for _, axes in self.tensors:
            f = channels
            for g in axes:
                if g not in perm:
                    f *= spec.groups[g]
            n_feat += f
        self.head = nn.Sequential(nn.Linear(n_feat, head_hidden), nn.ReLU(), nn.Linear(head_hidden, out_dim))

    def forward(self, wb: WeightBatch) -> Tensor:
        if wb.spec.to_json() != self.spec.to_json():
            raise ValueError(f"DWSNetEncoder was built for another weight space than the batch's "
                             f"{wb.spec.architecture!r}")
        xs = [t.unsqueeze(1) for t in wb.params()]  # one input channel
        for i, layer in enumerate(self.layers):
            xs = layer(xs)
            if i < len(self.layers) - 1:
                xs = [torch.relu(x) for x in xs]
        feats = [(x.mean(d) if d else x).flatten(1) for x, d in zip(xs, self.pool_dims)]
        return self.head(torch.cat(feats, 1))
