"""NG-GNN and NG-T on dense tensors: the same models as ``wsl.nn.neural_graph.NGEncoder`` (the same
parameters, the same function, Fourier and probe features included), computed without gathers or
scatters.

The neural graph of a layer is complete bipartite (every input neuron of the layer feeds every output
neuron), so its edges can be stored as a dense tensor ``[B, out, in, hidden]`` (the row-major edge
order of ``wsl.weights.graph``) and its nodes as slices of ``[B, N, hidden]``. Gathering a node's
features onto its edges is then a broadcast, and the softmax and the sums over a node's incoming
(outgoing) edges are reductions over the ``in`` (``out``) axis: no index tensors. That is why it is
kept, as the ``ngnn-dense`` and ``ngt-dense`` encoders: on a CPU they train faster than message
passing on PyG with less memory (``scripts/bench_encoders.py``). A checkpoint of either loads into
the other.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.neural_graph import NGEncoder, NGGNNConv, NGTConv, _probed
from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.graph import graph_layout


class _Structure:
    """The neuron groups in node order (the node tensor splits into them by ``group_sizes``), the
    groups each layer's edges leave and enter (``layers[l] = (in group, out group)``), per group the
    layers whose edges enter it (at most one, see ``wsl.weights.graph``) and leave it."""

    def __init__(self, spec: WeightSpaceSpec):
        lay = graph_layout(spec)
        index = {g: k for k, g in enumerate(lay.groups)}
        self.layers = [(index[l.in_group], index[l.out_group]) for l in spec.layers]
        self.groups = [([k for k, l in enumerate(spec.layers) if l.out_group == g],
                        [k for k, l in enumerate(spec.layers) if l.in_group == g]) for g in lay.groups]
        self.group_sizes = [spec.groups[g] for g in lay.groups]
        self.num_edges = lay.num_edges
        self.edge_dim = lay.edge_dim


def _softmax(logits: list[Tensor], dim: int) -> list[Tensor]:
    """Softmax over the union of axis ``dim`` of several ``[B, out, in, heads]`` logit tensors (the
    edges of one node spread over layers), as ``torch_geometric.utils.softmax`` computes it: shifted
    by the detached maximum, with ``1e-16`` added to the normaliser (which is at least 1, so one
    tensor's case is ``torch.softmax``, one fused kernel, to within rounding)."""
    if len(logits) == 1:
        return [torch.softmax(logits[0], dim)]
    m = logits[0].detach().amax(dim, keepdim=True)
    for x in logits[1:]:
        m = torch.maximum(m, x.detach().amax(dim, keepdim=True))
    ex = [(x - m).exp() for x in logits]
    total = sum(e.sum(dim, keepdim=True) for e in ex) + 1e-16
    return [e / total for e in ex]


def _weighted_sum(z: Tensor, a: Tensor, dim: int) -> Tensor:
    """``sum`` over axis ``dim`` (1 or 2) of ``z [B, out, in, hidden]`` weighted per head by
    ``a [B, out, in, heads]``: ``[B, out or in, hidden]``."""
    B, n_out, n_in, hidden = z.shape
    heads = a.shape[-1]
    zh = z.view(B, n_out, n_in, heads, hidden // heads)
    if dim == 2:  # a batched matrix product over the contiguous in axis: [B, out, heads, 1, in] @ [.., in, d]
        return (a.permute(0, 1, 3, 2).unsqueeze(-2) @ zh.transpose(2, 3)).flatten(-3)
    return (zh * a.unsqueeze(-1)).sum(dim).flatten(-2)


def _per_node(h: Tensor, parts: list[tuple[Tensor | None, int]], hidden: int) -> Tensor:
    """Per-group aggregates ``(tensor or None, group size)`` in node order (None: a group with no
    such edges, zeros): ``[B, N, hidden]``."""
    return torch.cat([h.new_zeros(()).expand(h.shape[0], n, hidden) if p is None else p
                      for p, n in parts], 1)


def gnn_layer(conv: NGGNNConv, h: Tensor, edges: list[Tensor], st: _Structure) -> tuple[Tensor, list[Tensor]]:
    """``NGGNNConv``'s update with its parameters on ``h [B, N, hidden]`` node features and
    ``edges[l] [B, out_l, in_l, hidden]`` edge features."""
    a_src, a_dst = conv.node_proj(h).chunk(2, dim=-1)
    a_src, a_dst = a_src.split(st.group_sizes, 1), a_dst.split(st.group_sizes, 1)  # per group
    # the edge update psi and the attention logits read the same z: one product for both (a product
    # with 2 * heads columns alone is slow to differentiate: its input gradient has K = 2 * heads)
    w = torch.cat([conv.psi.weight, conv.attention.weight])
    b = torch.cat([conv.psi.bias, conv.attention.bias])
    zs, psis, l_fwd, l_bwd = [], [], [], []
    for (src, dst), e in zip(st.layers, edges):
        z = nn.functional.silu(a_src[src].unsqueeze(1) + a_dst[dst].unsqueeze(2) + conv.edge_proj(e))
        psi, logit_fwd, logit_bwd = nn.functional.linear(z, w, b).split([conv.hidden, conv.heads, conv.heads], -1)
        zs.append(z)
        psis.append(psi)
        l_fwd.append(logit_fwd)
        l_bwd.append(logit_bwd)
    fwd, bwd = [], []
    for (into, out_of), n in zip(st.groups, st.group_sizes):
        # the softmax over a node's incoming edges runs over its layer's input axis
        fwd.append((_weighted_sum(zs[into[0]], _softmax([l_fwd[into[0]]], 2)[0], 2) if into else None, n))
        # and over its outgoing edges, over the output axis of every layer it feeds
        attn = _softmax([l_bwd[k] for k in out_of], 1) if out_of else []
        bwd.append((sum(_weighted_sum(zs[k], a, 1) for k, a in zip(out_of, attn)) if out_of else None, n))
    agg_fwd, agg_bwd = _per_node(h, fwd, conv.hidden), _per_node(h, bwd, conv.hidden)
    h = conv.norm_h(h + conv.drop(conv.node_mlp(torch.cat([h, agg_fwd, agg_bwd], -1))))
    edges = [conv.norm_e(e + conv.drop(psi)) for e, psi in zip(edges, psis)]
    return h, edges


def _attend(attn, h: Tensor, edges: list[Tensor], st: _Structure, forward: bool) -> Tensor:
    """PyG's ``TransformerConv`` (``attn``: concatenated heads, no beta, root weight) on the dense
    graph: each node attends over its incoming edges (``forward``) or its outgoing ones, keys and
    values carrying the edge features. ``[B, N, hidden]``.

    The edge term never runs per edge: with ``W_e`` the bias-free edge map of head ``h``,
    ``q_i . W_e e_ij = (W_e^T q_i) . e_ij`` and ``sum_j a_ij W_e e_ij = W_e sum_j a_ij e_ij``, so
    the ``[edges, hidden] x [hidden, hidden]`` product becomes two products with ``heads`` columns
    (the same function, to rounding)."""
    B = h.shape[0]
    H, d = attn.heads, attn.out_channels
    w_edge = attn.lin_edge.weight.view(H, d, -1)  # [H, d, C]
    q, k, v = (lin(h).split(st.group_sizes, 1) for lin in (attn.lin_query, attn.lin_key, attn.lin_value))
    # logits [B, me, other, H]: "me" the attending end of each layer's edges (its output neurons when
    # attending over incoming edges), "other" the far end; edges are [B, out, in, C] either way
    logits = []
    for (src, dst), e in zip(st.layers, edges):
        me, other = (dst, src) if forward else (src, dst)
        qm, ko = q[me].view(B, -1, H, d), k[other].view(B, -1, H, d)
        node = torch.einsum("bmhd,bnhd->bmnh", qm, ko)  # [B, me, other, H]
        edge = torch.einsum("bmhc,bmnc->bmnh" if forward else "bmhc,bnmc->bmnh",
                            torch.einsum("bmhd,hdc->bmhc", qm, w_edge), e)
        logits.append((node + edge) / math.sqrt(d))
    parts = []
    for (into, out_of), n in zip(st.groups, st.group_sizes):
        layers = into if forward else out_of
        if not layers:
            parts.append((None, n))
            continue
        alphas = _softmax([logits[l] for l in layers], 2)  # over the other end, across the node's layers
        total = 0
        for l, a in zip(layers, alphas):
            src, dst = st.layers[l]
            other = src if forward else dst
            a = nn.functional.dropout(a, attn.dropout, attn.training)
            values = torch.einsum("bmnh,bnhd->bmhd", a, v[other].view(B, -1, H, d))
            summed = torch.einsum("bmnh,bmnc->bmhc" if forward else "bmnh,bnmc->bmhc", a, edges[l])
            total = total + values + torch.einsum("bmhc,hdc->bmhd", summed, w_edge)
        parts.append((total.flatten(-2), n))
    return _per_node(h, parts, H * d) + attn.lin_skip(h)


def transformer_layer(conv: NGTConv, h: Tensor, edges: list[Tensor], st: _Structure) -> tuple[Tensor, list[Tensor]]:
    """``NGTConv``'s update with its parameters on dense node and edge features (``gnn_layer``'s)."""
    attn = _attend(conv.attn_fwd, h, edges, st, True) + _attend(conv.attn_bwd, h, edges, st, False)
    h = conv.norm_attn(h + conv.drop(attn))
    h = conv.norm_ffn(h + conv.drop(conv.ffn(h)))
    p_src, p_dst = (p.split(st.group_sizes, 1) for p in conv.edge_nodes(h).chunk(2, dim=-1))
    out = []
    for (src, dst), e in zip(st.layers, edges):
        z = nn.functional.silu(p_src[src].unsqueeze(1) + p_dst[dst].unsqueeze(2) + conv.edge_self(e))
        out.append(conv.norm_e(e + conv.drop(conv.edge_out(z))))
    return h, out


LAYERS = {"gnn": gnn_layer, "transformer": transformer_layer}


class DenseNGEncoder(NGEncoder):
    """``NGEncoder`` computed on dense per-layer edge tensors (same parameters, same function)."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, conv: str = "gnn", hidden: int = 64, layers: int = 4,
                 heads: int = 1, dropout: float = 0.0, edge_readout: bool = True, fourier: int = 0,
                 fourier_scale: float = 1.0, probe_features: int = 0):
        super().__init__(spec, out_dim, conv, hidden, layers, heads, dropout, edge_readout, fourier, fourier_scale,
                         probe_features)
        self.structure = _Structure(spec)
        self.layer_update = LAYERS[conv]

    def lift(self, feats: WeightFeatures, extra: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """The backbone's input projection: node features ``[B, N, hidden]`` and per-layer edge
        features ``[B, out, in, hidden]``, as ``NGBackbone.graph`` makes them."""
        bb, st, B = self.backbone, self.structure, len(feats)
        x = graph_layout(self.spec).node_features(feats)  # [B, N, C]: biases in node order
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], -1)
        node_emb = torch.where(bb.fixed.unsqueeze(-1), bb.fixed_emb(bb.fixed_index), bb.layer_emb(bb.node_layer))
        h = bb.node_in(x) + node_emb
        edges = []
        for k, w in enumerate(feats.weights):  # [B, C, out, in, *k] -> [B, out, in, C * edge_dim], channel-major
            e = w.movedim(1, 3).reshape(*w.shape[:1], *w.shape[2:4], w.shape[1], -1)
            if e.shape[-1] < st.edge_dim:
                e = nn.functional.pad(e, (0, st.edge_dim - e.shape[-1]))
            edges.append(bb.edge_in(e.flatten(3)) + bb.edge_layer_emb.weight[k])
        return h, edges

    def forward(self, wb: WeightBatch, raw: WeightBatch | None = None) -> Tensor:
        self.check_spec(wb)
        extra = torch.asinh(self.probes(_probed(wb, raw))) if self.probes is not None else None
        h, edges = self.lift(self.encode(wb.features()), extra)
        for conv in self.backbone.layers:
            h, edges = self.layer_update(conv, h, edges, self.structure)
        e_mean = (sum(e.sum((1, 2)) for e in edges) / self.structure.num_edges).unsqueeze(1)
        return self.head(self.pool(h, e_mean))
