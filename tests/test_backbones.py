"""Equivariant layers and backbones (weight features -> weight features): permuting the input
network's hidden neurons permutes the output the same way; fixed (input/output) neurons are told
apart; layers compose in nn.Sequential; a backbone learns the identity map on a zoo's weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import SPECS, hidden_perms, max_diff, random_features, random_weights
from wsl.nn import BACKBONES, build_backbone
from wsl.nn.base import Elementwise
from wsl.nn.dwsnet import DWSLayer, DWSNetEncoder
from wsl.nn.nfn import HNPLinear, NPLinear
from wsl.nn.pool import InvariantPool
from wsl.weights import WeightFeatures
from wsl.weights.symmetry import permute, random_permutations

B = 4
LAYERS = {"hnp": HNPLinear, "np": NPLinear, "dwsnet": DWSLayer}


def supports(name: str, arch: str) -> bool:
    return not (name == "dwsnet" and arch == "cnn")  # DWSNet is derived for MLP weight spaces


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("c_in", [1, 3])
def test_layer_equivariant(arch, name, c_in):
    if not supports(name, arch):
        pytest.skip("DWSNet: MLP weight spaces only")
    spec = SPECS[arch]
    torch.manual_seed(0)
    layer = LAYERS[name](spec, c_in, 5).double()
    with torch.no_grad():  # non-zero biases, so the per-index I/O biases are exercised too
        for p in (layer.bias if name != "dwsnet" else layer.biases):
            p.normal_()
    feats = random_features(spec, c_in)
    perms = hidden_perms(spec, seed=2)
    out = layer(feats)
    out_of_perm = layer(permute(feats, perms))
    assert [tuple(w.shape) for w in out.weights] == [(B, 5, *w.shape[2:]) for w in feats.weights]
    assert [tuple(b.shape) for b in out.biases] == [(B, 5, b.shape[2]) for b in feats.biases]
    assert max_diff(out_of_perm, permute(out, perms)) < 1e-10
    assert max_diff(out_of_perm, out) > 1e-3  # equivariant, not trivially invariant


@pytest.mark.parametrize("name", LAYERS)
def test_layer_treats_input_neurons_as_fixed(name):
    """Per-index weights on the input axis: permuting the network's inputs is not a symmetry."""
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    layer = LAYERS[name](spec, 2, 4).double()
    with torch.no_grad():  # NP tells input neurons apart by its per-index I/O bias alone
        for p in (layer.bias if name != "dwsnet" else layer.biases):
            p.normal_()
    feats = random_features(spec, 2)
    p0 = torch.tensor([1, 0, 2, 3])

    def swap_inputs(f: WeightFeatures) -> WeightFeatures:
        return WeightFeatures(spec, [f.weights[0][:, :, :, p0], *f.weights[1:]], f.biases)

    assert max_diff(layer(swap_inputs(feats)), swap_inputs(layer(feats))) > 1e-3


def test_dws_layer_couples_all_layers():
    """Inter-layer blocks: changing the last layer's weights changes every output tensor, including
    the first layer's weights and biases, and changing a bias changes the weights."""
    spec = SPECS["mlp"]
    torch.manual_seed(2)
    layer = DWSLayer(spec, 2, 2).double()
    xs = [t for pair in zip(*(lambda f: (f.weights, f.biases))(random_features(spec, 2, n=2))) for t in pair]
    ys = layer.forward_tensors(xs)
    for k in (4, 5, 1):  # layers.2.weight, layers.2.bias, layers.0.bias
        moved = [x + (5.0 if i == k else 0.0) for i, x in enumerate(xs)]
        for u, (a, b) in enumerate(zip(layer.forward_tensors(moved), ys)):
            assert (a - b).abs().max() > 1e-4, (k, u)


def test_dwsnet_rejects_cnn_weight_spaces():
    with pytest.raises(ValueError, match="conv2d"):
        DWSNetEncoder(SPECS["cnn"], 2)
    with pytest.raises(ValueError, match="MLP weight spaces only"):
        DWSLayer(SPECS["cnn"], 1, 4)


def test_lift_keeps_kernel_taps_and_zero_neurons_for_bias_free_layers():
    spec = SPECS["cnn"]
    wb = random_weights(spec)
    feats = wb.features()
    assert feats.weights[1].shape == (B, 1, 4, 3, 3, 3) and feats.biases[1].shape == (B, 1, 4)
    ws, _ = feats.channels_last()  # what the NFN layers compute on: taps folded into channels
    assert ws[1].shape == (B, 4, 3, 9) and ws[1][2, 3, 2, 4] == wb.weights[1][2, 3, 2, 1, 1]
    back = WeightFeatures.from_channels_last(spec, *feats.channels_last())
    assert max_diff(back.to_weights(), wb) == 0.0
    with pytest.raises(ValueError, match="3 channels"):
        random_features(spec, 3).to_weights()


@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("out_channels", [None, 1])
def test_backbone_equivariant(arch, name, out_channels):
    if not supports(name, arch):
        pytest.skip("DWSNet: MLP weight spaces only")
    spec = SPECS[arch]
    torch.manual_seed(0)
    backbone = build_backbone(name, spec, in_channels=1, out_channels=out_channels, channels=6, layers=2).double()
    wb = random_weights(spec)
    perms = hidden_perms(spec, seed=4)
    with torch.no_grad():
        out = backbone(wb.features())
        out_of_perm = backbone(permute(wb, perms).features())
    assert out.channels == (6 if out_channels is None else 1)
    assert max_diff(out_of_perm, permute(out, perms)) < 1e-9
    assert max_diff(out_of_perm, out) > 1e-3
    if out_channels == 1:  # a weight -> weight map: the output reads back as a batch of weights
        back = out.to_weights()
        assert [tuple(p.shape[1:]) for p in back.params()] == [tuple(p.shape) for p in spec.params]


def test_layers_compose_in_sequential_and_pool_is_invariant():
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    net = nn.Sequential(HNPLinear(spec, 1, 4), Elementwise(nn.ReLU()), DWSLayer(spec, 4, 3),
                        Elementwise(torch.tanh), InvariantPool(spec, 3)).double()
    wb = random_weights(spec)
    perms = random_permutations(spec, B, torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, yp = net(wb.features()), net(permute(wb, perms).features())
    assert y.shape == (B, net[-1].dim)
    torch.testing.assert_close(yp, y, atol=1e-10, rtol=1e-10)
    assert (y[1:] - y[:1]).abs().max() > 1e-3


@pytest.mark.parametrize("layer_cls", [HNPLinear, NPLinear])
def test_fused_relu_is_the_layer_then_relu(layer_cls):
    spec = SPECS["cnn"]
    torch.manual_seed(0)
    plain = layer_cls(spec, 2, 3).double()
    fused = layer_cls(spec, 2, 3, relu=True).double()
    fused.load_state_dict(plain.state_dict())
    feats = random_features(spec, 2)
    assert max_diff(fused(feats), plain(feats).map(torch.relu)) == 0.0
