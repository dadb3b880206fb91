"""Neural-graph networks (NG-GNN, NG-T on PyG; NG-GNN on dense tensors): backbones equivariant to
hidden permutations, encoders invariant but not constant, fixed neurons told apart, gradients to
every parameter, a tiny overfit, and the dense NG-GNN computing the PyG one's function."""
import pytest
import torch

from conftest import SPECS, hidden_perms, max_diff, random_features, random_weights
from wsl.nn import build_backbone, build_encoder
from wsl.nn.neural_graph import NGBackbone, NGEncoder
from wsl.nn.dense_ngnn import DenseNGGNN
from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.symmetry import permute

CONVS = {"ngnn": "gnn", "ngt": "transformer"}
ENCODERS = ["ngnn", "ngnn-dense", "ngt"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def encoder(name, spec, **kw):
    torch.manual_seed(0)
    return build_encoder(name, spec, 2, **{"hidden": 16, "layers": 2, "heads": 2, **kw}).double()


def backbone(name, spec, in_channels=1, out_channels=None):
    torch.manual_seed(0)
    return NGBackbone(spec, CONVS[name], in_channels, channels=8, layers=2, heads=2,
                      out_channels=out_channels).double()


def swap_inputs(x):
    """Swap input neurons 0 and 1: not a symmetry, the first layer's input axis is fixed."""
    p0 = torch.tensor([1, 0, 2, 3])
    if isinstance(x, WeightBatch):
        return WeightBatch(x.spec, [x.weights[0][:, :, p0], *x.weights[1:]], x.biases)
    return WeightFeatures(x.spec, [x.weights[0][:, :, :, p0], *x.weights[1:]], x.biases)


def swap_outputs(wb):
    """Swap output neurons 0 and 1 (the last layer's rows): not a symmetry either."""
    p = torch.tensor([1, 0, 2])
    return WeightBatch(wb.spec, [*wb.weights[:-1], wb.weights[-1][:, p]], [*wb.biases[:-1], wb.biases[-1][:, p]])


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("in_channels,out_channels", [(1, None), (1, 1), (2, 3)])
def test_backbone_equivariant(name, arch, in_channels, out_channels):
    spec = SPECS[arch]
    net = backbone(name, spec, in_channels, out_channels)
    feats = random_features(spec, in_channels)
    perms = hidden_perms(spec, seed=4)
    with torch.no_grad():
        out, out_of_perm = net(feats), net(permute(feats, perms))
    assert out.channels == (8 if out_channels is None else out_channels)
    assert max_diff(out_of_perm, permute(out, perms)) < 1e-10
    assert max_diff(out_of_perm, out) > 1e-3  # equivariant, not invariant
    if out_channels is None:  # hidden features, rectified, ready to pool
        assert min(t.min().item() for t in [*out.weights, *out.biases]) >= 0
    if out_channels == 1:  # a weight -> weight map
        wb = net(random_weights(spec).features()).to_weights()
        assert [w.shape for w in wb.weights] == [w.shape for w in random_weights(spec).weights]


@pytest.mark.parametrize("name", CONVS)
def test_backbone_tells_input_neurons_apart(name):
    spec = SPECS["mlp"]
    net = backbone(name, spec, 2, 2)
    feats = random_features(spec, 2)
    with torch.no_grad():
        assert max_diff(net(swap_inputs(feats)), swap_inputs(net(feats))) > 1e-3


def test_backbones_are_registered():
    spec = SPECS["cnn"]
    for name in CONVS:
        net = build_backbone(name, spec, in_channels=1, out_channels=1, channels=8, layers=1)
        assert isinstance(net, NGBackbone) and net.conv == CONVS[name]
        assert net(random_weights(spec, dtype=torch.float32).features()).channels == 1


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_invariant_and_not_constant(name, arch):
    spec = SPECS[arch]
    model = encoder(name, spec).eval()
    wb = random_weights(spec, n=6, std=0.5)
    with torch.no_grad():
        y = model(wb)
        for seed in range(3):
            assert (model(permute(wb, hidden_perms(spec, n=6, seed=seed))) - y).abs().max() < 1e-10
        assert (model(swap_outputs(wb)) - y).abs().max() > 1e-4  # output neurons are told apart
        if arch == "mlp":  # and input neurons (the CNN has one input channel)
            assert (model(swap_inputs(wb)) - y).abs().max() > 1e-4
    assert (y[1:] - y[:1]).abs().max() > 1e-3  # different networks, different codes


@pytest.mark.parametrize("arch", SPECS)
def test_dense_ngnn_computes_the_pyg_function(arch):
    """Same parameters, same outputs: a checkpoint of either loads into the other."""
    spec = SPECS[arch]
    pyg = encoder("ngnn", spec)
    dense = DenseNGGNN(spec, 2, hidden=16, layers=2, heads=2).double()
    dense.load_state_dict(pyg.state_dict())
    wb = random_weights(spec, n=5)
    assert (pyg(wb) - dense(wb)).abs().max() < 1e-10
    no_edges = NGEncoder(spec, 2, "gnn", hidden=16, layers=2, edge_readout=False).double()
    dense = DenseNGGNN(spec, 2, hidden=16, layers=2, edge_readout=False).double()
    dense.load_state_dict(no_edges.state_dict())
    assert (no_edges(wb) - dense(wb)).abs().max() < 1e-10


def test_config_kwargs_still_build():
    """``configs/predict/*ngnn*.yaml`` pass these."""
    model = build_encoder("ngnn", SPECS["mlp"], 3, hidden=16, layers=1, heads=4, dropout=0.1, edge_readout=False)
    assert model(random_weights(SPECS["mlp"], dtype=torch.float32)).shape == (4, 3)
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("ngt", SPECS["mlp"], 3, hidden=10, heads=4)


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_all_parameters(name, arch):
    spec = SPECS[arch]
    model = encoder(name, spec)
    out = model(random_weights(spec))
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("name", CONVS)
def test_backbone_gradients_reach_all_parameters(name):
    spec = SPECS["cnn"]
    net = backbone(name, spec, 2, 1)
    out = net(random_features(spec, 2))
    sum((t * torch.randn_like(t)).sum() for t in [*out.weights, *out.biases]).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", CONVS)
def test_tiny_overfit(name, arch):
    spec = SPECS[arch]
    model = encoder(name, spec).float()
    wb = random_weights(spec, seed=5, n=16, dtype=torch.float32, std=0.5)
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(wb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
