"""NG-GNN: a message-passing network on the neural graph (Kofinas et al. 2024, "Graph Neural
Networks for Learning Equivariant Representations of Neural Networks").

Nodes are neurons, edges are weights (see ``wsl.weights.graph``). Every layer updates the edges and the
nodes from each other:

    z_ij  = act(A h_i + B h_j + C e_ij)                 for the edge from neuron i to neuron j
    e_ij' = e_ij + psi(z_ij)                              (edge update)
    h_j'  = h_j + MLP(h_j, sum_i a_ij z_ij, sum_k a'_jk z_jk)   (node update)

The forward sum runs over the weights into neuron j (messages towards the output), the backward sum
over the weights out of it (so input neurons, which have no incoming weights, are updated too).
``a`` and ``a'`` are attention weights: a softmax over each node's incoming (resp. outgoing) edges,
per head. Softmax-weighted sums are independent of neighbour order, so each layer is equivariant to
any relabelling of the nodes. The message is ``z`` itself: with one head, a linear message function
phi(z) commutes with the weighted sum, so the node MLP's first layer plays its role per node instead
of per edge, which halves the edge work (edges outnumber neurons by the fan-in).

To stay equivariant to hidden-neuron permutations but still tell the fixed neurons apart, the input
and output neurons get a learned embedding each (their order is meaningful), while hidden neurons
only get the embedding of their layer. The readout (mean and max over nodes, mean over edges) is
invariant, so the encoder's output is invariant to hidden-neuron permutations.

Implementation: the neural graph of a layer is complete bipartite (every input neuron of the layer
feeds every output neuron), so its edges are stored as a dense tensor ``[B, out, in, hidden]`` (the
row-major edge order of ``wsl.weights.graph``) and its nodes as slices of ``[B, N, hidden]``. Gathering a
node's features onto its edges is then a broadcast, and the softmax and the sums over a node's
incoming (outgoing) edges are reductions over the ``in`` (``out``) axis: no index tensors, gathers
or scatters. It computes the same function as message passing on ``wsl.weights.graph.to_graph``'s batch.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights.graph import graph_layout
from wsl.weights import WeightBatch


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


class NGLayer(nn.Module):
    """One edge-and-node update of the neural graph (see the module docstring)."""

    def __init__(self, hidden: int, heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"NGGNN: hidden size {hidden} must be divisible by heads {heads}")
        self.hidden, self.heads = hidden, heads
        self.node_proj = nn.Linear(hidden, 2 * hidden)  # A h_src and B h_dst, computed per node, broadcast per edge
        self.edge_proj = nn.Linear(hidden, hidden, bias=False)  # C e
        self.edge_update = nn.Linear(hidden, hidden)  # psi
        self.attention = nn.Linear(hidden, 2 * heads)  # logits of the forward and backward softmax
        self.node_mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm_h, self.norm_e = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, edges: list[Tensor], st: _Structure) -> tuple[Tensor, list[Tensor]]:
        """``h [B, N, hidden]`` node features, ``edges[l] [B, out_l, in_l, hidden]`` edge features."""
        a_src, a_dst = self.node_proj(h).chunk(2, dim=-1)
        a_src, a_dst = a_src.split(st.group_sizes, 1), a_dst.split(st.group_sizes, 1)  # per group
        zs, l_fwd, l_bwd = [], [], []
        for (src, dst), e in zip(st.layers, edges):
            z = nn.functional.silu(a_src[src].unsqueeze(1) + a_dst[dst].unsqueeze(2) + self.edge_proj(e))
            f, b = self.attention(z).chunk(2, dim=-1)
            zs.append(z)
            l_fwd.append(f)
            l_bwd.append(b)
        agg_fwd, agg_bwd = [], []
        for (into, out_of), n in zip(st.groups, st.group_sizes):  # node order; no edges, no message: zeros
            zero = h.new_zeros(()).expand(h.shape[0], n, self.hidden)
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
        h = self.norm_h(h + self.drop(self.node_mlp(torch.cat([h, agg_fwd, agg_bwd], -1))))
        edges = [self.norm_e(e + self.drop(self.edge_update(z))) for e, z in zip(edges, zs)]
        return h, edges


class NGGNN(nn.Module):
    """Invariant encoder of a weight space (MLP or CNN) through its neural graph: ``[B, out_dim]``."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 64, layers: int = 4, heads: int = 1,
                 dropout: float = 0.0, edge_readout: bool = True):
        super().__init__()
        self.spec, self._spec_json = spec, spec.to_json()
        lay = graph_layout(spec)
        self.structure = _Structure(spec)
        self.register_buffer("node_layer", lay.node_layer.clone(), persistent=False)
        self.register_buffer("fixed", lay.fixed.clone(), persistent=False)
        self.register_buffer("fixed_index", lay.fixed_index.clamp(min=0), persistent=False)
        self.bias_in = nn.Linear(1, hidden)
        self.edge_in = nn.Linear(lay.edge_dim, hidden)
        self.layer_emb = nn.Embedding(len(lay.groups), hidden)  # hidden neurons: their layer only
        self.fixed_emb = nn.Embedding(lay.num_fixed, hidden)  # input/output neurons: one each
        self.edge_layer_emb = nn.Embedding(len(spec.layers), hidden)  # tells conv edges from linear ones
        self.layers = nn.ModuleList(NGLayer(hidden, heads, dropout) for _ in range(layers))
        self.edge_readout = edge_readout
        r = (3 if edge_readout else 2) * hidden
        self.head = nn.Sequential(nn.Linear(r, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, wb: WeightBatch) -> Tensor:
        if wb.spec is not self.spec and wb.spec.to_json() != self._spec_json:
            raise ValueError(f"NGGNN was built for weight space {self.spec.architecture!r} with other layers "
                             f"than the batch's {wb.spec.architecture!r}")
        st, B = self.structure, len(wb)
        # node features: each neuron's bias (zero for the inputs and bias-free layers), in node order
        bias = []
        for k, n in zip(st.bias_layer, st.group_sizes):
            b = None if k is None else wb.biases[k]
            bias.append(b if b is not None else wb.weights[0].new_zeros(B, n))
        node_emb = torch.where(self.fixed.unsqueeze(-1), self.fixed_emb(self.fixed_index),
                               self.layer_emb(self.node_layer))
        h = self.bias_in(torch.cat(bias, 1).unsqueeze(-1)) + node_emb
        # edge features: a layer's weight [B, out, in, *kernel] is its edges' features [B, out, in, taps]
        # (the graph zero-pads taps to edge_dim: reading only the first taps inputs is the same)
        edges = []
        for k, w in enumerate(wb.weights):
            x = w.reshape(*w.shape[:3], -1)
            edges.append(nn.functional.linear(x, self.edge_in.weight[:, :x.shape[-1]], self.edge_in.bias)
                         + self.edge_layer_emb.weight[k])
        for layer in self.layers:
            h, edges = layer(h, edges, st)
        pooled = [h.mean(1), h.amax(1)]
        if self.edge_readout:
            pooled.append(sum(e.sum((1, 2)) for e in edges) / st.num_edges)
        return self.head(torch.cat(pooled, -1))
