"""The probe encoder: invariant to every function-preserving symmetry (permutations, ReLU scaling,
sine sign flips), grid probes for INRs, raw weights in the predictor, a clear error without a
fixed activation."""
from __future__ import annotations

import pytest
import torch

from conftest import generate_zoo, save_checkpoint
from wsl.nn.probe import ProbeEncoder
from wsl.prediction.model import PropertyPredictor
from wsl.weights.symmetry import permute, random_permutations, random_scales, scale
from wsl.weights import WeightBatch
from zoo.architectures import build_spec
from zoo.errors import InputError
from zoo.functional import population_forward


def _weights(spec, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return WeightBatch.from_params(spec, [torch.randn(n, *p.shape, generator=g, dtype=torch.float64) * 0.5
                                          for p in spec.params])


@pytest.mark.parametrize("arch,activation,options", [
    ("mlp", "relu", {}), ("siren", "sine", {}), ("mlp", "tanh", {}),
    ("mlp", "relu", {"softmax": True, "generator_layers": 2}),  # weight_stats: not scale-invariant
])
def test_probe_invariant_to_permutations_and_scalings(arch, activation, options):
    spec = (build_spec("siren", (2,), 1, hidden=[8, 8], omega_0=3.0) if arch == "siren"
            else build_spec("mlp", (5,), 3, hidden=[7, 6], activation=activation))
    torch.manual_seed(0)
    enc = ProbeEncoder(spec, 4, probes=25, hidden=32, **options).double().eval()
    wb = _weights(spec)
    g = torch.Generator().manual_seed(1)
    moved = scale(permute(wb, random_permutations(spec, len(wb), g)), random_scales(spec, len(wb), activation, g))
    # the action really changed the weights but not the function
    assert (moved.flatten() - wb.flatten()).abs().max() > 0.1
    x = torch.rand(9, *spec.input_shape, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(population_forward(spec, moved.params(), x), population_forward(spec, wb.params(), x))
    with torch.no_grad():
        out, out_moved, other = enc(wb), enc(moved), enc(_weights(spec, seed=5))
    torch.testing.assert_close(out_moved, out, atol=1e-9, rtol=1e-7)
    assert (other - out).abs().max() > 1e-3


def test_grid_probes_for_inrs_and_normal_probes_otherwise():
    siren = build_spec("siren", (2,), 1, hidden=[8, 8])
    enc = ProbeEncoder(siren, 10, probes=64)
    pts = enc.probe_inputs().detach()
    assert pts.shape == (64, 2) and pts.min() == -1 and pts.max() == 1
    assert len(torch.unique(pts[:, 0])) == 8  # an 8 x 8 grid
    mlp = build_spec("mlp", (64,), 10, hidden=[8])
    assert ProbeEncoder(mlp, 10, probes=32).probe_inputs().shape == (32, 64)
    with pytest.raises(ValueError, match="at most 3 dimensions"):
        ProbeEncoder(mlp, 10, init="grid")
    with pytest.raises(ValueError, match="several outputs.*these have 1"):
        ProbeEncoder(siren, 10, softmax=True)


def test_probes_and_generator_are_learned():
    spec = build_spec("siren", (2,), 1, hidden=[8, 8], omega_0=3.0)
    enc = ProbeEncoder(spec, 3, probes=16, generator_layers=2, hidden=16).train()
    out = enc(_weights(spec, n=8).map(lambda t: t.float()))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_predictor_feeds_raw_weights_to_the_probe_encoder():
    spec = build_spec("mlp", (4,), 2, hidden=[5], activation="relu")
    model = PropertyPredictor(spec.to_json(), num_outputs=1, encoder="probe",
                              encoder_kwargs={"probes": 8, "hidden": 16}).eval()
    wb = _weights(spec, n=4).map(lambda t: t.float())
    # a normalizer that would change the weights must not reach the encoder
    model.weight_normalizer.fit(WeightBatch.from_params(spec, [t * 100 for t in wb.params()]))
    assert (model.weight_normalizer(wb).flatten() - wb.flatten()).abs().max() > 0.1
    torch.testing.assert_close(model(wb), model.encoder(wb))


def test_per_network_activations():
    """With a per-model activation each network runs with its own: equal to separate batches."""
    spec = build_spec("mlp", (4,), 2, hidden=[5], activation=None)
    torch.manual_seed(0)
    enc = ProbeEncoder(spec, 3, probes=8, hidden=16).double().eval()
    wb = _weights(spec, n=6)
    acts = ["relu", "tanh", "tanh", "relu", "tanh", "relu"]
    wb.activation = acts
    with torch.no_grad():
        out = enc(wb)
        for a in ("relu", "tanh"):
            rows = [i for i, x in enumerate(acts) if x == a]
            part = wb[torch.tensor(rows)]
            assert part.activation == [a] * len(rows)
            torch.testing.assert_close(enc(part), out[rows])
        other = wb[torch.arange(6)]
        other.activation = ["relu"] * 6
        assert (enc(other) - out).abs().max() > 1e-4  # the activation matters
    wb.activation = None
    with pytest.raises(ValueError, match="activation varies per network"):
        enc(wb)


def test_data_module_batches_name_each_networks_activation(tmp_path):
    """A zoo whose activation varies per model: batches carry the activations, matching the file."""
    from wsl.data import PropertyDataModule
    from zoo.store import Zoo

    raw = {"name": "acts", "seed": 1, "num_models": 12, "epochs": 1, "checkpoints": [1],
           "task": {"name": "digits", "n_train": 100, "n_val": 97}, "architecture": {"name": "mlp", "hidden": [6]},
           "hparams": {"activation": {"choice": ["relu", "tanh"]}, "lr": 0.05}}
    path = generate_zoo(raw, tmp_path / "acts.h5")
    dm = PropertyDataModule(zoos=[path], batch_size=4, split=[0.5, 0.25, 0.25])
    dm.setup("fit")
    with Zoo(path) as z:
        by_index = dict(zip(z.index.tolist(), z.hparam("activation").tolist()))
    assert len(set(by_index.values())) == 2
    runs = dm.items("val")["runs"]
    seen = []
    for wb, y in dm.val_dataloader():
        assert wb.activation is not None and len(wb.activation) == len(wb)
        seen += wb.activation
    assert seen == [by_index[r] for r in runs]
    wb, _ = next(iter(dm.train_dataloader()))
    assert wb.activation is not None and set(wb.activation) <= {"relu", "tanh"}


def test_predict_files_passes_the_activation_to_a_probe_predictor(tmp_path):
    from wsl.prediction.predict import predict_files

    spec = build_spec("mlp", (4,), 2, hidden=[5], activation=None)
    torch.manual_seed(0)
    model = PropertyPredictor(spec.to_json(), num_outputs=1, encoder="probe",
                              encoder_kwargs={"probes": 8, "hidden": 16}).eval()
    wb = _weights(spec, n=3).map(lambda t: t.float())
    files = []
    for i in range(3):
        files.append(tmp_path / f"net{i}.pt")
        torch.save(wb.state_dict(i), files[-1])
    relu = [p.value for p in predict_files(model, files, activation="relu")]
    tanh = [p.value for p in predict_files(model, files, activation="tanh")]
    assert len(relu) == 3 and max(abs(a - b) for a, b in zip(relu, tanh)) > 1e-4
    wb.activation = ["tanh"] * 3
    expected = model.predict_values(wb)
    torch.testing.assert_close(torch.tensor(tanh), expected)
    with pytest.raises(ValueError, match="activation varies per network"):
        predict_files(model, files)


@pytest.mark.parametrize("shared", [True, False])
def test_population_forward_with_one_activation_per_network(shared):
    spec = build_spec("mlp", (4,), 2, hidden=[5], activation=None)
    wb = _weights(spec, n=5)
    acts = ["tanh", "relu", "tanh", "tanh", "relu"]
    x = torch.randn(7, 4, dtype=torch.float64) if shared else torch.randn(5, 7, 4, dtype=torch.float64)
    out = population_forward(spec, wb.params(), x, activation=acts)
    for i, a in enumerate(acts):
        xi = x if shared else x[i:i + 1]
        torch.testing.assert_close(out[i:i + 1], population_forward(spec, wb[i].params(), xi, activation=a))
    with pytest.raises(ValueError, match="3 names for 5 networks"):
        population_forward(spec, wb.params(), x, activation=acts[:3])


def test_per_network_activations_keep_a_scalar_dropout_rate():
    spec = build_spec("mlp", (4,), 2, hidden=[50], activation=None)
    wb = _weights(spec, n=4)
    x = torch.randn(7, 4, dtype=torch.float64)
    acts = ["relu", "tanh", "relu", "tanh"]
    plain = population_forward(spec, wb.params(), x, activation=acts)
    dropped = population_forward(spec, wb.params(), x, activation=acts, dropout=0.5)
    assert (dropped - plain).abs().amax(dim=(1, 2)).min() > 1e-6  # every group got its dropout


def _tiny_zoo(path, activation_space):

    raw = {"name": "acts", "seed": 2, "num_models": 6, "epochs": 1, "checkpoints": [1],
           "task": {"name": "digits", "n_train": 100, "n_val": 97}, "architecture": {"name": "mlp", "hidden": [6]},
           "hparams": {"lr": 0.05}}
    if isinstance(activation_space, str):
        raw["architecture"]["activation"] = activation_space
    else:
        raw["hparams"]["activation"] = {"choice": list(activation_space)}
    return generate_zoo(raw, path)


def _saved(model, path):
    return str(save_checkpoint(model, path))


def test_predict_zoos_whose_activation_differs_from_the_predictors(tmp_path, capsys):
    """A probe predictor trained on mixed activations predicts a relu-only zoo (each batch names the
    zoo's activation); a relu-only predictor on a mixed zoo warns about the tanh networks."""
    import io

    from wsl.prediction.predict import run_predict
    from zoo.store import Zoo

    relu_zoo = _tiny_zoo(tmp_path / "relu.h5", "relu")
    torch.manual_seed(0)
    open_spec = build_spec("mlp", (64,), 10, hidden=[6], activation=None)
    probe = PropertyPredictor(open_spec.to_json(), encoder="probe", encoder_kwargs={"probes": 8, "hidden": 16},
                              target="test_acc").eval()
    preds = run_predict(_saved(probe, tmp_path / "probe.ckpt"), [relu_zoo], stream=io.StringIO())
    with Zoo(relu_zoo) as z:
        index = [int(i) for i in z.index]
        wb = WeightBatch.from_params(open_spec, z.batch(list(range(len(index)))))
    wb.activation = ["relu"] * len(wb)
    by_index = {int(p.source.split("model=")[1].split("@")[0]): p.value for p in preds}
    torch.testing.assert_close(torch.tensor([by_index[i] for i in index]), probe.predict_values(wb).float())
    assert "activation" not in capsys.readouterr().err  # no warning about activations (this one is uncalibrated)

    mixed_zoo = _tiny_zoo(tmp_path / "mixed.h5", ["relu", "tanh"])
    relu_only = PropertyPredictor(build_spec("mlp", (64,), 10, hidden=[6], activation="relu").to_json(),
                                  encoder="statnn", target="test_acc").eval()
    preds = run_predict(_saved(relu_only, tmp_path / "relu.ckpt"), [mixed_zoo], stream=io.StringIO())
    assert len(preds) == 6
    assert "networks with activation tanh, but the predictor was trained only on relu" in capsys.readouterr().err


def test_data_probes_start_at_the_tasks_training_inputs():
    from zoo.tasks import load_task

    spec = build_spec("mlp", (64,), 10, hidden=[6], activation="relu")
    enc = ProbeEncoder(spec, 1, probes=16, init="data", task="digits", hidden=8, layers=1)
    x_train = load_task("digits").x_train.reshape(-1, 64).float()
    starts = enc.probe_inputs().detach()
    assert starts.shape == (16, 64)
    assert all(bool((x_train == row).all(1).any()) for row in starts)  # each probe is one training input
    assert len({tuple(r.tolist()) for r in starts}) == 16  # and no input twice
    with pytest.raises(InputError, match="needs the task"):
        ProbeEncoder(spec, 1, probes=4, init="data")
    with pytest.raises(InputError, match=r"inputs of shape \[64\], the weight space's networks take \[6\]"):
        ProbeEncoder(build_spec("mlp", (6,), 3, hidden=[4], activation="relu"), 1, probes=4, init="data", task="digits")
