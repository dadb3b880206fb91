"""NG-GNN: a message-passing network on the neural graph (Kofinas et al. 2024, "Graph Neural
Networks for Learning Equivariant Representations of Neural Networks").

Nodes are neurons, edges are weights (see ``wsl.graph``). Every layer updates the edges and the
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
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from zoo.weight_space import WeightSpaceSpec

from ..graph import graph_layout, to_graph
from ..weights import WeightBatch


class NGLayer(nn.Module):
    """One edge-and-node update of the neural graph (see the module docstring)."""

    def __init__(self, hidden: int, heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"NGGNN: hidden size {hidden} must be divisible by heads {heads}")
        self.hidden, self.heads = hidden, heads
        self.node_proj = nn.Linear(hidden, 2 * hidden)  # A h_src and B h_dst, computed per node, gathered per edge
        self.edge_proj = nn.Linear(hidden, hidden, bias=False)  # C e
        self.edge_update = nn.Linear(hidden, hidden)  # psi
        self.attention = nn.Linear(hidden, 2 * heads)  # logits of the forward and backward softmax
        self.node_mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm_h, self.norm_e = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def _attend(self, z: Tensor, logit: Tensor, index: Tensor, num_nodes: int) -> Tensor:
        """Per-head softmax over the edges that share ``index``, then the weighted sum of ``z``."""
        a = softmax(logit, index, num_nodes=num_nodes)  # [E, heads]
        msg = (z.view(-1, self.heads, self.hidden // self.heads) * a.unsqueeze(-1)).view(-1, self.hidden)
        return scatter(msg, index, 0, dim_size=num_nodes, reduce="sum")

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        a_src, a_dst = self.node_proj(h).chunk(2, dim=-1)
        z = nn.functional.silu(a_src[src] + a_dst[dst] + self.edge_proj(e))
        l_fwd, l_bwd = self.attention(z).chunk(2, dim=-1)
        n = h.shape[0]
        agg_fwd = self._attend(z, l_fwd, dst, n)  # from the input neurons of a weight to its output neuron
        agg_bwd = self._attend(z, l_bwd, src, n)  # and back
        h = self.norm_h(h + self.drop(self.node_mlp(torch.cat([h, agg_fwd, agg_bwd], -1))))
        e = self.norm_e(e + self.drop(self.edge_update(z)))
        return h, e


class NGGNN(nn.Module):
    """Invariant encoder of a weight space (MLP or CNN) through its neural graph: ``[B, out_dim]``."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 64, layers: int = 4, heads: int = 1,
                 dropout: float = 0.0, edge_readout: bool = True):
        super().__init__()
        self.spec = spec
        lay = graph_layout(spec)
        self.register_buffer("node_layer", lay.node_layer.clone(), persistent=False)
        self.register_buffer("fixed", lay.fixed.clone(), persistent=False)
        self.register_buffer("fixed_index", lay.fixed_index.clamp(min=0), persistent=False)
        self.register_buffer("edge_layer", lay.edge_layer.clone(), persistent=False)
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
        if wb.spec.to_json() != self.spec.to_json():
            raise ValueError(f"NGGNN was built for weight space {self.spec.architecture!r} with other layers "
                             f"than the batch's {wb.spec.architecture!r}")
        g = to_graph(wb)
        B = len(wb)
        node_emb = torch.where(self.fixed.unsqueeze(-1), self.fixed_emb(self.fixed_index),
                               self.layer_emb(self.node_layer))
        h = self.bias_in(g.x[:, :1]) + node_emb.repeat(B, 1)
        e = self.edge_in(g.edge_attr) + self.edge_layer_emb(self.edge_layer).repeat(B, 1)
        for layer in self.layers:
            h, e = layer(h, e, g.edge_index)
        pooled = [scatter(h, g.batch, 0, dim_size=B, reduce="mean"), scatter(h, g.batch, 0, dim_size=B, reduce="max")]
        if self.edge_readout:
            pooled.append(e.view(B, -1, e.shape[-1]).mean(1))  # edges are stored graph by graph
        return self.head(torch.cat(pooled, -1))
