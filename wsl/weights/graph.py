"""The neural graph of a network (Kofinas et al. 2024, "Graph Neural Networks for Learning
Equivariant Representations of Neural Networks").

Every neuron is a node: the input neurons, each hidden neuron and each output neuron (for a
convolution, one node per channel). Every weight is a directed edge from its input neuron to its
output neuron. A batch of networks (``WeightBatch``) or of weight-shaped features with ``C``
channels (``WeightFeatures``) becomes one ``torch_geometric`` batch:

- ``x [B*N, C]``: a neuron's features, i.e. its bias for a batch of weights (zeros for input neurons,
  which have none, and for the outputs of a layer without bias);
- ``edge_attr [B*E, C * D]``: a weight's features, channel-major; for a convolution the kernel taps
  of each channel, every kernel zero-padded to ``D``, the largest kernel of the spec (``D = 1`` for
  an MLP), so that all edges share one dimension;
- ``edge_index``, ``batch``, ``ptr`` as usual, and the structure of the graph, the same for every
  network: ``node_layer [B*N]`` (index of the neuron's group along the layer chain), ``node_fixed
  [B*N]`` (input/output neurons, which no symmetry moves) and ``edge_layer [B*E]`` (the layer a
  weight belongs to).

Permuting the hidden neurons of a network relabels the nodes of its graph and nothing else, which is
why a GNN on this graph is equivariant to those permutations by construction.

The layout of one graph depends only on the spec; it is computed once per spec and cached. The
batched structure of ``B`` graphs is made by ``Batch.from_data_list`` from one template graph (so
``to_data_list`` and ``get_example`` work) and cached per ``(B, device)``; each call only sets the
features, on a shallow copy that shares the cached index tensors.
"""
from __future__ import annotations

import copy
import functools
import math

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch, WeightFeatures
from zoo.errors import InputError


class GraphLayout:
    """Everything about the neural graph that depends on the spec only, never on the weights.

    Nodes are ordered group by group along the layer chain (input group first), and inside a group
    by neuron index. Edges are ordered layer by layer, and inside a layer in the row-major order of
    the weight ``[out, in]``, so a layer's weight reshapes straight into its edge features.
    """

    def __init__(self, spec: WeightSpaceSpec):
        self.spec = spec
        order: list[str] = []
        for layer in spec.layers:
            for g in (layer.in_group, layer.out_group):
                if g not in order:
                    order.append(g)
        self.groups = order
        self.group_offsets: dict[str, int] = {}
        n = 0
        for g in order:
            self.group_offsets[g] = n
            n += spec.groups[g]
        self.num_nodes = n
        sizes = [spec.groups[g] for g in order]
        self.group_sizes = sizes
        self.node_layer = torch.repeat_interleave(torch.arange(len(order)), torch.tensor(sizes))
        self.fixed = torch.cat([torch.full((s,), g not in spec.permutable) for g, s in zip(order, sizes)])
        # Position of a fixed node among all fixed nodes (-1 for hidden nodes), for positional embeddings.
        self.fixed_index = torch.full((n,), -1, dtype=torch.long)
        self.fixed_index[self.fixed] = torch.arange(int(self.fixed.sum()))
        self.num_fixed = int(self.fixed.sum())

        # The layer whose bias (neuron features) lives on each group's nodes; the input group has none.
        self.bias_layer: dict[str, int] = {}
        for i, layer in enumerate(spec.layers):
            if layer.in_features != spec.groups[layer.in_group] or layer.out_features != spec.groups[layer.out_group]:
                raise InputError(f"{layer.name}: sizes {layer.out_features}x{layer.in_features} do not match "
                                 f"groups {layer.out_group!r} and {layer.in_group!r}")
            if layer.out_group in self.bias_layer:
                raise InputError(f"neural graph: group {layer.out_group!r} is the output of two layers "
                                 f"({spec.layers[self.bias_layer[layer.out_group]].name} and {layer.name})")
            self.bias_layer[layer.out_group] = i

        self.edge_dim = max([math.prod(layer.kernel) for layer in spec.layers] + [1])
        srcs, dsts, layers, slices = [], [], [], []
        e = 0
        for i, layer in enumerate(spec.layers):
            o = torch.arange(layer.out_features).repeat_interleave(layer.in_features)
            j = torch.arange(layer.in_features).repeat(layer.out_features)
            srcs.append(j + self.group_offsets[layer.in_group])
            dsts.append(o + self.group_offsets[layer.out_group])
            layers.append(torch.full((o.numel(),), i))
            slices.append((e, e + o.numel()))
            e += o.numel()
        self.edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])
        self.edge_layer = torch.cat(layers)
        self.layer_edges = slices  # per layer: (start, end) in one graph's edges
        self.num_edges = e
        # One graph without features: zero-width placeholders, so that batching records their slices.
        self.template = Data(x=torch.empty(n, 0), edge_index=self.edge_index, edge_attr=torch.empty(e, 0),
                             node_layer=self.node_layer, node_fixed=self.fixed, edge_layer=self.edge_layer)
        self._batched: dict[tuple[int, str], Batch] = {}

    def batched(self, B: int, device: torch.device | str = "cpu") -> Batch:
        """``B`` copies of the template graph batched by ``Batch.from_data_list`` (offset
        ``edge_index``, ``batch``, ``ptr``, slices for ``to_data_list``), cached per ``(B, device)``
        so that a training loop builds it once. Shared: set features on a shallow copy only."""
        key = (B, str(torch.device(device)))
        if key not in self._batched:
            if len(self._batched) >= 16:  # a few batch sizes per run; do not grow without bound
                self._batched.pop(next(iter(self._batched)))
            self._batched[key] = Batch.from_data_list([self.template] * B).to(device)
        return self._batched[key]

    def node_features(self, feats: WeightFeatures) -> Tensor:
        """Neuron features ``[B, C, out]`` per layer -> node features ``[B, N, C]`` in node order."""
        B, C = len(feats), feats.channels
        first = feats.biases[0]
        parts = []
        for g, n in zip(self.groups, self.group_sizes):
            i = self.bias_layer.get(g)
            parts.append(first.new_zeros(B, n, C) if i is None else feats.biases[i].transpose(1, 2))
        return torch.cat(parts, 1)

    def edge_features(self, feats: WeightFeatures) -> Tensor:
        """Weight features ``[B, C, out, in, *k]`` per layer -> edge features ``[B, E, C * edge_dim]``
        (channel-major, each channel's taps zero-padded to ``edge_dim``)."""
        B, C = len(feats), feats.channels
        parts = []
        for w in feats.weights:
            e = w.movedim(1, 3).reshape(B, w.shape[2] * w.shape[3], C, -1)  # [B, out*in, C, taps]
            if e.shape[3] < self.edge_dim:
                e = torch.nn.functional.pad(e, (0, self.edge_dim - e.shape[3]))
            parts.append(e.flatten(2))
        return torch.cat(parts, 1)

    def features(self, x: Tensor, edge_attr: Tensor) -> WeightFeatures:
        """The inverse of ``node_features`` and ``edge_features``: ``x [B*N or B, N, C]`` and
        ``edge_attr [B*E or B, E, C * edge_dim]`` -> weight features (input neurons and padded taps
        dropped)."""
        N, E, D = self.num_nodes, self.num_edges, self.edge_dim
        C = x.shape[-1]
        if edge_attr.shape[-1] != C * D:
            raise InputError(f"graph features: edges carry {edge_attr.shape[-1]} features; {C} channels of "
                             f"{self.spec.architecture!r} weights need {C} * {D}")
        B = x.numel() // (N * C)
        x = x.reshape(B, N, C)
        e = edge_attr.reshape(B, E, C, D)
        weights, biases = [], []
        for (s, t), layer in zip(self.layer_edges, self.spec.layers):
            k = math.prod(layer.kernel)
            w = e[:, s:t, :, :k].reshape(B, layer.out_features, layer.in_features, C, *layer.kernel)
            weights.append(w.movedim(3, 1))
            off = self.group_offsets[layer.out_group]
            biases.append(x[:, off:off + layer.out_features].transpose(1, 2))
        return WeightFeatures(self.spec, weights, biases)


@functools.lru_cache(maxsize=64)
def graph_layout(spec: WeightSpaceSpec) -> GraphLayout:
    """The cached layout of ``spec`` (specs hash and compare by value, so equal specs share it)."""
    return GraphLayout(spec)


def to_graph(w: WeightBatch | WeightFeatures) -> Batch:
    """A batch of networks (or of ``C``-channel weight features) as one ``torch_geometric`` batch of
    neural graphs: ``x [B*N, C]``, ``edge_attr [B*E, C*D]`` and the cached structure (see the module
    docstring). ``to_data_list()`` gives one graph per network."""
    feats = w.features() if isinstance(w, WeightBatch) else w
    lay = graph_layout(feats.spec)
    B = len(feats)
    out = copy.copy(lay.batched(B, feats.weights[0].device))
    out.x = lay.node_features(feats).reshape(B * lay.num_nodes, -1)
    out.edge_attr = lay.edge_features(feats).reshape(B * lay.num_edges, -1)
    return out


def features_from_graph(batch: Batch, spec: WeightSpaceSpec) -> WeightFeatures:
    """The exact inverse of ``to_graph`` on weight features: neuron features from ``x``, weight
    features from ``edge_attr`` (``C`` channels, read from ``x``'s width).

    The batch must hold graphs of ``spec`` in ``to_graph``'s node and edge order; its features may
    have been transformed, e.g. by an equivariant GNN that outputs new weights."""
    lay = graph_layout(spec)
    N, E = lay.num_nodes, lay.num_edges
    n_x, n_e = batch.x.shape[0], batch.edge_attr.shape[0]
    if n_x % N or n_e % E or n_x // N != n_e // E:
        raise InputError(f"graph batch with {n_x} nodes and {n_e} edges is not a whole number of "
                         f"{spec.architecture!r} graphs ({N} nodes, {E} edges each)")
    return lay.features(batch.x, batch.edge_attr)


def from_graph(batch: Batch, spec: WeightSpaceSpec) -> WeightBatch:
    """The exact inverse of ``to_graph`` on a batch of weights: biases from ``x``, weights from
    ``edge_attr`` (one channel)."""
    return features_from_graph(batch, spec).to_weights()
