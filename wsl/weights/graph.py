"""The neural graph of a network (Kofinas et al. 2024, "Graph Neural Networks for Learning
Equivariant Representations of Neural Networks").

Every neuron is a node: the input neurons, each hidden neuron and each output neuron (for a
convolution, one node per channel). Every weight is a directed edge from its input neuron to its
output neuron. Node features are ``[bias, layer index, fixed flag]``: the bias of the neuron (0 for
input neurons, which have none), the index of its neuron group in the layer chain (integral, ready
for an embedding) and 1.0 for input/output neurons, which no symmetry moves. Edge features are the
weight, or for a convolution its kernel taps flattened; every edge feature is zero-padded to the
largest kernel of the spec so that all edges share one dimension.

Permuting the hidden neurons of a network relabels the nodes of its graph and nothing else, which is
why a GNN on this graph is equivariant to those permutations by construction.

The layout of one graph (edge index, node layers, offsets) depends only on the spec; it is computed
once per spec and cached, and a batch of ``B`` networks reuses one offset edge index per ``B``.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch_geometric.data import Batch

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch

NODE_FEATURES = ("bias", "layer", "fixed")  # columns of ``x``


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
        self.node_layer = torch.repeat_interleave(torch.arange(len(order)), torch.tensor(sizes))
        self.fixed = torch.cat([torch.full((s,), g not in spec.permutable) for g, s in zip(order, sizes)])
        # Position of a fixed node among all fixed nodes (-1 for hidden nodes), for positional embeddings.
        self.fixed_index = torch.full((n,), -1, dtype=torch.long)
        self.fixed_index[self.fixed] = torch.arange(int(self.fixed.sum()))
        self.num_fixed = int(self.fixed.sum())

        # The layer whose bias lives on each group's nodes (None: input group, or a layer without bias).
        self.bias_layer: dict[str, int] = {}
        for i, layer in enumerate(spec.layers):
            if layer.in_features != spec.groups[layer.in_group] or layer.out_features != spec.groups[layer.out_group]:
                raise ValueError(f"{layer.name}: sizes {layer.out_features}x{layer.in_features} do not match "
                                 f"groups {layer.out_group!r} and {layer.in_group!r}")
            if layer.out_group in self.bias_layer:
                raise ValueError(f"neural graph: group {layer.out_group!r} is the output of two layers "
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
        self.node_features = torch.stack([torch.zeros(n), self.node_layer.float(), self.fixed.float()], 1)
        self._batched: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = {}

    def batched(self, B: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """``(edge_index [2, B*E], batch [B*N], ptr [B+1])`` of ``B`` stacked graphs, cached per
        ``(B, device)`` so that a training loop builds them once."""
        key = (B, str(torch.device(device)))
        if key not in self._batched:
            if len(self._batched) >= 16:  # a few batch sizes per run; do not grow without bound
                self._batched.pop(next(iter(self._batched)))
            shift = (torch.arange(B) * self.num_nodes).view(B, 1, 1)
            ei = (self.edge_index.unsqueeze(0) + shift).permute(1, 0, 2).reshape(2, -1)
            batch = torch.arange(B).repeat_interleave(self.num_nodes)
            ptr = torch.arange(B + 1) * self.num_nodes
            self._batched[key] = (ei.to(device), batch.to(device), ptr.to(device))
        return self._batched[key]


@functools.lru_cache(maxsize=64)
def _layout_from_json(spec_json: str) -> GraphLayout:
    return GraphLayout(WeightSpaceSpec.from_json(spec_json))


def graph_layout(spec: WeightSpaceSpec) -> GraphLayout:
    """The cached layout of ``spec`` (keyed by its JSON, since a spec holds a dict and is unhashable)."""
    return _layout_from_json(spec.to_json())


def to_graph(wb: WeightBatch) -> Batch:
    """A batch of networks as one ``torch_geometric`` batch of neural graphs.

    ``x [B*N, 3]`` (bias, layer index, fixed flag), ``edge_attr [B*E, D]``, ``edge_index`` offset per
    graph, ``batch`` and ``ptr``. Built with tensor ops only; ``to_data_list()`` works on the result.
    """
    lay = graph_layout(wb.spec)
    B, dev, dtype = len(wb), wb.weights[0].device, wb.weights[0].dtype
    bias = []
    for g in lay.groups:
        i = lay.bias_layer.get(g)
        b = wb.biases[i] if i is not None else None
        bias.append(b if b is not None else torch.zeros(B, wb.spec.groups[g], device=dev, dtype=dtype))
    x = lay.node_features.to(device=dev, dtype=dtype).unsqueeze(0).repeat(B, 1, 1)
    x[:, :, 0] = torch.cat(bias, 1)
    edges = []
    for w in wb.weights:
        e = w.reshape(B, w.shape[1] * w.shape[2], -1)
        edges.append(torch.nn.functional.pad(e, (0, lay.edge_dim - e.shape[2])))
    edge_attr = torch.cat(edges, 1)
    edge_index, batch, ptr = lay.batched(B, dev)
    out = Batch(x=x.reshape(B * lay.num_nodes, -1), edge_index=edge_index,
                edge_attr=edge_attr.reshape(B * lay.num_edges, -1), batch=batch, ptr=ptr)
    # What Batch.from_data_list would record, so that to_data_list / get_example work.
    node_slice, edge_slice = torch.arange(B + 1) * lay.num_nodes, torch.arange(B + 1) * lay.num_edges
    out._num_graphs = B
    out._slice_dict = {"x": node_slice, "edge_index": edge_slice, "edge_attr": edge_slice}
    out._inc_dict = {"x": torch.zeros(B, dtype=torch.long), "edge_index": node_slice[:-1],
                     "edge_attr": torch.zeros(B, dtype=torch.long)}
    return out


def from_graph(batch: Batch, spec: WeightSpaceSpec) -> WeightBatch:
    """The exact inverse of ``to_graph``: read biases from ``x[:, 0]`` and weights from ``edge_attr``.

    The batch must hold graphs in ``to_graph``'s node and edge order (features may have been
    transformed, e.g. by an equivariant GNN that outputs new weights)."""
    lay = graph_layout(spec)
    N, E = lay.num_nodes, lay.num_edges
    if batch.x.shape[0] % N or batch.edge_attr.shape[0] % E or batch.x.shape[0] // N != batch.edge_attr.shape[0] // E:
        raise ValueError(f"graph batch with {batch.x.shape[0]} nodes and {batch.edge_attr.shape[0]} edges is not a "
                         f"whole number of {spec.architecture!r} graphs ({N} nodes, {E} edges each)")
    if batch.edge_attr.shape[1] != lay.edge_dim:
        raise ValueError(f"edge_attr has {batch.edge_attr.shape[1]} features, the spec needs {lay.edge_dim}")
    B = batch.x.shape[0] // N
    x = batch.x[:, 0].reshape(B, N)
    e = batch.edge_attr.reshape(B, E, lay.edge_dim)
    weights, biases = [], []
    for i, layer in enumerate(spec.layers):
        s, t = lay.layer_edges[i]
        k = math.prod(layer.kernel)
        weights.append(e[:, s:t, :k].reshape(B, *layer.weight.shape))
        if layer.bias:
            off = lay.group_offsets[layer.out_group]
            biases.append(x[:, off:off + layer.out_features])
        else:
            biases.append(None)
    return WeightBatch(spec, weights, biases)
