"""Probe features in the neural graph (``probe_features``; Kofinas et al. 2024): NG-GNN, NG-T and
ScaleGMN stay invariant to hidden-neuron permutations (ScaleGMN also to its scalings) with probes on,
the probes reach the output and get gradients, ``probe_features=0`` is the encoder as it was, and
``raw`` runs the probes on other weights than the graph reads."""
import pytest
import torch

from conftest import SPECS, hidden_perms, random_weights
from wsl.nn import build_encoder
from wsl.nn.neural_graph import GraphProbes
from wsl.weights import WeightBatch
from wsl.weights.graph import graph_layout
from wsl.weights.symmetry import permute, random_scales, scale
from zoo.architectures import build_spec
from zoo.errors import InputError
from zoo.functional import population_forward

ARCHS = {
    "relu-mlp": SPECS["mlp"],
    "tanh-mlp": build_spec("mlp", (4,), 3, hidden=[6, 5], activation="tanh"),
    "siren": build_spec("siren", (2,), 1, hidden=[8, 8]),
    "relu-cnn": SPECS["cnn"],
}
NG = ["ngnn", "ngt"]
ALL = [*NG, "scalegmn"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def encoder(name, spec, **kw):
    torch.manual_seed(0)
    base = {"hidden": 12, "layers": 2} if name == "scalegmn" else {"hidden": 16, "layers": 2, "heads": 2}
    return build_encoder(name, spec, 2, **{**base, **kw}).double().eval()


def gap(a, b) -> float:
    return (a - b).abs().max().item()


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", NG)
def test_ng_invariant_to_permutations_with_probes(name, arch):
    spec = ARCHS[arch]
    net = encoder(name, spec, probe_features=8)
    wb = random_weights(spec, n=4, std=0.5)
    with torch.no_grad():
        y = net(wb)
        for seed in range(2):
            assert gap(net(permute(wb, hidden_perms(spec, seed=seed))), y) < 1e-10
    assert gap(y[0], y[1]) > 1e-4  # invariant, not constant


@pytest.mark.parametrize("arch", ARCHS)
def test_scalegmn_invariant_to_permutations_and_scalings_with_probes(arch):
    spec = ARCHS[arch]
    net = encoder("scalegmn", spec, probe_features=8)
    assert net.symmetry in ("sign", "positive")
    wb = random_weights(spec)
    gen = torch.Generator().manual_seed(1)
    scales = random_scales(spec, len(wb), generator=gen, log_range=(-2.0, 2.0), dtype=torch.float64)
    sym = permute(scale(wb, scales), hidden_perms(spec, seed=2))
    with torch.no_grad():
        y = net(wb)
        assert gap(net(sym), y) < 1e-9 * max(1.0, y.abs().max().item())
    assert gap(y[0], y[1]) > 1e-4


def test_scalegmn_with_probes_sees_non_symmetries():
    """Scaling a tanh network's hidden neurons by 2 changes its function (and its probe values)."""
    spec = ARCHS["tanh-mlp"]
    net = encoder("scalegmn", spec, probe_features=8)
    wb = random_weights(spec)
    twice = scale(wb, {g: torch.full((4, spec.groups[g]), 2.0, dtype=torch.float64) for g in spec.permutable})
    with torch.no_grad():
        assert gap(net(wb), net(twice)) > 1e-4


@pytest.mark.parametrize("name", ALL)
def test_probes_reach_the_output(name):
    spec = ARCHS["siren"]
    net = encoder(name, spec, probe_features=8).train()
    wb = random_weights(spec, std=0.5)
    out = net(wb)
    (out * torch.randn_like(out)).sum().backward()
    grad = net.probes.probes.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    net.eval()
    with torch.no_grad():
        y = net(wb)
        net.probes.probes.add_(0.1 * torch.randn_like(net.probes.probes))
        assert gap(net(wb), y) > 1e-6


@pytest.mark.parametrize("name", ALL)
def test_zero_probes_is_the_encoder_as_it_was(name):
    spec = ARCHS["siren"]
    old, off = encoder(name, spec), encoder(name, spec, probe_features=0)
    assert off.probes is None and n_params(off) == n_params(old)
    assert {k: v.shape for k, v in off.state_dict().items()} == {k: v.shape for k, v in old.state_dict().items()}
    wb = random_weights(spec)
    with torch.no_grad():
        assert gap(off(wb), old(wb)) == 0.0
    on = encoder(name, spec, probe_features=8)
    k, d, width = on.probes.num_probes, 2, 12 if name == "scalegmn" else 16
    assert k == 9  # a 3 x 3 grid over [-1, 1]^2, as the probe encoder starts
    assert n_params(on) == n_params(old) + k * d + k * width  # the probes and the input projection's columns


def test_node_features_are_the_networks_values():
    """Input nodes: the probes; hidden nodes: post-activation values; output nodes: the outputs."""
    spec = ARCHS["tanh-mlp"]
    probes = GraphProbes(spec, 5).double()
    wb = random_weights(spec, n=3)
    feats = probes(wb)
    lay = graph_layout(spec)
    assert feats.shape == (3, lay.num_nodes, 5)
    x = probes.probes.detach()
    hidden = []
    out = population_forward(spec, wb.params(), x, hidden=hidden)
    assert torch.equal(feats[:, :4], x.t().expand(3, 4, 5))
    assert torch.allclose(feats[:, 4:10], hidden[0].transpose(1, 2))
    assert torch.allclose(feats[:, 10:15], hidden[1].transpose(1, 2))
    assert torch.allclose(feats[:, 15:], out.transpose(1, 2))
    assert torch.allclose(feats[0, 4:10], torch.tanh(x @ wb.weights[0][0].t() + wb.biases[0][0]).t())


@pytest.mark.parametrize("name", ALL)
def test_raw_weights_run_the_probes(name):
    """``raw`` runs the probes on other weights (the unnormalized networks) than the graph reads."""
    spec = ARCHS["siren"]
    net = encoder(name, spec, probe_features=8)
    wb = random_weights(spec)
    other = random_weights(spec, seed=7)
    with torch.no_grad():
        y = net(wb)
        assert gap(net(wb, raw=wb), y) == 0.0
        assert gap(net(wb, raw=other), y) > 1e-6
        with pytest.raises(InputError, match="raw weights"):
            net(wb, raw=random_weights(spec, n=2))


def test_per_network_activation_needs_the_batch_to_name_it():
    spec = build_spec("mlp", (4,), 3, hidden=[5], activation=None)
    if spec.activation is not None:
        pytest.skip("this build_spec does not make per-network activations")
    net = encoder("ngnn", spec, probe_features=4)
    wb = random_weights(spec)
    with pytest.raises(InputError, match="activation"):
        net(wb)
    named = WeightBatch(spec, wb.weights, wb.biases, activation=["relu", "tanh", "relu", "sine"])
    with torch.no_grad():
        y = net(named)
        assert gap(net(permute(named, hidden_perms(spec, seed=3))), y) < 1e-10


@pytest.mark.parametrize("name", ["ngnn", "scalegmn"])
def test_the_predictor_runs_the_probes_on_the_networks_as_they_are(name):
    """A property predictor feeds its encoder normalized weights; with probe features the probes
    run the unnormalized networks (``raw=``), whose functions the normalization would change."""
    from wsl.prediction.model import PropertyPredictor

    spec = ARCHS["siren"]
    wb = random_weights(spec, n=6, dtype=torch.float32, std=0.5)
    model = PropertyPredictor(spec.to_json(), encoder=name, encoder_kwargs={"probe_features": 8}).eval()
    model.weight_normalizer.fit([wb])
    assert model.encoder.runs_networks
    with torch.no_grad():
        normed = model.weight_normalizer(wb, squash=not model.encoder.linear_normalization)
        assert gap(model(wb), model.encoder(normed, raw=wb)) == 0.0
        assert gap(model(wb), model.encoder(normed)) > 1e-6  # probes on normalized networks: another input
    plain = PropertyPredictor(spec.to_json(), encoder=name).eval()
    assert not plain.encoder.runs_networks
