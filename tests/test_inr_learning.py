"""Learning on INR zoos: signal-field targets, the recorded split, splits grouped by signal, encoders
on a SIREN weight space, the tree reference, and ``wsl fit`` + ``wsl predict`` end to end."""
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import generate_zoo
from wsl.prediction.baselines import NotApplicable, hyperparameter_oracle, linear_on_weights, statnn_trees
from wsl.cli import main
from wsl.data import PropertyDataModule
from wsl.nn import build_encoder
from wsl.prediction.model import PropertyPredictor
from wsl.core.checkpoint import load_model
from wsl.prediction.predict import run_predict
from wsl.weights.symmetry import permute, random_permutations
from wsl.weights import WeightBatch
from zoo.store import Zoo

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "predict"
SIREN = {"name": "siren", "hidden": [8, 8], "omega_0": 30}


def _generate(path, raw):
    return generate_zoo(raw, path)


@pytest.fixture(scope="module")
def digits_inr(tmp_path_factory):
    """28 digit images x 2 INRs each, images split 16 / 6 / 6."""
    return _generate(tmp_path_factory.mktemp("inr") / "digits_inr.h5", {
        "name": "digits_inr_tiny", "seed": 0, "num_models": 56, "epochs": 5, "checkpoints": [0, 5],
        "task": {"name": "digits-inr", "n_train": 16, "n_val": 6, "n_test": 6, "inrs_per_signal": 2},
        "architecture": SIREN, "hparams": {"lr": 0.001, "optimizer": "adam"}})


@pytest.fixture(scope="module")
def sine_inr(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("sine") / "sine_inr.h5", {
        "name": "sine_inr_tiny", "seed": 0, "num_models": 30, "epochs": 5, "checkpoints": [0, 5],
        "task": {"name": "sine-inr", "n_train": 20, "n_val": 5, "n_test": 5, "n_points": 16},
        "architecture": SIREN, "hparams": {"lr": 0.001, "optimizer": "adam"}})


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    """An ordinary zoo: no signal fields."""
    return _generate(tmp_path_factory.mktemp("mlp") / "mlp.h5", {
        "name": "mlp_tiny", "seed": 0, "num_models": 12, "epochs": 1, "checkpoints": [0, 1],
        "task": {"name": "digits", "n_train": 100, "n_val": 50},
        "architecture": {"name": "mlp", "hidden": [4], "activation": "relu"}, "hparams": {"lr": 0.01}})


def dm_for(path, **kw):
    dm = PropertyDataModule(zoos=[path], **kw)
    dm.setup("fit")
    return dm


def fields(path, *names):
    with Zoo(path) as z:
        return z.index.copy(), [z.signal(n) for n in names]


# --- targets -------------------------------------------------------------------------------------
def test_label_is_a_classification_target(digits_inr):
    dm = dm_for(digits_inr, target="label", split="recorded", batch_size=64)
    index, (label,) = fields(digits_inr, "label")
    assert dm.task_type == "classification" and label.dtype == np.int64
    assert dm.class_names == [str(v) for v in np.unique(label)] and dm.num_outputs == len(dm.class_names)
    _, y = next(iter(dm.test_dataloader()))
    row_of = {int(i): r for r, i in enumerate(index)}
    expected = [int(label[row_of[r]]) for r in dm.items("test")["runs"]]
    assert [int(dm.class_names[c]) for c in y.tolist()] == expected


def test_frequency_is_a_regression_target(sine_inr):
    dm = dm_for(sine_inr, target="frequency", split="recorded")
    index, (freq,) = fields(sine_inr, "frequency")
    assert dm.task_type == "regression" and dm.num_outputs == 1 and dm.class_names is None
    items = dm.items("train")
    row_of = {int(i): r for r, i in enumerate(index)}
    np.testing.assert_allclose(items["targets"].numpy(), freq[[row_of[r] for r in items["runs"]]], rtol=1e-6)
    assert dm.target_normalizer.std.item() != 1.0  # fitted on the frequencies


def test_unknown_target_and_missing_split_field_errors(digits_inr, mlp_zoo):
    with pytest.raises(KeyError) as e:
        PropertyDataModule(zoos=[digits_inr], target="class")
    for name in ("label", "source_index", "split", "psnr", "signal field"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="split 'recorded' needs a per-model 'split' field"):
        PropertyDataModule(zoos=[mlp_zoo], target="test_acc", split="recorded")
    with pytest.raises(ValueError, match="'recorded' or three fractions"):
        PropertyDataModule(zoos=[digits_inr], target="label", split="fixed")


# --- splits --------------------------------------------------------------------------------------
def test_recorded_split_is_the_zoos_split_field(digits_inr):
    index, (split,) = fields(digits_inr, "split")
    dm = dm_for(digits_inr, target="label", split="recorded")
    for s in ("train", "val", "test"):
        assert dm.split_runs[s] == sorted(int(i) for i in index[split == s])
    assert dm_for(digits_inr, target="label", split="recorded", split_seed=7).split_runs == dm.split_runs
    state = dm.state_dict()
    assert state["split_runs_by_zoo"][digits_inr] == dm.split_runs
    other = dm_for(digits_inr, target="label", split=[0.5, 0.25, 0.25])
    assert other.split_runs != dm.split_runs
    other.load_state_dict(state)
    assert other.split_runs == dm.split_runs


def test_drawn_split_keeps_the_inrs_of_a_signal_together(digits_inr):
    index, (signal,) = fields(digits_inr, "signal")
    sig_of = dict(zip(index.tolist(), signal.tolist()))
    assert np.bincount(signal).tolist() == [2] * 28
    for seed in range(3):
        dm = dm_for(digits_inr, target="label", split=[0.6, 0.2, 0.2], split_seed=seed)
        sigs = {s: [sig_of[r] for r in dm.split_runs[s]] for s in ("train", "val", "test")}
        for s, v in sigs.items():
            assert sorted(v) == sorted(2 * sorted(set(v)))  # both INRs of each of its signals
        assert not (set(sigs["train"]) & set(sigs["val"]) or set(sigs["train"]) & set(sigs["test"])
                    or set(sigs["val"]) & set(sigs["test"]))
        assert [len(set(v)) for v in sigs.values()] == [17, 6, 5]  # cut by signals: 0.6 * 28 = 16.8
    small = dm_for(digits_inr, target="label", split=[0.6, 0.2, 0.2], max_models=9)
    runs = [r for s in ("train", "val", "test") for r in small.split_runs[s]]
    assert len(runs) == 8 and sorted(sig_of[r] for r in runs) == sorted(2 * sorted({sig_of[r] for r in runs}))


def test_drawn_split_without_signals_is_the_seeded_permutation_of_runs(mlp_zoo):
    dm = dm_for(mlp_zoo, split=[0.5, 0.25, 0.25], split_seed=3)
    order = np.random.default_rng(3).permutation(12)  # the split before INR zoos: one run at a time
    assert dm.split_runs == {"train": sorted(order[:6].tolist()), "val": sorted(order[6:9].tolist()),
                             "test": sorted(order[9:].tolist())}


# --- encoders on a SIREN weight space -----------------------------------------------------------
@pytest.mark.parametrize("name", ["flat", "statnn", "deepsets", "np", "hnp", "dwsnet", "ngnn"])
def test_encoders_run_on_siren_weights_and_invariant_ones_ignore_permutations(digits_inr, name):
    torch.set_num_threads(1)
    with Zoo(digits_inr) as z:
        spec, params = z.spec, z.batch(np.arange(4))
    assert spec.architecture == "siren" and spec.activation == "sine"
    wb = WeightBatch.from_params(spec, params).map(lambda t: t.double())
    kwargs = {"ngnn": {"hidden": 16, "layers": 1}, "dwsnet": {"channels": 4, "layers": 1}}.get(name, {})
    torch.manual_seed(0)
    enc = build_encoder(name, spec, 10, **kwargs).double().eval()
    with torch.no_grad():
        out = enc(wb)
        moved = enc(permute(wb, random_permutations(spec, 4, generator=torch.Generator().manual_seed(1))))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert (out[1:] - out[:1]).abs().max() > 1e-6  # different INRs, different outputs
    if name == "flat":
        assert (moved - out).abs().max() > 1e-6
    else:
        torch.testing.assert_close(moved, out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name,kwargs", [("hnp", {"channels": 4, "layers": 1}), ("dwsnet", {"channels": 4, "layers": 1}),
                                         ("ngnn", {"hidden": 16, "layers": 1})])
def test_fourier_encoded_encoders_stay_invariant(digits_inr, name, kwargs):
    torch.set_num_threads(1)
    with Zoo(digits_inr) as z:
        spec, params = z.spec, z.batch(np.arange(4))
    wb = WeightBatch.from_params(spec, params).map(lambda t: t.double())
    torch.manual_seed(0)
    plain = build_encoder(name, spec, 10, **kwargs).double().eval()
    enc = build_encoder(name, spec, 10, fourier=3, fourier_scale=0.5, **kwargs).double().eval()
    with torch.no_grad():
        out = enc(wb)
        moved = enc(permute(wb, random_permutations(spec, 4, generator=torch.Generator().manual_seed(1))))
    torch.testing.assert_close(moved, out, atol=1e-6, rtol=1e-6)
    assert (out[1:] - out[:1]).abs().max() > 1e-6
    assert sum(p.numel() for p in enc.parameters()) > sum(p.numel() for p in plain.parameters())  # 6 channels in


# --- references ----------------------------------------------------------------------------------
def test_statnn_trees_classify_and_the_oracle_is_skipped(digits_inr):
    dm = dm_for(digits_inr, target="label", split="recorded")
    pred = statnn_trees(dm, max_iter=5)
    train_classes = set(dm.items("train")["targets"].tolist())
    assert pred.shape == (len(dm.items("test")["runs"]),) and pred.dtype.kind == "i"
    assert set(pred.tolist()) <= train_classes  # class indices, not regression values
    with pytest.raises(NotApplicable, match="INR zoo whose models all share"):
        hyperparameter_oracle(dm)


def test_linear_reference_reads_aligned_inrs_and_not_independent_ones(tmp_path):
    """From one shared initialisation the neurons stay aligned and a linear model on the raw weights
    tells the digits apart; from independent ones it is near chance (why INR tables carry its row)."""
    torch.set_num_threads(1)
    acc = {}
    for init in ("shared", "independent"):
        path = _generate(tmp_path / f"{init}.h5", {
            "name": f"digits_inr_{init}", "seed": 0, "num_models": 200, "epochs": 30, "checkpoints": [0, 30],
            "task": {"name": "digits-inr", "n_train": 120, "n_val": 40, "n_test": 40}, "architecture": SIREN,
            "hparams": {"lr": 0.005, "optimizer": "adam"}, "init": {"seeds": init, "scheme": "dwsnets"}})
        dm = dm_for(path, target="label", split="recorded")
        pred = linear_on_weights(dm)
        assert pred.shape == (40,) and pred.dtype.kind == "i"
        acc[init] = float(np.mean(pred == dm.items("test")["targets"].numpy()))
    assert acc["shared"] >= 0.35 and acc["shared"] >= acc["independent"] + 0.15, acc


# --- wsl fit + wsl predict -----------------------------------------------------------------------
def test_fit_and_predict_the_class_of_inrs(digits_inr, tmp_path, capsys):
    args = ["fit", "--config", str(CONFIGS / "digits_inr_hnp.yaml"), "--data.zoos", f"[{digits_inr}]",
            "--data.batch_size", "16", "--model.encoder_kwargs", "{channels: 4, layers: 1, head_hidden: 16}",
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    assert main(args) == 0
    ckpt = sorted((tmp_path / "runs").rglob("best-*.ckpt"))[0]
    model = load_model(ckpt, PropertyPredictor)
    index, (label, split) = fields(digits_inr, "label", "split")
    assert not model.regression and model.hparams.target == "label"
    assert model.hparams.class_names == [str(v) for v in np.unique(label)]
    capsys.readouterr()

    assert main(["predict", "--model", str(ckpt), digits_inr, "--split", "test", "--max-rows", "100"]) == 0
    out = capsys.readouterr().out
    assert "predicted label" in out and "accuracy against the stored label over 12 checkpoints" in out
    preds = run_predict(str(ckpt), [digits_inr], split="test", stream=io.StringIO())
    test_ids = sorted(int(i) for i in index[split == "test"])
    assert sorted(int(p.source.split("model=")[1].split("@")[0]) for p in preds) == test_ids
    row_of = {int(i): r for r, i in enumerate(index)}
    for p in preds:
        assert p.value in model.hparams.class_names and 0 < p.confidence <= 1
        assert p.true == label[row_of[int(p.source.split("model=")[1].split("@")[0])]]

    # the recorded split comes from the zoo's field: a copy of the zoo elsewhere works alike
    copy = tmp_path / "copy.h5"
    shutil.copy(digits_inr, copy)
    moved = run_predict(str(ckpt), [str(copy)], split="test", stream=io.StringIO())
    assert [p.value for p in moved] == [p.value for p in preds] and len(moved) == 12


# --- capacity: every encoder fits a few dozen INRs' labels (run alone with -k overfit) ----------------
OVERFIT_KWARGS = {"np": {"channels": 16, "layers": 2}, "hnp": {"channels": 16, "layers": 2},
                  "dwsnet": {"channels": 8, "layers": 2}, "ngnn": {"hidden": 16, "layers": 2},
                  "ngt": {"hidden": 16, "layers": 2}, "deepsets": {}, "statnn": {},
                  "probe": {"probes": 32, "hidden": 64}}


@pytest.mark.parametrize("name", list(OVERFIT_KWARGS))
def test_encoder_overfits_the_labels_of_a_few_dozen_inrs(digits_inr, name):
    """A weight-space encoder that cannot memorise 32 INRs' classes (two INRs per image, from
    independent initialisations) has a bug or no capacity, whatever it scores on held-out INRs."""
    torch.set_num_threads(1)
    dm = dm_for(digits_inr, target="label", split="recorded")
    model_in = dm.weights("train")
    y = dm.items("train")["targets"]
    assert len(y) == 32 and len(set(y.tolist())) > 5
    torch.manual_seed(0)
    enc = build_encoder(name, dm.spec, 10, **OVERFIT_KWARGS[name])
    x = model_in if enc.raw_weights else dm.weight_normalizer(model_in)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    for step in range(400):
        out = enc(x)
        acc = (out.argmax(-1) == y).float().mean().item()
        if acc == 1.0:
            break
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc >= 0.95, f"{name}: training accuracy {acc:.2f} after {step + 1} steps on 32 INRs"
