"""Neural-graph networks (NG-GNN, NG-T on PyG and on dense tensors): backbones equivariant to
hidden permutations, encoders invariant but not constant, fixed neurons told apart, gradients to
every parameter, a tiny overfit, and the dense models computing the PyG ones' function."""
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SPECS, hidden_perms, max_diff, random_features, random_weights
from wsl.nn import build_backbone, build_encoder
from wsl.nn.neural_graph import NGBackbone, NGEncoder
from wsl.nn.dense_graph import DenseNGEncoder
from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.symmetry import permute

ROOT = Path(__file__).resolve().parents[1]
CONVS = {"ngnn": "gnn", "ngt": "transformer"}
ENCODERS = ["ngnn", "ngnn-dense", "ngt", "ngt-dense"]


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
@pytest.mark.parametrize("conv", ["gnn", "transformer"])
@pytest.mark.parametrize("kw", [{}, {"edge_readout": False}, {"fourier": 3, "probe_features": 4}])
def test_dense_graph_computes_the_pyg_function(arch, conv, kw):
    """Same parameters, same outputs (and gradients): a checkpoint of either loads into the other."""
    spec = SPECS[arch]
    torch.manual_seed(0)
    pyg = NGEncoder(spec, 2, conv, hidden=16, layers=2, heads=2, **kw).double()
    dense = DenseNGEncoder(spec, 2, conv, hidden=16, layers=2, heads=2, **kw).double()
    dense.load_state_dict(pyg.state_dict())
    wb = random_weights(spec, n=5)
    y = pyg(wb)
    assert (y - dense(wb)).abs().max() < 1e-10
    y.square().sum().backward()
    dense(wb).square().sum().backward()
    for (name, p), q in zip(pyg.named_parameters(), dense.parameters()):
        if p.grad is None:  # unused by the output (the last edge update without an edge readout)
            assert q.grad is None or not q.grad.any(), name
        else:
            assert (p.grad - q.grad).abs().max() < 1e-9, name


def test_config_kwargs_still_build():
    """``configs/predict/*ngnn*.yaml`` pass these."""
    model = build_encoder("ngnn", SPECS["mlp"], 3, hidden=16, layers=1, heads=4, dropout=0.1, edge_readout=False)
    assert model(random_weights(SPECS["mlp"], dtype=torch.float32)).shape == (4, 3)
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("ngt", SPECS["mlp"], 3, hidden=10, heads=4)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs" / "predict").glob("*_ng*.yaml")))
def test_shipped_graph_configs_build_their_encoder_and_its_dense_twin(config):
    cfg = yaml.safe_load((ROOT / "configs" / "predict" / config).read_text())["model"]["init_args"]
    spec = SPECS["mlp"]
    kw = {**cfg["encoder_kwargs"], "hidden": 8, "layers": 1}
    torch.manual_seed(0)
    pyg = build_encoder(cfg["encoder"], spec, 3, **kw)
    dense = build_encoder(f"{cfg['encoder']}-dense", spec, 3, **kw)
    dense.load_state_dict(pyg.state_dict())
    wb = random_weights(spec, dtype=torch.float32)
    torch.testing.assert_close(dense(wb), pyg(wb), rtol=1e-4, atol=1e-5)


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
