"""Encoders on MLP and CNN weight spaces: invariance to hidden permutations, sensitivity to the
weights, gradient flow, a tiny fit. The equivariant layers and backbones: tests/test_backbones.py."""
from __future__ import annotations

import pytest
import torch

from conftest import SPECS, hidden_perms, random_weights
from wsl.nn.deepsets import DeepSetsEncoder
from wsl.nn.flat import FlatMLP
from wsl.nn.nfn import NFNEncoder
from wsl.nn.probe import ProbeEncoder
from wsl.nn.statnn import StatNN
from wsl.weights.symmetry import permute

B = 4
INVARIANT = {
    "statnn": lambda spec: StatNN(spec, 2, hidden=32),
    "deepsets": lambda spec: DeepSetsEncoder(spec, 2, hidden=16),
    "hnp": lambda spec: NFNEncoder(spec, 2, mode="hnp", channels=8, head_hidden=32),
    "np": lambda spec: NFNEncoder(spec, 2, mode="np", channels=8, head_hidden=32),
    "hnp-fourier": lambda spec: NFNEncoder(spec, 2, mode="hnp", channels=8, head_hidden=32, fourier=4),
    "probe": lambda spec: ProbeEncoder(spec, 2, probes=16, hidden=32),
}
ALL = {**INVARIANT, "flat": lambda spec: FlatMLP(spec, 2, hidden=32)}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


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
        out_perm = enc(permute(wb, hidden_perms(spec)))
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
        diff = (enc(permute(wb, hidden_perms(spec))) - enc(wb)).abs().max()
    assert diff > 1e-3


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


def test_fourier_features_encode_each_weight_elementwise():
    from wsl.nn.base import FourierFeatures

    spec = SPECS["mlp"]
    enc = FourierFeatures(3, scale=0.5).double()
    feats = random_weights(spec).features()
    out = enc(feats)
    f = enc.freqs.double()
    w = feats.weights[1][:, 0]  # one channel in: sin of every frequency, then cos of every one
    assert out.weights[1].shape == (B, 6, *w.shape[1:])
    torch.testing.assert_close(out.weights[1][:, 2], torch.sin(f[2] * w))
    torch.testing.assert_close(out.biases[0][:, 4], torch.cos(f[1] * feats.biases[0][:, 0]))
    with pytest.raises(ValueError, match="features >= 1 and scale > 0"):
        FourierFeatures(0)


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
