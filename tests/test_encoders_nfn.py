"""Encoders on MLP and CNN weight spaces: invariance to hidden permutations, equivariance of the
NF-Layers, sensitivity to the weights, gradient flow, a tiny fit, and a throughput print."""
from __future__ import annotations

import math
import time

import pytest
import torch

from wsl.nn.deepsets import DeepSetsEncoder
from wsl.nn.flat import FlatMLP
from wsl.nn.nfn import HNPLinear, NFNEncoder, NPLinear, WeightFeatures
from wsl.nn.probe import ProbeEncoder
from wsl.nn.statnn import StatNN
from wsl.weights import WeightBatch
from zoo.architectures import build_spec

B = 4
SPECS = {
    "mlp": build_spec("mlp", (4,), 3, hidden=[6, 5]),
    "cnn": build_spec("cnn", (1, 8, 8), 3, channels=[3, 4]),
}
INVARIANT = {
    "statnn": lambda spec: StatNN(spec, 2, hidden=32),
    "deepsets": lambda spec: DeepSetsEncoder(spec, 2, hidden=16),
    "hnp": lambda spec: NFNEncoder(spec, 2, mode="hnp", channels=8, head_hidden=32),
    "np": lambda spec: NFNEncoder(spec, 2, mode="np", channels=8, head_hidden=32),
    "probe": lambda spec: ProbeEncoder(spec, 2, probes=16, hidden=32),
}
ALL = {**INVARIANT, "flat": lambda spec: FlatMLP(spec, 2, hidden=32)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on shared cores: one thread avoids OpenMP stalls (10x slower steps with two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- our own permutation helpers (new neuron j = old neuron perm[b, j]) --------------------------
def random_perms(sizes: dict[str, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A non-identity permutation per network for each named group."""
    perms = {}
    for g, n in sizes.items():
        rows = []
        for _ in range(B):
            p = torch.randperm(n, generator=gen)
            rows.append(p.roll(1) if torch.equal(p, torch.arange(n)) else p)
        perms[g] = torch.stack(rows)
    return perms


def _take(x: torch.Tensor, perm: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[0], shape[dim] = B, perm.shape[1]
    return torch.take_along_dim(x, perm.view(shape), dim)


def _permute_layers(spec, weights, biases, perms, axis):
    """Permute hidden groups; ``axis`` is the neuron-out axis of the weights (1 for a WeightBatch,
    2 for channelled features), the neuron-in axis follows it."""
    new_w, new_b = [], []
    for layer, w, b in zip(spec.layers, weights, biases):
        if layer.out_group in perms:
            w, b = _take(w, perms[layer.out_group], axis), _take(b, perms[layer.out_group], axis)
        if layer.in_group in perms:
            w = _take(w, perms[layer.in_group], axis + 1)
        new_w.append(w)
        new_b.append(b)
    return new_w, new_b


def permute_weights(wb: WeightBatch, perms) -> WeightBatch:
    return WeightBatch(wb.spec, *_permute_layers(wb.spec, wb.weights, wb.biases, perms, 1))


def permute_features(spec, feats: WeightFeatures, perms) -> WeightFeatures:
    return WeightFeatures(*_permute_layers(spec, feats.weights, feats.biases, perms, 2))


def hidden_perms(spec, seed=0):
    return random_perms({g: spec.groups[g] for g in spec.permutable}, torch.Generator().manual_seed(seed))


def random_weights(spec, seed=0, n=B, dtype=torch.float64) -> WeightBatch:
    gen = torch.Generator().manual_seed(seed)
    return WeightBatch.from_params(spec, [torch.randn(n, *p.shape, generator=gen, dtype=dtype) for p in spec.params])


def random_features(spec, channels, seed=0) -> WeightFeatures:
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.randn(B, channels * math.prod(l.kernel), l.out_features, l.in_features, generator=gen,
                      dtype=torch.float64) for l in spec.layers]
    bs = [torch.randn(B, channels, l.out_features, generator=gen, dtype=torch.float64) for l in spec.layers]
    return WeightFeatures(ws, bs)


def max_diff(a: WeightFeatures, b: WeightFeatures) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.weights + a.biases, b.weights + b.biases))


# --- invariance -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", INVARIANT)
def test_encoder_invariant_to_hidden_permutations_but_not_constant(arch, name):
    spec = SPECS[arch]
    torch.manual_seed(0)
    enc = INVARIANT[name](spec).double().eval()
    wb = random_weights(spec)
    with torch.no_grad():
        out = enc(wb)
        out_perm = enc(permute_weights(wb, hidden_perms(spec)))
        out_other = enc(random_weights(spec, seed=1))
    assert out.shape == (B, 2)
    torch.testing.assert_close(out_perm, out, atol=1e-4, rtol=1e-4)
    assert (out_other - out).abs().max() > 1e-3  # the output does depend on the weights
    assert (out[1:] - out[:1]).abs().max() > 1e-3  # and differs between networks


@pytest.mark.parametrize("arch", SPECS)
def test_flat_mlp_is_not_invariant(arch):
    spec = SPECS[arch]
    torch.manual_seed(0)
    enc = FlatMLP(spec, 2, hidden=32).double().eval()
    wb = random_weights(spec)
    with torch.no_grad():
        diff = (enc(permute_weights(wb, hidden_perms(spec))) - enc(wb)).abs().max()
    assert diff > 1e-3


# --- equivariance of the NF-Layers ----------------------------------------------------------
@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("layer_cls", [HNPLinear, NPLinear])
@pytest.mark.parametrize("c_in", [1, 3])
def test_nf_layer_equivariant(arch, layer_cls, c_in):
    spec = SPECS[arch]
    torch.manual_seed(0)
    layer = layer_cls(spec, c_in, 5).double()
    with torch.no_grad():  # non-zero biases, so the per-index I/O biases are exercised too
        for p in layer.bias:
            p.normal_()
    feats = random_features(spec, c_in)
    perms = hidden_perms(spec, seed=2)
    out = layer(feats)
    out_of_perm = layer(permute_features(spec, feats, perms))
    assert [tuple(w.shape) for w in out.weights] == [(B, 5 * w.shape[1] // c_in, *w.shape[2:]) for w in feats.weights]
    assert [tuple(b.shape) for b in out.biases] == [(B, 5, b.shape[2]) for b in feats.biases]
    assert max_diff(out_of_perm, permute_features(spec, out, perms)) < 1e-10
    assert max_diff(out_of_perm, out) > 1e-3  # equivariant, not trivially invariant


def test_hnp_layer_treats_input_neurons_as_fixed():
    """Per-index weights on the input axis: permuting the network's inputs is not a symmetry."""
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    layer = HNPLinear(spec, 2, 4).double()
    feats = random_features(spec, 2)
    first = spec.layers[0].in_group
    perms = random_perms({first: spec.groups[first]}, torch.Generator().manual_seed(3))
    out_of_perm = layer(permute_features(spec, feats, perms))
    assert max_diff(out_of_perm, permute_features(spec, layer(feats), perms)) > 1e-3


def test_lift_folds_kernel_taps_into_channels():
    spec = SPECS["cnn"]
    wb = random_weights(spec)
    feats = WeightFeatures.lift(wb)
    assert feats.weights[0].shape == (B, 9, 3, 1) and feats.weights[2].shape == (B, 1, 3, 4)
    assert feats.weights[1][2, 4, 3, 2] == wb.weights[1][2, 3, 2, 1, 1]  # tap (1, 1) is channel 4
    assert torch.equal(feats.biases[1][:, 0], wb.biases[1])


# --- training behaviour -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", SPECS)
@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(arch, name):
    spec = SPECS[arch]
    torch.manual_seed(0)
    enc = ALL[name](spec).double().train()
    out = enc(random_weights(spec))
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"


def test_hnp_fits_random_targets():
    spec = SPECS["mlp"]
    torch.manual_seed(0)
    wb = random_weights(spec, n=16, dtype=torch.float32)
    y = torch.randn(16, 2)
    enc = NFNEncoder(spec, 2, mode="hnp", channels=16, head_hidden=64)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = (enc(wb) - y).pow(2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.5 and loss.item() < 0.02, (first, loss.item())


def test_nfn_hnp_throughput_report():
    """Forward + backward networks/s, HNP, 32 channels, B=64, MLP 64-32-32-10 (printed, not asserted)."""
    spec = build_spec("mlp", (64,), 10, hidden=[32, 32])
    torch.manual_seed(0)
    enc = NFNEncoder(spec, 1, mode="hnp", channels=32)
    wb = random_weights(spec, n=64, dtype=torch.float32)
    enc(wb).sum().backward()  # warm-up
    steps, t0 = 5, time.perf_counter()
    for _ in range(steps):
        enc.zero_grad()
        enc(wb).sum().backward()
    rate = steps * 64 / (time.perf_counter() - t0)
    n_params = sum(p.numel() for p in enc.parameters())
    print(f"\nNFN HNP (32 channels, {n_params} parameters), MLP 64-32-32-10, B=64: "
          f"{rate:.0f} networks/s forward+backward on {torch.get_num_threads()} threads")
    assert rate > 0
