"""Neural Functional Networks (Zhou et al. 2023, "Permutation Equivariant Neural Functionals").

An NFN maps a network's weights through linear layers that commute with permutations of hidden
neurons (NF-Layers), pointwise ReLUs, and an invariant pooling, so its output does not depend on
the arbitrary order of hidden neurons.

Features (``wsl.weights.WeightFeatures``): layer ``i`` has weight features ``W_i [B, C, n_out, n_in, *k]``
and neuron features ``b_i [B, C, n_out]``; inside a layer a convolution's kernel taps are folded into
the channels (they are fixed axes). Axes are labelled by the spec's neuron groups, so the layers work on MLPs
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
import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.base import Backbone, PooledEncoder, mlp, weight_encoding
from wsl.nn.pool import InvariantPool
from wsl.weights import WeightFeatures
from zoo.errors import InputError


def check_chain(spec: WeightSpaceSpec) -> None:
    """The layers' terms assume each layer reads the group the previous one writes, with distinct groups."""
    spec.check_chain("NFN")


def _taps(spec: WeightSpaceSpec) -> list[int]:
    return [math.prod(layer.kernel) for layer in spec.layers]


def _mix(x: Tensor, w: Tensor, kept: list[int]) -> Tensor:
    """Channel mixing, channels last: ``x [B, *axes, C] -> [B, *axes, O]`` with ``w [*sizes of kept
    axes, O, C]``: one ``O x C`` matrix, or one per index of the axes listed in ``kept`` (positions
    in ``axes``). A shared matrix is one plain matmul; per-index matrices one ``bmm`` over the kept
    indices, on a contiguous copy (BLAS on strided batches is several times slower)."""
    if not kept:
        return nn.functional.linear(x, w)
    kept_dims = [1 + k for k in kept]
    rest_dims = [d for d in range(1, x.dim() - 1) if d not in kept_dims]
    order = kept_dims + [0] + rest_dims + [x.dim() - 1]  # [*K, B, *rest, C]
    xk = x.permute(order).contiguous()
    K = xk.shape[:len(kept)]
    O, C = w.shape[-2], w.shape[-1]
    z = torch.bmm(xk.view(math.prod(K), -1, C), w.reshape(-1, O, C).mT)
    if z.requires_grad:  # its gradient arrives permuted: make it contiguous for bmm's backward too
        z.register_hook(Tensor.contiguous)
    return z.view(*xk.shape[:-1], O).permute([order.index(d) for d in range(x.dim())])


class _NFLinear(nn.Module):
    """Shared machinery of the NP and HNP layers (see the module docstring).

    ``per_index``: fixed axes get per-index weights (HNP) instead of shared weights and means (NP).
    ``global_summaries``: full summaries of every layer feed every tensor (NP), not just adjacent ones.

    The computation runs channels last (``_forward_channels_last``), where a summary that folds a fixed axis
    into channels is a free view, and it is organised per *piece*: every piece is mixed once, by one
    matmul with the matrices of all the terms that read it stacked (``self.mix[k]`` for
    ``self.plan[k]``: ``[*sizes of its per-index axes, sum of its readers' channels, its channels]``),
    and the result is split and broadcast into the output tensors. That is the same linear map as
    mixing, per output tensor and term, the concatenated pieces of the term with one matrix: the
    matrices are initialised that way (He-style, per term) and split by piece.
    """

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int, per_index: bool, global_summaries: bool,
                 relu: bool = False):
        super().__init__()
        check_chain(spec)
        self.spec, self.c_in, self.c_out, self.relu = spec, c_in, c_out, relu
        self.fixed = {g: g not in spec.permutable for g in spec.groups}
        self.per_index = per_index
        taps = _taps(spec)
        L = len(spec.layers)

        # piece_meta[s]: name -> (axes, channels) of layer s's pieces; computed the same way in _pieces
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

        # targets: every output tensor (kind, layer, axes). Its terms group the pieces it reads by
        # their axes; a term's matrix [*kept sizes, channels, sum of its pieces' channels] is split
        # into one block per piece, filed under that piece.
        self.targets = []
        self.bias = nn.ParameterList()
        blocks: dict[tuple[int, str], list[tuple[int, Tensor]]] = {}
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
                for key, sources in classes.items():
                    c_class = sum(self.piece_meta[s][name][1] for s, name in sources)
                    kept = [g for g in key if self._unshared(g)]  # per-index axes of this term
                    shape = [spec.groups[g] for g in kept] + [channels, c_class]
                    # He-style init, split over the summed terms, keeps activations O(1) through ReLUs
                    std = math.sqrt(2.0 / (c_class * len(classes)))
                    mat, off = torch.randn(shape) * std, 0
                    for s, name in sources:
                        width = self.piece_meta[s][name][1]
                        block = mat[..., off:off + width][..., self._fold_order(s, name)]
                        blocks.setdefault((s, name), []).append((len(self.targets), block))
                        off += width
                bias_shape = [channels] + [spec.groups[g] if self.fixed[g] else 1 for g in axes]
                self.bias.append(nn.Parameter(torch.zeros(bias_shape)))
                self.targets.append((kind, i, axes))

        # plan[k]: piece k, its per-index axes (positions), and per reader its output tensor, channel
        # count and the output axes to broadcast along (the ones the piece lacks)
        self.plan = []
        self.mix = nn.ParameterList()
        for (s, name), readers in blocks.items():
            axes = self.piece_meta[s][name][0]
            kept = [k for k, g in enumerate(axes) if self._unshared(g)]
            uses = [(t, block.shape[-2], [1 + pos for pos, g in enumerate(self.targets[t][2]) if g not in axes])
                    for t, block in readers]
            self.plan.append((s, name, kept, uses))
            self.mix.append(nn.Parameter(torch.cat([block for _, block in readers], -2)))

    def _unshared(self, group: str) -> bool:
        return self.per_index and self.fixed[group]

    def _fold(self, group: str) -> int:
        """Channel factor of summarising over ``group``: its size if read per index, else 1 (a mean)."""
        return self.spec.groups[group] if self._unshared(group) else 1

    def _fold_order(self, s: int, name: str) -> Tensor | slice:
        """The channels of piece ``name`` of layer ``s`` as ``_pieces`` lays them out, channels last:
        each folded axis (a fixed axis summarised per index) goes before the channels, the last folded
        outermost: ``(*reversed(folded), c)``. As indices into the order ``(c, *folded)`` of the
        channels-first layout that the terms are specified in (``slice(None)``: nothing folded)."""
        layer = self.spec.layers[s]
        i, o = layer.in_group, layer.out_group
        folded = {"W": [], "row": [i], "col": [o], "full": [i, o], "b": [], "bsum": [o]}[name]
        folded = [self.spec.groups[g] for g in folded if self._unshared(g)]
        if not folded:
            return slice(None)
        c = self.c_in * (_taps(self.spec)[s] if name in ("W", "row", "col", "full") else 1)
        idx = torch.arange(c * math.prod(folded)).view(c, *folded)
        return idx.permute(*range(len(folded), 0, -1), 0).flatten()

    def _reduce(self, x: Tensor, dim: int, group: str) -> Tensor:
        """Summarise axis ``dim`` of a channels-last ``x [B, ..., C]``: a mean, or (a fixed axis read
        per index) fold it into the channels, outermost, as ``(index, c)``."""
        if self._unshared(group):
            return x.movedim(dim, -2).flatten(-2)
        # sum, then scale the small result: the same mean, but its backward is a broadcast view, not
        # a full-size division
        return x.sum(dim) * (1.0 / x.shape[dim])

    def _pieces(self, w: Tensor, b: Tensor, s: int) -> dict[str, Tensor]:
        """Channels last: ``w [B, out, in, C]``, ``b [B, out, C]``."""
        layer = self.spec.layers[s]
        row = self._reduce(w, 2, layer.in_group)
        return {"W": w, "row": row, "col": self._reduce(w, 1, layer.out_group),
                "full": self._reduce(row, 1, layer.out_group), "b": b,
                "bsum": self._reduce(b, 1, layer.out_group)}

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        if feats.channels != self.c_in:
            raise InputError(f"{type(self).__name__} takes {self.c_in} channels, found {feats.channels}")
        out_w, out_b = self._forward_channels_last(*feats.channels_last())
        return WeightFeatures.from_channels_last(self.spec, out_w, out_b)

    def _forward_channels_last(self, weights: list[Tensor], biases: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The layer on channels-last features: ``weights[i] [B, out, in, C*taps]``, ``biases[i] [B, out, C]``;
        with ``self.relu`` the outputs are rectified in place (saving a pass and a tensor)."""
        pieces = [self._pieces(w, b, s) for s, (w, b) in enumerate(zip(weights, biases))]
        terms: list[list[Tensor]] = [[p.movedim(0, -1).unsqueeze(0)] for p in self.bias]  # channels last
        for (s, name, kept, uses), w in zip(self.plan, self.mix):
            z = _mix(pieces[s][name], w, kept)
            # one split (its backward is one concatenation, where slices would each pad with zeros)
            parts = torch.split(z, [width for _, width, _ in uses], -1) if len(uses) > 1 else [z]
            for zt, (t, _, dims) in zip(parts, uses):
                for d in dims:
                    zt = zt.unsqueeze(d)
                terms[t].append(zt)
        out_w, out_b = [], []
        for (kind, _, axes), ts in zip(self.targets, terms):
            (out_w if kind == "W" else out_b).append(_sum_broadcast(ts, len(axes), self.relu))
        return out_w, out_b


def _sum_broadcast(terms: list[Tensor], n_axes: int, relu: bool = False) -> Tensor:
    """Sum of channels-last terms ``[B or 1, *(n or 1 per axis), O]`` that broadcast to one tensor
    (then a ReLU if ``relu``), with few passes over the full-size result: terms with the same
    broadcast axes are summed first, a group is added into the smallest group whose axes contain
    its own, and only what is left is expanded, in place into one fresh tensor."""
    groups: dict[tuple[bool, ...], Tensor] = {}
    for t in terms:
        key = tuple(t.shape[1 + k] > 1 for k in range(n_axes))
        groups[key] = t if key not in groups else groups[key] + t
    keys = sorted(groups, key=sum)  # fewest axes first
    for k, small in enumerate(keys):
        for big in keys[k + 1:]:
            if all(b or not s for s, b in zip(small, big)):
                groups[big] = groups[big] + groups.pop(small)
                break
    parts = sorted(groups.values(), key=lambda t: t.numel(), reverse=True)
    if len(parts) == 1:
        return torch.relu(parts[0]) if relu else parts[0]
    y = parts[0] + parts[1]
    for p in parts[2:]:  # y is a fresh tensor: add (and rectify) in place where the shape allows
        y = y.add_(p) if torch.broadcast_shapes(y.shape, p.shape) == y.shape else y + p
    return y.relu_() if relu else y


class NPLinear(_NFLinear):
    """NP NF-Layer: shared weights on every axis, global full summaries, per-index I/O bias.
    ``relu``: the layer followed by a ReLU, fused (what ``NFNBackbone`` stacks)."""

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int, relu: bool = False):
        super().__init__(spec, c_in, c_out, per_index=False, global_summaries=True, relu=relu)


class HNPLinear(_NFLinear):
    """HNP NF-Layer: same and adjacent layers only, per-index weights on fixed axes.
    ``relu``: the layer followed by a ReLU, fused (what ``NFNBackbone`` stacks)."""

    def __init__(self, spec: WeightSpaceSpec, c_in: int, c_out: int, relu: bool = False):
        super().__init__(spec, c_in, c_out, per_index=True, global_summaries=False, relu=relu)


class NFNBackbone(Backbone):
    """NP or HNP NF-Layers with ReLUs between them (see ``wsl.nn.base.Backbone`` for ``out_channels``)."""

    def __init__(self, spec: WeightSpaceSpec, mode: str = "hnp", in_channels: int = 1, channels: int = 32,
                 layers: int = 3, out_channels: int | None = None):
        if mode not in ("hnp", "np"):
            raise InputError(f"NFN mode must be 'hnp' or 'np', found {mode!r}")
        layer_cls = HNPLinear if mode == "hnp" else NPLinear
        super().__init__(lambda c_in, c_out, relu: layer_cls(spec, c_in, c_out, relu), in_channels, channels, layers,
                         out_channels, fused_relu=True)


class NFNEncoder(PooledEncoder):
    """NF-Layers with ReLUs -> invariant pool -> MLP head; no normalisation layers. ``fourier`` > 0
    encodes every weight by that many random Fourier frequencies of std ``fourier_scale`` first."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, mode: str = "hnp", channels: int = 32,
                 layers: int = 3, head_hidden: int = 256, dropout: float = 0.0, fourier: int = 0,
                 fourier_scale: float = 1.0):
        encode, c_in = weight_encoding(fourier, fourier_scale)
        backbone = NFNBackbone(spec, mode, c_in, channels, layers)
        pool = InvariantPool(spec, channels)
        super().__init__(spec, out_dim, backbone, pool, mlp(pool.dim, head_hidden, out_dim, 2, dropout), encode)
        self.mode = mode
