"""NG-GNN on dense tensors: the same model as ``wsl.nn.neural_graph.NGEncoder(conv="gnn")`` (the
same parameters, the same function), computed without gathers or scatters.

The neural graph of a layer is complete bipartite (every input neuron of the layer feeds every output
neuron), so its edges can be stored as a dense tensor ``[B, out, in, hidden]`` (the row-major edge
order of ``wsl.weights.graph``) and its nodes as slices of ``[B, N, hidden]``. Gathering a node's
features onto its edges is then a broadcast, and the softmax and the sums over a node's incoming
(outgoing) edges are reductions over the ``in`` (``out``) axis: no index tensors. That is why it is
kept, as the ``ngnn-dense`` encoder: on one CPU thread it trains 1.7x faster than message passing on
PyG with about 35% less memory (``scripts/bench_encoders.py --threads 1``, MLP 64-32-32-10, B=64).
A checkpoint of either loads into the other.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.neural_graph import NGEncoder, NGGNNConv
from wsl.weights import WeightBatch
from wsl.weights.graph import graph_layout


class _Structure:
    """The neuron groups in node order (the node tensor splits into them by ``group_sizes``), the
    groups each layer's edges leave and enter (``layers[l] = (in group, out group)``), per group the
    layers whose edges enter it (at most one, see ``wsl.weights.graph``) and leave it, and the layer whose
    bias it holds (or None)."""

    def __init__(self, spec: WeightSpaceSpec):
        lay = graph_layout(spec)
        index = {g: k for k, g in enumerate(lay.groups)}
        self.layers = [(index[l.in_group], index[l.out_group]) for l in spec.layers]
        self.groups = [([k for k, l in enumerate(spec.layers) if l.out_group == g],
                        [k for k, l in enumerate(spec.layers) if l.in_group == g]) for g in lay.groups]
        self.group_sizes = [spec.groups[g] for g in lay.groups]
        self.bias_layer = [lay.bias_layer.get(g) for g in lay.groups]  # the layer whose bias a group holds
        self.num_edges = lay.num_edges


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


def dense_layer(conv: NGGNNConv, h: Tensor, edges: list[Tensor], st: _Structure) -> tuple[Tensor, list[Tensor]]:
    """``NGGNNConv``'s update with its parameters on ``h [B, N, hidden]`` node features and
    ``edges[l] [B, out_l, in_l, hidden]`` edge features."""
    a_src, a_dst = conv.node_proj(h).chunk(2, dim=-1)
    a_src, a_dst = a_src.split(st.group_sizes, 1), a_dst.split(st.group_sizes, 1)  # per group
    zs, l_fwd, l_bwd = [], [], []
    for (src, dst), e in zip(st.layers, edges):
        z = nn.functional.silu(a_src[src].unsqueeze(1) + a_dst[dst].unsqueeze(2) + conv.edge_proj(e))
        f, b = conv.attention(z).chunk(2, dim=-1)
        zs.append(z)
        l_fwd.append(f)
        l_bwd.append(b)
    agg_fwd, agg_bwd = [], []
    for (into, out_of), n in zip(st.groups, st.group_sizes):  # node order; no edges, no message: zeros
        zero = h.new_zeros(()).expand(h.shape[0], n, conv.hidden)
        if into:  # the softmax over a node's incoming edges runs over its layer's input axis
            (k,) = into
            (a,) = _softmax([l_fwd[k]], 2)
            agg_fwd.append(_weighted_sum(zs[k], a, 2))
        else:
            agg_fwd.append(zero)
        if out_of:  # and over its outgoing edges, over the output axis of every layer it feeds
            attn = _softmax([l_bwd[k] for k in out_of], 1)
            agg_bwd.append(sum(_weighted_sum(zs[k], a, 1) for k, a in zip(out_of, attn)))
        else:
            agg_bwd.append(zero)
    agg_fwd, agg_bwd = torch.cat(agg_fwd, 1), torch.cat(agg_bwd, 1)
    h = conv.norm_h(h + conv.drop(conv.node_mlp(torch.cat([h, agg_fwd, agg_bwd], -1))))
    edges = [conv.norm_e(e + conv.drop(conv.psi(z))) for e, z in zip(edges, zs)]
    return h, edges


class DenseNGGNN(NGEncoder):
    """``NGEncoder(conv="gnn")`` computed on dense per-layer edge tensors (same parameters)."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 64, layers: int = 4, heads: int = 1,
                 dropout: float = 0.0, edge_readout: bool = True):
        super().__init__(spec, out_dim, "gnn", hidden, layers, heads, dropout, edge_readout)
        self.structure = _Structure(spec)

    def forward(self, wb: WeightBatch) -> Tensor:
        self.check_spec(wb)
        bb, st, B = self.backbone, self.structure, len(wb)
        # node features: each neuron's bias (zero for the inputs and bias-free layers), in node order
        bias = []
        for k, n in zip(st.bias_layer, st.group_sizes):
            b = None if k is None else wb.biases[k]
            bias.append(b if b is not None else wb.weights[0].new_zeros(B, n))
        node_emb = torch.where(bb.fixed.unsqueeze(-1), bb.fixed_emb(bb.fixed_index), bb.layer_emb(bb.node_layer))
        h = bb.node_in(torch.cat(bias, 1).unsqueeze(-1)) + node_emb
        # edge features: a layer's weight [B, out, in, *kernel] is its edges' features [B, out, in, taps]
        # (the graph zero-pads taps to edge_dim: reading only the first taps inputs is the same)
        edges = []
        for k, w in enumerate(wb.weights):
            x = w.reshape(*w.shape[:3], -1)
            edges.append(nn.functional.linear(x, bb.edge_in.weight[:, :x.shape[-1]], bb.edge_in.bias)
                         + bb.edge_layer_emb.weight[k])
        for conv in bb.layers:
            h, edges = dense_layer(conv, h, edges, st)
        e_mean = (sum(e.sum((1, 2)) for e in edges) / st.num_edges).unsqueeze(1)  # pool reads the mean over edges
        return self.head(self.pool(h, e_mean))
