"""Neural Functional Networks (Zhou et al. 2023, "Permutation Equivariant Neural Functionals").

An NFN maps a network's weights through linear layers that commute with permutations of hidden
neurons (NF-Layers), pointwise ReLUs, and an invariant pooling, so its output does not depend on
the arbitrary order of hidden neurons.

Features (``WeightFeatures``): layer ``i`` has weight features ``W_i [B, C*t_i, n_out, n_in]`` and
bias features ``b_i [B, C, n_out]``; a convolution's ``t_i`` kernel taps are folded into channels
(they are fixed axes). Axes are labelled by the spec's neuron groups, so the layers work on MLPs
and CNNs alike (a CNN's linear head reads the last conv group, labelled with the same group).

Both NF-Layers write every output tensor as a sum of terms. A term takes a *piece* of one input
tensor, mixes its channels with a learned matrix and broadcasts it along the output axes it lacks.
The pieces of layer ``s`` are ``W_s[j,k]``, its row summary ``W_s[j,*]``, column summary
``W_s[*,k]``, full summary ``W_s[*,*]``, ``b_s[j]`` and ``b_s[*]``; a piece feeds an output
tensor when its axes are a subset of the output's axes. With ``*`` a mean this gives, for
``W'_i[j,k]``: ``W_i[j,k]``, ``W_i[j,*]``, ``W_i[*,k]``, ``b_i[j]``, ``W_{i-1}[k,*]``,
``b_{i-1}[k]``, ``W_{i+1}[*,j]`` and full summaries; for ``b'_i[j]``: ``b_i[j]``, ``W_i[j,*]``,
``W_{i+1}[*,j]`` and full summaries. Means commute with permutations and broadcasts do too, so
every term is equivariant.

- ``NPLinear`` is the paper's NP layer: every neuron axis, the network's inputs and outputs too, is
  treated as permutable (shared weights, means), full summaries come from *all* layers, and a learned
  per-index bias along the fixed input/output axes (the paper's I/O embedding) tells the fixed
  neurons apart, so the layer is equivariant to hidden permutations only.
- ``HNPLinear`` is the HNP layer: only hidden neurons permute, terms come from the same and adjacent
  layers, and fixed axes get per-index (unshared) weights: a summary over a fixed axis reads every
  index with its own weights (the axis is folded into channels, not averaged), a term that keeps a
  fixed axis has one channel-mixing matrix per index, and the bias is per index. On a fixed axis the
  map is "diagonal + read-out", not the full ``n x n`` mixing of the paper's derivation, which costs
  ``C^2 n^2`` parameters (630M per term for 784 inputs at 32 channels); parameters here are
  ``O(C^2 n)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from ..weights import WeightBatch


@dataclass
class WeightFeatures:
    """Per-layer feature tensors of a batch of networks: what flows between NF-Layers."""

    weights: list[Tensor]  # per layer [B, C * taps, out, in]
    biases: list[Tensor]  # per layer [B, C, out]

    @classmethod
    def lift(cls, wb: WeightBatch) -> "WeightFeatures":
        """One channel per weight (times the kernel taps); a layer without bias gets zero features."""
        weights, biases = [], []
        for w, b in zip(wb.weights, wb.biases):
            B, n_out, n_in = w.shape[:3]
            weights.append(w.reshape(B, n_out, n_in, -1).permute(0, 3, 1, 2))  # taps -> channels
            biases.append(w.new_zeros(B, 1, n_out) if b is None else b.unsqueeze(1))
        return cls(weights, biases)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "WeightFeatures":
        return WeightFeatures([fn(w) for w in self.weights], [fn(b) for b in self.biases])


def check_chain(spec: WeightSpaceSpec) -> None:
    """The layers' terms assume each layer reads the group the previous one writes, with distinct groups."""
    for prev, layer in zip(spec.layers, spec.layers[1:]):
        if layer.in_group != prev.out_group:
            raise ValueError(f"NFN needs a chain of layers: {layer.name!r} reads group {layer.in_group!r} "
                             f"but {prev.name!r} writes {prev.out_group!r}")
    groups = [spec.layers[0].in_group] + [l.out_group for l in spec.layers]
    if len(set(groups)) != len(groups):
        raise ValueError(f"NFN needs distinct neuron groups along the chain, found {groups}")


def _taps(spec: WeightSpaceSpec) -> list[int]:
    return [math.prod(layer.kernel) for layer in spec.layers]


def _mix(x: Tensor, w: Tensor, kept: list[int]) -> Tensor:
    """Channel mixing ``x [B, C, *axes] -> [B, O, *axes]`` with ``w [*sizes of kept axes, O, C]``:
    one ``O x C`` matrix, or one per index of the neuron axes listed in ``kept``. Written as plain
    (batched) matmuls, several times faster on CPU than the equivalent ``einsum``."""
    B, C, axes = x.shape[0], x.shape[1], x.shape[2:]
    O = w.shape[-2]
    if not kept:
        return (w @ x.reshape(B, C, -1)).view(B, O, *axes)
    kept_dims = [2 + k for k in kept]
    rest_dims = [d for d in range(2, x.dim()) if d not in kept_dims]
    order = kept_dims + [1, 0] + rest_dims  # [*K, C, B, *rest]: one matmul per kept index
    xk = x.permute(order)
    K = xk.shape[:len(kept)]
    z = (w.reshape(-1, O, C) @ xk.reshape(math.prod(K), C, -1)).view(*K, O, *xk.shape[len(kept) + 1:])
    return z.permute([order.index(d) for d in range(x.dim())])


class _NFLinear(nn.Module):
    """Shared machinery of the NP and HNP layers (see the module docstring).

    ``per_index``: fixed axes get per-index weights (HNP) instead of shared weights and means (NP).
    ``global_summaries``: full summaries of every layer feed every tensor (NP), not just adjacent ones.
    """

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int, per_index: bool, global_summaries: bool):
        super().__init__()
        check_chain(spec)
        self.spec, self.c_in, self.c_out = spec, c_in, c_out
        self.fixed = {g: g not in spec.permutable for g in spec.groups}
        self.per_index = per_index
        taps = _taps(spec)
        L = len(spec.layers)

        # pieces[s]: name -> (axes, channels) of layer s's pieces; computed the same way in _pieces
        self.piece_meta = []
        for s, layer in enumerate(spec.layers):
            o, i, ct = layer.out_group, layer.in_group, c_in * taps[s]
            self.piece_meta.append({
                "W": ((o, i), ct),
                "row": ((o,), ct * self._fold(i)),
                "col": ((i,), ct * self._fold(o)),
                "full": ((), ct * self._fold(i) * self._fold(o)),
                "b": ((o,), c_in),
                "bsum": ((), c_in * self._fold(o)),
            })

        # targets: every output tensor, with its terms grouped by the axes of their pieces
        self.targets = []
        self.mix = nn.ParameterList()
        self.bias = nn.ParameterList()
        for i, layer in enumerate(spec.layers):
            o, n = layer.out_group, layer.in_group
            for kind, axes, channels in (("W", (o, n), c_out * taps[i]), ("b", (o,), c_out)):
                classes: dict[tuple[str, ...], list[tuple[int, str]]] = {}
                for s in range(L):
                    for name, (p_axes, _) in self.piece_meta[s].items():
                        in_scope = abs(s - i) <= 1 or (global_summaries and p_axes == ())
                        if in_scope and set(p_axes) <= set(axes):
                            key = tuple(g for g in axes if g in p_axes)  # in the target's axis order
                            classes.setdefault(key, []).append((s, name))
                terms = []
                for key, sources in classes.items():
                    c_class = sum(self.piece_meta[s][name][1] for s, name in sources)
                    kept = [g for g in key if self._unshared(g)]  # per-index axes of this term
                    shape = [spec.groups[g] for g in kept] + [channels, c_class]
                    # He-style init, split over the summed terms, keeps activations O(1) through ReLUs
                    std = math.sqrt(2.0 / (c_class * len(classes)))
                    self.mix.append(nn.Parameter(torch.randn(shape) * std))
                    terms.append((len(self.mix) - 1, key, sources, kept))
                bias_shape = [channels] + [spec.groups[g] if self.fixed[g] else 1 for g in axes]
                self.bias.append(nn.Parameter(torch.zeros(bias_shape)))
                self.targets.append((kind, i, axes, terms))

    def _unshared(self, group: str) -> bool:
        return self.per_index and self.fixed[group]

    def _fold(self, group: str) -> int:
        """Channel factor of summarising over ``group``: its size if read per index, else 1 (a mean)."""
        return self.spec.groups[group] if self._unshared(group) else 1

    def _reduce(self, x: Tensor, dim: int, group: str) -> Tensor:
        """Summarise axis ``dim`` (a neuron axis of ``x [B, C, ...]``): mean, or fold into channels."""
        if self._unshared(group):
            return x.movedim(dim, 2).flatten(1, 2)
        return x.mean(dim)

    def _pieces(self, w: Tensor, b: Tensor, s: int) -> dict[str, Tensor]:
        layer = self.spec.layers[s]
        row = self._reduce(w, 3, layer.in_group)
        return {"W": w, "row": row, "col": self._reduce(w, 2, layer.out_group),
                "full": self._reduce(row, 2, layer.out_group), "b": b,
                "bsum": self._reduce(b, 2, layer.out_group)}

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        pieces = [self._pieces(w, b, s) for s, (w, b) in enumerate(zip(feats.weights, feats.biases))]
        out_w, out_b = [], []
        for (kind, i, axes, terms), bias in zip(self.targets, self.bias):
            y = bias
            for idx, key, sources, kept in terms:
                x = torch.cat([pieces[s][name] for s, name in sources], 1)  # [B, C_class, *key]
                z = _mix(x, self.mix[idx], [key.index(g) for g in kept])
                for pos, g in enumerate(axes):  # broadcast along the target axes the piece lacks
                    if g not in key:
                        z = z.unsqueeze(2 + pos)
                y = y + z
            (out_w if kind == "W" else out_b).append(y)
        return WeightFeatures(out_w, out_b)


class NPLinear(_NFLinear):
    """NP NF-Layer: shared weights on every axis, global full summaries, per-index I/O bias."""

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int):
        super().__init__(spec, c_in, c_out, per_index=False, global_summaries=True)


class HNPLinear(_NFLinear):
    """HNP NF-Layer: same and adjacent layers only, per-index weights on fixed axes."""

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int):
        super().__init__(spec, c_in, c_out, per_index=True, global_summaries=False)


class NFNInvariantPool(nn.Module):
    """Mean over permutable axes; fixed axes (first layer's inputs, last layer's outputs) stay
    separate features, as in the paper's invariant layer. Output ``[B, self.dim]``."""

    def __init__(self, spec: WeightSpaceSpec, channels: int):
        super().__init__()
        self.spec = spec
        self.permutable = set(spec.permutable)
        dim = 0
        for layer, t in zip(spec.layers, _taps(spec)):
            keep_o = 1 if layer.out_group in self.permutable else layer.out_features
            keep_i = 1 if layer.in_group in self.permutable else layer.in_features
            dim += channels * t * keep_o * keep_i + channels * keep_o
        self.dim = dim

    def forward(self, feats: WeightFeatures) -> Tensor:
        out = []
        for layer, w, b in zip(self.spec.layers, feats.weights, feats.biases):
            if layer.in_group in self.permutable:
                w = w.mean(3, keepdim=True)
            if layer.out_group in self.permutable:
                w, b = w.mean(2, keepdim=True), b.mean(2, keepdim=True)
            out += [w.flatten(1), b.flatten(1)]
        return torch.cat(out, 1)


class NFNEncoder(nn.Module):
    """lift -> [NF-Layer, ReLU] * layers -> invariant pool -> MLP head; no normalisation layers."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, mode: str = "hnp", channels: int = 32,
                 layers: int = 3, head_hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if mode not in ("hnp", "np"):
            raise ValueError(f"NFN mode must be 'hnp' or 'np', found {mode!r}")
        if layers < 1:
            raise ValueError(f"NFN needs at least one NF-Layer, found layers={layers}")
        layer_cls = HNPLinear if mode == "hnp" else NPLinear
        self.spec, self.mode = spec, mode
        self.layers = nn.ModuleList(layer_cls(spec, 1 if k == 0 else channels, channels) for k in range(layers))
        self.pool = NFNInvariantPool(spec, channels)
        self.head = nn.Sequential(nn.Linear(self.pool.dim, head_hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(head_hidden, out_dim))

    def forward(self, wb: WeightBatch) -> Tensor:
        feats = WeightFeatures.lift(wb)
        for layer in self.layers:
            feats = layer(feats).map(torch.relu)
        return self.head(self.pool(feats))
