"""ScaleGMN: invariant to hidden-neuron permutations and the activation's scalings applied together
(sign flips for tanh and SIREN, positive rescaling for ReLU MLPs and CNNs), not invariant to what is
not a symmetry, gradients to every parameter, batches that are the networks one by one, and one-line
errors for what it cannot take."""
import pytest
import torch

from conftest import SPECS, hidden_perms, random_weights
from wsl.nn import build_encoder
from wsl.nn.scalegmn import ScaleGMN
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute, random_scales, scale
from zoo.architectures import build_spec
from zoo.errors import InputError

ARCHS = {
    "relu-mlp": SPECS["mlp"],
    "tanh-mlp": build_spec("mlp", (4,), 3, hidden=[6, 5], activation="tanh"),
    "siren": build_spec("siren", (2,), 1, hidden=[8, 8]),
    "relu-cnn": SPECS["cnn"],
}
EXPECTED = {"relu-mlp": "positive", "tanh-mlp": "sign", "siren": "sign", "relu-cnn": "positive"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def encoder(spec, **kw):
    torch.manual_seed(0)
    return build_encoder("scalegmn", spec, 2, **{"hidden": 12, "layers": 2, **kw}).double().eval()


def symmetric_copy(wb: WeightBatch, seed: int = 1, log_range=(-1.0, 1.0)) -> WeightBatch:
    """``wb`` with every network's hidden neurons rescaled (by its activation's symmetry) and permuted."""
    gen = torch.Generator().manual_seed(seed)
    scales = random_scales(wb.spec, len(wb), generator=gen, log_range=log_range, dtype=wb.weights[0].dtype)
    return permute(scale(wb, scales), hidden_perms(wb.spec, len(wb), seed=seed + 1))


def uniform_scales(spec, value: float, n: int = 4) -> dict:
    return {g: torch.full((n, spec.groups[g]), value, dtype=torch.float64) for g in spec.permutable}


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_invariant_to_permutations_and_scalings(arch, bidirectional):
    spec = ARCHS[arch]
    net = encoder(spec, bidirectional=bidirectional)
    assert net.symmetry == EXPECTED[arch]
    wb = random_weights(spec)
    with torch.no_grad():
        out, out_sym = net(wb), net(symmetric_copy(wb, log_range=(-2.0, 2.0)))
    assert out.shape == (4, 2)
    assert gap(out, out_sym) < 1e-9 * max(1.0, out.abs().max().item())
    assert gap(out[0], out[1]) > 1e-4  # invariant, not constant


@pytest.mark.parametrize("arch", ["siren", "relu-mlp"])
@pytest.mark.parametrize("options", [{"readout": "io"}, {"message": "scale_eq"},
                                     {"message": "scale_eq", "bidirectional": False}])
def test_other_readout_and_message_invariant(arch, options):
    spec = ARCHS[arch]
    net = encoder(spec, **options)
    wb = random_weights(spec, seed=3)
    with torch.no_grad():
        out = net(wb)
        assert gap(out, net(symmetric_copy(wb, seed=5))) < 1e-9
        assert gap(out[0], out[1]) > 1e-4


def test_not_invariant_to_non_symmetries():
    """Scaling a tanh network's hidden neurons by 2, flipping a ReLU network's signs, or swapping two
    input neurons changes the function: the encoder must see it."""
    tanh, relu = ARCHS["tanh-mlp"], ARCHS["relu-mlp"]
    wb = random_weights(tanh)
    with torch.no_grad():
        assert gap(encoder(tanh)(wb), encoder(tanh)(scale(wb, uniform_scales(tanh, 2.0)))) > 1e-4
    wb = random_weights(relu)
    net = encoder(relu)
    with torch.no_grad():
        assert gap(net(wb), net(scale(wb, uniform_scales(relu, -1.0)))) > 1e-4
        swapped = WeightBatch(relu, [wb.weights[0][:, :, [1, 0, 2, 3]], *wb.weights[1:]], wb.biases)
        assert gap(net(wb), net(swapped)) > 1e-4


def test_permutation_variant():
    """``symmetry="permutation"`` keeps permutation invariance and drops the scaling one."""
    spec = ARCHS["siren"]
    net = encoder(spec, symmetry="permutation")
    assert net.symmetry == "permutation"
    wb = random_weights(spec)
    with torch.no_grad():
        out = net(wb)
        assert gap(out, net(permute(wb, hidden_perms(spec, seed=2)))) < 1e-10
        assert gap(out, net(scale(wb, uniform_scales(spec, -1.0)))) > 1e-4
    # no scaling symmetry (gelu): "auto" falls back to permutations
    assert encoder(build_spec("mlp", (4,), 3, hidden=[5], activation="gelu")).symmetry == "permutation"


@pytest.mark.parametrize("arch,message", [("relu-mlp", "rescale"), ("siren", "rescale"), ("siren", "scale_eq")])
def test_backward_reaches_every_parameter(arch, message):
    spec = ARCHS[arch]
    torch.manual_seed(0)
    net = ScaleGMN(spec, 3, hidden=8, layers=2, dropout=0.1, message=message).train()
    out = net(random_weights(spec, dtype=torch.float32))
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_memorises_random_labels():
    """Capacity: 24 random SIRENs, 4 random classes, a few dozen Adam steps."""
    spec = ARCHS["siren"]
    wb = random_weights(spec, n=24, dtype=torch.float32)
    y = torch.randint(0, 4, (24,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = ScaleGMN(spec, 4, hidden=16, layers=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        out = net(wb)
        if (out.argmax(-1) == y).all():
            break
        opt.zero_grad()
        torch.nn.functional.cross_entropy(out, y).backward()
        opt.step()
    assert (out.argmax(-1) == y).float().mean() == 1.0


def test_batch_is_the_networks_one_by_one():
    spec = ARCHS["relu-cnn"]
    net = encoder(spec)
    wb = random_weights(spec, n=3)
    with torch.no_grad():
        batched = net(wb)
        singles = torch.cat([net(WeightBatch(spec, [w[i:i + 1] for w in wb.weights],
                                             [b[i:i + 1] for b in wb.biases])) for i in range(3)])
    assert gap(batched, singles) < 1e-12


def test_zero_weights_stay_finite():
    """Zero biases (fresh SIRENs) and zero weights (the reciprocal of the bidirectional ReLU variant)."""
    spec = ARCHS["relu-mlp"]
    wb = random_weights(spec)
    wb = WeightBatch(spec, [w * (w.abs() > 0.5) for w in wb.weights], [torch.zeros_like(b) for b in wb.biases])
    with torch.no_grad():
        assert torch.isfinite(encoder(spec)(wb)).all()


@pytest.mark.parametrize("arch", ["siren", "relu-mlp"])
def test_predictor_is_invariant_end_to_end(arch):
    """Through ``PropertyPredictor``: its weight normalizer's asinh is odd, so sign flips survive it;
    for positive scalings (ReLU) the predictor gives ScaleGMN the weights divided by their scale only."""
    from wsl.data.normalize import WeightNormalizer
    from wsl.prediction.model import PropertyPredictor

    spec = ARCHS[arch]
    torch.manual_seed(0)
    model = PropertyPredictor(spec.to_json(), num_outputs=3, task_type="classification", class_names=list("abc"),
                              target="label", encoder="scalegmn", encoder_kwargs={"hidden": 12, "layers": 2})
    wb = random_weights(spec)
    normalizer = WeightNormalizer(spec)
    normalizer.fit(wb)
    model.set_normalizers(normalizer)
    model = model.double().eval()
    with torch.no_grad():
        assert gap(model(wb), model(symmetric_copy(wb))) < 1e-9


def test_errors():
    spec = ARCHS["siren"]
    with pytest.raises(InputError, match="symmetry must be"):
        ScaleGMN(spec, 2, symmetry="sign")
    with pytest.raises(InputError, match="readout must be"):
        ScaleGMN(spec, 2, readout="edges")
    with pytest.raises(InputError, match="hidden >= 1"):
        ScaleGMN(spec, 2, hidden=0)
    with pytest.raises(InputError, match="message must be"):
        ScaleGMN(spec, 2, message="mlp")
    with pytest.raises(InputError, match="has none; use readout='io'"):
        ScaleGMN(build_spec("mlp", (4,), 3, hidden=[]), 2)
    with pytest.raises(InputError, match="per-model activation"):
        ScaleGMN(build_spec("mlp", (4,), 3, hidden=[5], activation=None), 2)
    with pytest.raises(InputError, match="built for the weight space"):
        encoder(spec)(random_weights(ARCHS["tanh-mlp"]))
