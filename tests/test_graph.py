"""The neural graph: exact round trip, cached layout, and hidden permutations as node relabellings."""
import pytest
import torch

from zoo.architectures import build_spec
from zoo.weight_space import WeightSpaceSpec
from wsl.weights.graph import from_graph, graph_layout, to_graph
from wsl.weights import WeightBatch

SPECS = {
    "mlp": build_spec("mlp", (4,), 3, hidden=[6, 5]),
    "cnn": build_spec("cnn", (1, 8, 8), 3, channels=[3, 4]),
}


def random_batch(spec, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return WeightBatch.from_flat(spec, torch.randn(B, spec.num_params, generator=g))


def random_perms(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(spec.groups[name], generator=g) for name in spec.permutable}


def permute(wb, perms):
    """Permute hidden neurons: a layer's out axis (and bias) and the next layer's in axis alike."""
    ws, bs = [], []
    for layer, w, b in zip(wb.spec.layers, wb.weights, wb.biases):
        if layer.out_group in perms:
            w = w[:, perms[layer.out_group]]
            b = None if b is None else b[:, perms[layer.out_group]]
        if layer.in_group in perms:
            w = w[:, :, perms[layer.in_group]]
        ws.append(w)
        bs.append(b)
    return WeightBatch(wb.spec, ws, bs)


def dense(graph, lay, i):
    """Graph ``i`` as (node features [N, F], adjacency [N, N, D] indexed by (src, dst))."""
    N, E = lay.num_nodes, lay.num_edges
    x = graph.x[i * N:(i + 1) * N]
    ei = graph.edge_index[:, i * E:(i + 1) * E] - i * N
    A = torch.zeros(N, N, graph.edge_attr.shape[1])
    A[ei[0], ei[1]] = graph.edge_attr[i * E:(i + 1) * E]
    return x, A


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_round_trip_is_exact(arch):
    spec = SPECS[arch]
    wb = random_batch(spec, 5)
    back = from_graph(to_graph(wb), spec)
    for a, b in zip(wb.params(), back.params()):
        assert torch.equal(a, b)


def test_graph_contents_mlp():
    spec = SPECS["mlp"]
    wb = random_batch(spec, 3)
    g = to_graph(wb)
    lay = graph_layout(spec)
    assert lay.num_nodes == 4 + 6 + 5 + 3 and lay.num_edges == 4 * 6 + 6 * 5 + 5 * 3 and lay.edge_dim == 1
    assert g.num_graphs == 3 and g.x.shape == (3 * 18, 3) and g.edge_attr.shape == (3 * lay.num_edges, 1)
    x = g.x.view(3, 18, 3)
    assert torch.equal(x[:, :4, 0], torch.zeros(3, 4))  # input neurons have no bias
    assert torch.equal(x[:, 4:10, 0], wb.biases[0]) and torch.equal(x[:, 15:, 0], wb.biases[2])
    assert x[0, :, 1].tolist() == [0] * 4 + [1] * 6 + [2] * 5 + [3] * 3
    assert x[0, :, 2].tolist() == [1] * 4 + [0] * 11 + [1] * 3
    # Edge from input neuron 2 to hidden neuron 1 of graph 1 carries layers.0.weight[1, 1, 2].
    src, dst = 1 * 18 + 2, 1 * 18 + 4 + 1
    k = ((g.edge_index[0] == src) & (g.edge_index[1] == dst)).nonzero().item()
    assert g.edge_attr[k, 0] == wb.weights[0][1, 1, 2]
    assert torch.equal(g.batch, torch.arange(3).repeat_interleave(18))


def test_cnn_edges_hold_kernels_zero_padded():
    spec = SPECS["cnn"]
    wb = random_batch(spec, 2)
    g = to_graph(wb)
    lay = graph_layout(spec)
    assert lay.edge_dim == 9 and lay.num_nodes == 1 + 3 + 4 + 3
    e = g.edge_attr.view(2, lay.num_edges, 9)
    s, t = lay.layer_edges[1]  # conv 3 -> 4 channels
    assert torch.equal(e[:, s:t], wb.weights[1].reshape(2, 12, 9))
    s, t = lay.layer_edges[2]  # linear head: the weight in tap 0, the rest zero
    assert torch.equal(e[:, s:t, 0], wb.weights[2].reshape(2, 12)) and not e[:, s:t, 1:].any()


def test_data_list_matches_single_graphs():
    spec = SPECS["cnn"]
    wb = random_batch(spec, 3)
    graphs = to_graph(wb).to_data_list()
    assert len(graphs) == 3
    single = to_graph(wb[1])
    assert torch.equal(graphs[1].x, single.x) and torch.equal(graphs[1].edge_attr, single.edge_attr)
    assert torch.equal(graphs[1].edge_index, single.edge_index)


def test_layout_and_edge_index_are_cached():
    spec = SPECS["mlp"]
    assert graph_layout(spec) is graph_layout(WeightSpaceSpec.from_json(spec.to_json()))
    a, b = to_graph(random_batch(spec, 4, 0)), to_graph(random_batch(spec, 4, 1))
    assert a.edge_index is b.edge_index and a.batch is b.batch
    assert to_graph(random_batch(spec, 2)).edge_index.shape[1] == 2 * graph_layout(spec).num_edges


def test_from_graph_rejects_foreign_graphs():
    g = to_graph(random_batch(SPECS["mlp"], 2))
    with pytest.raises(ValueError, match="whole number"):
        from_graph(g, SPECS["cnn"])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_permuted_network_gives_relabelled_graph(arch):
    spec = SPECS[arch]
    lay = graph_layout(spec)
    wb = random_batch(spec, 2)
    perms = random_perms(spec, 3)
    # sigma[new node] = old node: identity on fixed groups, the hidden permutation inside each hidden group
    sigma = torch.arange(lay.num_nodes)
    for name, p in perms.items():
        off = lay.group_offsets[name]
        sigma[off:off + len(p)] = off + p
    assert not torch.equal(sigma, torch.arange(lay.num_nodes))
    g, gp = to_graph(wb), to_graph(permute(wb, perms))
    for i in range(2):
        x, A = dense(g, lay, i)
        xp, Ap = dense(gp, lay, i)
        assert torch.equal(xp, x[sigma])
        assert torch.equal(Ap, A[sigma][:, sigma])
        assert not torch.equal(Ap, A)  # the permutation did move weights
