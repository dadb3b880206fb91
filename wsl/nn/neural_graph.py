"""Neural-graph networks on PyG (Kofinas et al. 2024, "Graph Neural Networks for Learning
Equivariant Representations of Neural Networks"): NG-GNN and NG-T, as equivariant backbones
(weight features -> weight features) and as invariant encoders.

The network's neural graph (``wsl.weights.graph``: neurons are nodes, weights are edges) is batched
by PyG and every layer updates the nodes and the edges from each other, so a backbone returns
features for every neuron and every weight. Two layers:

- ``NGGNNConv`` (NG-GNN): a ``MessagePassing`` layer with edge features and edge updates,

      z_ij  = silu(A h_i + B h_j + C e_ij)                  for the weight from neuron i to neuron j
      e_ij' = LN(e_ij + psi(z_ij))                          (edge update)
      h_j'  = LN(h_j + MLP(h_j, sum_i a_ij z_ij, sum_k a'_jk z_jk))   (node update)

  The forward sum runs over the weights into neuron j (messages towards the output), the backward
  sum over the weights out of it (so input neurons, which have no incoming weights, are updated
  too). ``a`` and ``a'`` are attention weights per head, a softmax over each node's incoming
  (outgoing) edges. The message is ``z`` itself: the node MLP's first layer plays the message
  function's role per node instead of per edge (edges outnumber neurons by the fan-in).
- ``NGTConv`` (NG-T): a transformer block. Each node attends over its incoming and, separately, its
  outgoing weights with PyG's ``TransformerConv``, whose keys and values carry the edge features
  (``k_ij = W_k h_j + W_e e_ij``, ``v_ij = W_v h_j + W_e e_ij``, plus a linear map of the node
  itself); then a feed-forward block, and the edges are updated from their end nodes:
  ``e_ij' = LN(e_ij + MLP(h_i, h_j, e_ij))``.

Softmax-weighted sums do not depend on the order of neighbours, so both layers are equivariant to
any relabelling of the nodes. To stay equivariant to hidden-neuron permutations only, the input
lift gives the input and output neurons a learned embedding each (their order is meaningful),
while hidden neurons get only the embedding of their layer; every edge gets its layer's embedding.

Readout: the backbone maps node features back to neuron features and edge features to weight
features (``wsl.weights.graph``'s inverse); the encoder pools each graph (mean and max over its nodes,
input neurons included, and the mean over its edges), which is invariant, into an MLP head.

Probe features (``probe_features=K`` > 0, Kofinas et al.'s "probe features"; ``GraphProbes``): K
learned probe inputs, shared by all networks, are run through every network of the batch in one
batched call (``zoo.functional.population_forward`` with ``hidden=``), and every neuron's values on
them become K more features of its node, concatenated to its bias before the input projection:
input neurons get the probes' coordinates (the same for every network; for a convolution, each
input channel's spatial mean), hidden neurons their post-activation values (a convolution's
channel: its spatial mean, the value global pooling would read), output neurons the network's
outputs; all squashed by asinh (elementwise: blown-up networks answer with 1e5 and more). A hidden
neuron's values move with the neuron when hidden neurons are permuted (same function, relabelled
neurons), so the encoder stays invariant; it must have the spec's activation, or the batch's
(``WeightBatch.activation``) where that varies per network. The probes start as ``ProbeEncoder``'s
do (a grid over [-1, 1]^d for d <= 3: *about* K points, ``GraphProbes.num_probes``; N(0, 1) draws
otherwise) and are trained with the rest. Which weights run: ``forward(wb, raw=...)`` reads the
probes off ``raw`` when given (the networks as they are; the graph still reads ``wb``), else off
``wb`` itself. The property predictor passes its normalized weights as ``wb`` and the networks as
they are as ``raw`` (``Encoder.runs_networks``), so the probes read the networks' own functions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing, TransformerConv
from torch_geometric.utils import softmax

from zoo.weight_space import WeightSpaceSpec

from zoo.functional import population_forward

from wsl.nn.base import Encoder, mlp, weight_encoding
from wsl.nn.probe import probe_grid
from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.graph import graph_layout, to_graph
from zoo.errors import InputError


def _check_heads(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise InputError(f"neural graph: hidden size {hidden} must be divisible by heads {heads}")


class NGGNNConv(MessagePassing):
    """One NG-GNN layer: edge-and-node update on the neural graph (see the module docstring)."""

    def __init__(self, hidden: int, heads: int = 1, dropout: float = 0.0):
        super().__init__(aggr="add", node_dim=0)
        _check_heads(hidden, heads)
        self.hidden, self.heads = hidden, heads
        self.node_proj = nn.Linear(hidden, 2 * hidden)  # A h_src and B h_dst, computed per node
        self.edge_proj = nn.Linear(hidden, hidden, bias=False)  # C e
        self.psi = nn.Linear(hidden, hidden)  # edge update
        self.attention = nn.Linear(hidden, 2 * heads)  # logits of the forward and backward softmax
        self.node_mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm_h, self.norm_e = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor, reverse: Tensor) -> tuple[Tensor, Tensor]:
        """``h [nodes, hidden]``, ``e [edges, hidden]``; ``reverse`` is ``edge_index.flip(0)``."""
        n = h.shape[0]
        a_src, a_dst = self.node_proj(h).chunk(2, dim=-1)
        z = self.edge_updater(edge_index, a_src=a_src, a_dst=a_dst, e=e)
        l_fwd, l_bwd = self.attention(z).chunk(2, dim=-1)
        fwd = self.propagate(edge_index, z=z, alpha=softmax(l_fwd, edge_index[1], num_nodes=n), size=(n, n))
        bwd = self.propagate(reverse, z=z, alpha=softmax(l_bwd, edge_index[0], num_nodes=n), size=(n, n))
        h = self.norm_h(h + self.drop(self.node_mlp(torch.cat([h, fwd, bwd], -1))))
        e = self.norm_e(e + self.drop(self.psi(z)))
        return h, e

    def edge_update(self, a_src_j: Tensor, a_dst_i: Tensor, e: Tensor) -> Tensor:
        return nn.functional.silu(a_src_j + a_dst_i + self.edge_proj(e))

    def message(self, z: Tensor, alpha: Tensor) -> Tensor:
        return (z.view(-1, self.heads, self.hidden // self.heads) * alpha.unsqueeze(-1)).flatten(1)


class NGTConv(nn.Module):
    """One NG-T layer: attention over incoming and outgoing weights, feed-forward, edge update."""

    def __init__(self, hidden: int, heads: int = 1, dropout: float = 0.0):
        super().__init__()
        _check_heads(hidden, heads)
        d = hidden // heads
        # root_weight: each adds a linear map of the node itself (PyG builds that map either way)
        self.attn_fwd = TransformerConv(hidden, d, heads=heads, dropout=dropout, edge_dim=hidden)
        self.attn_bwd = TransformerConv(hidden, d, heads=heads, dropout=dropout, edge_dim=hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        self.edge_nodes = nn.Linear(hidden, 2 * hidden)  # the end nodes' part of the edge MLP, per node
        self.edge_self = nn.Linear(hidden, hidden, bias=False)
        self.edge_out = nn.Linear(hidden, hidden)
        self.norm_attn, self.norm_ffn, self.norm_e = nn.LayerNorm(hidden), nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor, reverse: Tensor) -> tuple[Tensor, Tensor]:
        attn = self.attn_fwd(h, edge_index, e) + self.attn_bwd(h, reverse, e)
        h = self.norm_attn(h + self.drop(attn))
        h = self.norm_ffn(h + self.drop(self.ffn(h)))
        p_src, p_dst = self.edge_nodes(h).chunk(2, dim=-1)
        z = nn.functional.silu(p_src[edge_index[0]] + p_dst[edge_index[1]] + self.edge_self(e))
        e = self.norm_e(e + self.drop(self.edge_out(z)))
        return h, e


CONVS = {"gnn": NGGNNConv, "transformer": NGTConv}


class GraphProbes(nn.Module):
    """Learned probe inputs and, for a batch of networks, every node's values on them (module
    docstring): ``forward(wb) -> [B, N, K]`` in the neural graph's node order, not squashed.

    ``probes``: about K (``num_probes``) learned inputs ``[K, d]``, ``d = prod(input_shape)``,
    initialised as ``ProbeEncoder``'s ``init="auto"``. Node ``i``'s row is: an input neuron's
    probe coordinate, a hidden neuron's post-activation value (a channel's spatial mean), an
    output neuron's output, at each probe."""

    def __init__(self, spec: WeightSpaceSpec, probes: int):
        super().__init__()
        if probes < 1:
            raise InputError(f"probe features: expected at least 1 probe, found {probes}")
        d = math.prod(spec.input_shape)
        start = probe_grid(probes, d)
        if start is None:
            start = torch.randn(probes, d, generator=torch.Generator().manual_seed(0))
        self.spec = spec
        self.num_probes = start.shape[0]
        self.probes = nn.Parameter(start.clone())
        lay = graph_layout(spec)
        last = len(spec.layers) - 1
        # per group, in node order: None for the input neurons, else the layer that computes it
        self.sources: list[int | None] = [lay.bias_layer.get(g) for g in lay.groups]
        if self.sources.count(None) != 1 or self.sources[0] is not None or last not in self.sources:
            raise InputError(f"probe features: weight space {spec.architecture!r} is not a chain of layers "
                             "from one input group to the output")

    def forward(self, wb: WeightBatch) -> Tensor:
        if wb.spec != self.spec:
            raise InputError(f"probe features built for weight space {self.spec.architecture!r}, found "
                             f"{wb.spec.architecture!r}")
        if self.spec.activation is None and wb.activation is None:
            raise InputError("probe features run the networks, and this weight space's activation varies per "
                             "network: the batch must say which (WeightBatch.activation)")
        act = None if self.spec.activation is not None else wb.activation
        K, B = self.num_probes, len(wb)
        x = self.probes.view(K, *self.spec.input_shape)
        hidden: list[Tensor] = []
        out = population_forward(self.spec, [p.to(x.dtype) for p in wb.params()], x, activation=act,
                                 hidden=hidden)  # [B, K, out], hidden: [B, K, C(, *S)] per hidden layer
        if out.dim() != 3:
            raise InputError(f"probe features: expected outputs [B, K, out], found {list(out.shape)}")
        last = len(self.spec.layers) - 1
        parts = []
        for src in self.sources:
            if src is None:  # input neurons: the probes' coordinates (channels: their spatial mean)
                n_in = self.spec.groups[self.spec.layers[0].in_group]
                parts.append(x.reshape(K, n_in, -1).mean(-1).t().expand(B, n_in, K))
            else:
                h = out if src == last else hidden[src]
                parts.append(h.reshape(B, K, h.shape[2], -1).mean(-1).transpose(1, 2))
        return torch.cat(parts, 1)


class NGBackbone(nn.Module):
    """Weight features (``in_channels``) -> neural graph -> ``layers`` NG layers -> weight features.

    ``conv``: ``"gnn"`` (NG-GNN) or ``"transformer"`` (NG-T); ``channels``: the hidden width of nodes
    and edges. Without ``out_channels`` the output is the hidden features, rectified, ``channels``
    wide (a weight's edge features repeated over its kernel taps), what a pool reads; with it, a
    linear readout maps every node to ``out_channels`` neuron features and every edge to
    ``out_channels`` weight features per kernel tap, so ``out_channels=1`` is an equivariant
    weight -> weight map (``backbone(wb.features()).to_weights()``). ``node_features``: that many
    more features per node, passed to ``graph`` beside the weight features (the encoder's probe
    features), concatenated to each node's ``in_channels`` before the input projection.
    """

    def __init__(self, spec: WeightSpaceSpec, conv: str = "gnn", in_channels: int = 1, channels: int = 64,
                 layers: int = 4, heads: int = 1, dropout: float = 0.0, out_channels: int | None = None,
                 node_features: int = 0):
        super().__init__()
        if conv not in CONVS:
            raise InputError(f"neural graph layer must be one of {sorted(CONVS)}, found {conv!r}")
        self.spec, self.conv, self.in_channels = spec, conv, in_channels
        lay = graph_layout(spec)
        self.register_buffer("node_layer", lay.node_layer.clone(), persistent=False)
        self.register_buffer("fixed", lay.fixed.clone(), persistent=False)
        self.register_buffer("fixed_index", lay.fixed_index.clamp(min=0), persistent=False)
        self.register_buffer("edge_layer", lay.edge_layer.clone(), persistent=False)
        self.node_features = node_features
        self.node_in = nn.Linear(in_channels + node_features, channels)
        self.edge_in = nn.Linear(in_channels * lay.edge_dim, channels)
        self.layer_emb = nn.Embedding(len(lay.groups), channels)  # hidden neurons: their layer only
        self.fixed_emb = nn.Embedding(lay.num_fixed, channels)  # input/output neurons: one each
        self.edge_layer_emb = nn.Embedding(len(spec.layers), channels)  # tells conv edges from linear ones
        self.layers = nn.ModuleList(CONVS[conv](channels, heads, dropout) for _ in range(layers))
        if out_channels is not None:
            self.node_out = nn.Linear(channels, out_channels)
            self.edge_out = nn.Linear(channels, out_channels * lay.edge_dim)
        self.out_channels = channels if out_channels is None else out_channels
        self.linear_out = out_channels is not None

    def graph(self, feats: WeightFeatures, node_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Node and edge features after the NG layers: ``[B, N, channels]``, ``[B, E, channels]``;
        ``node_features [B, N, node_features]``: the extra node features (node order), if any."""
        if feats.spec != self.spec:
            raise InputError(f"neural graph backbone built for weight space {self.spec.architecture!r}, "
                             f"found features of {feats.spec.architecture!r} with other layers")
        if feats.channels != self.in_channels:
            raise InputError(f"neural graph backbone takes {self.in_channels} channels, found {feats.channels}")
        g = to_graph(feats)
        B = len(feats)
        x = g.x
        if self.node_features or node_features is not None:
            want = (B, graph_layout(self.spec).num_nodes, self.node_features)
            if node_features is None or tuple(node_features.shape) != want:
                raise InputError(f"neural graph backbone takes extra node features {list(want)}, found "
                                 f"{None if node_features is None else list(node_features.shape)}")
            x = torch.cat([x, node_features.reshape(B * want[1], -1).to(x.dtype)], -1)
        node_emb = torch.where(self.fixed.unsqueeze(-1), self.fixed_emb(self.fixed_index),
                               self.layer_emb(self.node_layer))  # [N, C], the same for every graph
        C = node_emb.shape[-1]
        h = (self.node_in(x).view(B, -1, C) + node_emb).flatten(0, 1)
        e = (self.edge_in(g.edge_attr).view(B, -1, C) + self.edge_layer_emb(self.edge_layer)).flatten(0, 1)
        reverse = g.edge_index.flip(0)
        for layer in self.layers:
            h, e = layer(h, e, g.edge_index, reverse)
        return h.view(B, -1, h.shape[-1]), e.view(B, -1, e.shape[-1])

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        h, e = self.graph(feats)
        lay = graph_layout(self.spec)
        if self.linear_out:
            return lay.features(self.node_out(h), self.edge_out(e))
        h, e = h.relu(), e.relu()
        B, C = h.shape[0], h.shape[-1]
        weights, biases = [], []
        for (s, t), layer in zip(lay.layer_edges, self.spec.layers):
            w = e[:, s:t].view(B, layer.out_features, layer.in_features, C).permute(0, 3, 1, 2)
            weights.append(w[(...,) + (None,) * len(layer.kernel)].expand(*w.shape, *layer.kernel))
            off = lay.group_offsets[layer.out_group]
            biases.append(h[:, off:off + layer.out_features].transpose(1, 2))
        return WeightFeatures(self.spec, weights, biases)


class NGEncoder(Encoder):
    """Invariant encoder of a weight space (MLP or CNN) through its neural graph: ``[B, out_dim]``.

    ``conv="gnn"`` is NG-GNN (``ngnn``), ``conv="transformer"`` NG-T (``ngt``); ``edge_readout``
    adds the mean over edges to the pooled node features. ``fourier`` > 0 encodes every weight and
    bias by random Fourier features first (Kofinas et al. do so), ``wsl.nn.base``. ``probe_features``
    > 0: about that many learned probes, every node's values on them as node features (module
    docstring, ``GraphProbes``); 0: none, the encoder as it was (same parameters)."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, conv: str = "gnn", hidden: int = 64, layers: int = 4,
                 heads: int = 1, dropout: float = 0.0, edge_readout: bool = True, fourier: int = 0,
                 fourier_scale: float = 1.0, probe_features: int = 0):
        super().__init__(spec, out_dim)
        self.encode, c_in = weight_encoding(fourier, fourier_scale)
        self.probes = GraphProbes(spec, probe_features) if probe_features > 0 else None
        k = self.probes.num_probes if self.probes is not None else 0
        self.backbone = NGBackbone(spec, conv, c_in, hidden, layers, heads, dropout, node_features=k)
        self.edge_readout = edge_readout
        self.head = mlp((3 if edge_readout else 2) * hidden, hidden, out_dim, 2, dropout)

    def pool(self, h: Tensor, e: Tensor) -> Tensor:
        """Mean and max over each graph's nodes (and the mean over its edges). All graphs of one
        spec have the same number of nodes and edges, so PyG's per-graph pooling is a reduction."""
        pooled = [h.mean(1), h.amax(1)]
        if self.edge_readout:
            pooled.append(e.mean(1))
        return torch.cat(pooled, -1)

    def forward(self, wb: WeightBatch, raw: WeightBatch | None = None) -> Tensor:
        """``raw``: the same networks unnormalized, for the probes to run (default: ``wb``)."""
        self.check_spec(wb)
        extra = None
        if self.probes is not None:
            extra = torch.asinh(self.probes(_probed(wb, raw)))
        return self.head(self.pool(*self.backbone.graph(self.encode(wb.features()), extra)))


def _probed(wb: WeightBatch, raw: WeightBatch | None) -> WeightBatch:
    """The networks the probes run: ``raw`` where given (checked against ``wb``), else ``wb``."""
    if raw is None:
        return wb
    if raw.spec != wb.spec or len(raw) != len(wb):
        raise InputError(f"raw weights: {len(raw)} networks of {raw.spec.architecture!r} for "
                         f"{len(wb)} of {wb.spec.architecture!r}")
    return raw
