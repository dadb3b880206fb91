"""The neural graph: exact round trip (weights and multi-channel features), batching by PyG, the
cached layout, and hidden permutations as node relabellings."""
import pytest
import torch

from conftest import SPECS, hidden_perms, max_diff, random_features, random_weights
from zoo.weight_space import WeightSpaceSpec
from wsl.weights import WeightFeatures
from wsl.weights.graph import features_from_graph, from_graph, graph_layout, to_graph
from wsl.weights.symmetry import permute


def dense(graph, lay, i):
    """Graph ``i`` as (node features [N, F], adjacency [N, N, D] indexed by (src, dst))."""
    N, E = lay.num_nodes, lay.num_edges
    x = graph.x[i * N:(i + 1) * N]
    ei = graph.edge_index[:, i * E:(i + 1) * E] - i * N
    A = torch.zeros(N, N, graph.edge_attr.shape[1], dtype=graph.edge_attr.dtype)
    A[ei[0], ei[1]] = graph.edge_attr[i * E:(i + 1) * E]
    return x, A


@pytest.mark.parametrize("arch", SPECS)
def test_round_trip_is_exact(arch):
    spec = SPECS[arch]
    wb = random_weights(spec, n=5)
    back = from_graph(to_graph(wb), spec)
    for a, b in zip(wb.params(), back.params()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arch", SPECS)
def test_features_round_trip_is_exact(arch):
    spec = SPECS[arch]
    feats = random_features(spec, 3, n=2)
    g = to_graph(feats)
    lay = graph_layout(spec)
    assert g.x.shape == (2 * lay.num_nodes, 3) and g.edge_attr.shape == (2 * lay.num_edges, 3 * lay.edge_dim)
    assert max_diff(features_from_graph(g, spec), feats) == 0.0
    with pytest.raises(ValueError, match="3 channels"):
        from_graph(g, spec)  # three channels are features, not weights


def test_graph_contents_mlp():
    spec = SPECS["mlp"]
    wb = random_weights(spec, n=3)
    g = to_graph(wb)
    lay = graph_layout(spec)
    assert lay.num_nodes == 4 + 6 + 5 + 3 and lay.num_edges == 4 * 6 + 6 * 5 + 5 * 3 and lay.edge_dim == 1
    assert g.num_graphs == 3 and g.x.shape == (3 * 18, 1) and g.edge_attr.shape == (3 * lay.num_edges, 1)
    x = g.x.view(3, 18)
    assert torch.equal(x[:, :4], torch.zeros(3, 4, dtype=x.dtype))  # input neurons have no bias
    assert torch.equal(x[:, 4:10], wb.biases[0]) and torch.equal(x[:, 15:], wb.biases[2])
    assert g.node_layer[:18].tolist() == [0] * 4 + [1] * 6 + [2] * 5 + [3] * 3
    assert g.node_fixed[:18].tolist() == [True] * 4 + [False] * 11 + [True] * 3
    assert g.edge_layer[:lay.num_edges].tolist() == [0] * 24 + [1] * 30 + [2] * 15
    # Edge from input neuron 2 to hidden neuron 1 of graph 1 carries layers.0.weight[1, 1, 2].
    src, dst = 1 * 18 + 2, 1 * 18 + 4 + 1
    k = ((g.edge_index[0] == src) & (g.edge_index[1] == dst)).nonzero().item()
    assert g.edge_attr[k, 0] == wb.weights[0][1, 1, 2]
    assert torch.equal(g.batch, torch.arange(3).repeat_interleave(18))
    assert torch.equal(g.ptr, torch.arange(4) * 18)


def test_cnn_edges_hold_kernels_zero_padded():
    spec = SPECS["cnn"]
    wb = random_weights(spec, n=2)
    g = to_graph(wb)
    lay = graph_layout(spec)
    assert lay.edge_dim == 9 and lay.num_nodes == 1 + 3 + 4 + 3
    e = g.edge_attr.view(2, lay.num_edges, 9)
    s, t = lay.layer_edges[1]  # conv 3 -> 4 channels
    assert torch.equal(e[:, s:t], wb.weights[1].reshape(2, 12, 9))
    s, t = lay.layer_edges[2]  # linear head: the weight in tap 0, the rest zero
    assert torch.equal(e[:, s:t, 0], wb.weights[2].reshape(2, 12)) and not e[:, s:t, 1:].any()


@pytest.mark.parametrize("arch", SPECS)
def test_data_list_matches_single_graphs(arch):
    spec = SPECS[arch]
    feats = random_features(spec, 2, n=3)
    graphs = to_graph(feats).to_data_list()
    assert len(graphs) == 3
    one = WeightFeatures(spec, [w[1:2] for w in feats.weights], [b[1:2] for b in feats.biases])
    single = to_graph(one)
    for key in ("x", "edge_attr", "edge_index", "node_layer", "node_fixed", "edge_layer"):
        assert torch.equal(graphs[1][key], single[key]), key
    assert max_diff(features_from_graph(graphs[1], spec), one) == 0.0


def test_batched_structure_is_cached_and_shared():
    spec = SPECS["mlp"]
    assert graph_layout(spec) is graph_layout(WeightSpaceSpec.from_json(spec.to_json()))  # keyed by value
    a, b = to_graph(random_weights(spec, 0)), to_graph(random_weights(spec, 1))
    assert a.edge_index is b.edge_index and a.batch is b.batch
    assert a.x is not b.x and not torch.equal(a.x, b.x)  # features are set on a copy, never on the cache
    assert graph_layout(spec).batched(4).x.shape == (4 * graph_layout(spec).num_nodes, 0)
    assert to_graph(random_weights(spec, n=2)).edge_index.shape[1] == 2 * graph_layout(spec).num_edges


def test_from_graph_rejects_foreign_graphs():
    g = to_graph(random_weights(SPECS["mlp"], n=2))
    with pytest.raises(ValueError, match="whole number"):
        from_graph(g, SPECS["cnn"])


@pytest.mark.parametrize("arch", SPECS)
def test_permuted_network_gives_relabelled_graph(arch):
    spec = SPECS[arch]
    lay = graph_layout(spec)
    wb = random_weights(spec, n=2)
    perms = hidden_perms(spec, n=2, seed=3)
    gp = to_graph(permute(wb, perms))
    g = to_graph(wb)
    for i in range(2):
        # sigma[new node] = old node: identity on fixed groups, the hidden permutation inside each hidden group
        sigma = torch.arange(lay.num_nodes)
        for name, p in perms.items():
            off = lay.group_offsets[name]
            sigma[off:off + p.shape[1]] = off + p[i]
        x, A = dense(g, lay, i)
        xp, Ap = dense(gp, lay, i)
        assert torch.equal(xp, x[sigma])
        assert torch.equal(Ap, A[sigma][:, sigma])
        assert not torch.equal(Ap, A)  # the permutation did move weights
