"""wsl fit / test / predict end to end on a tiny zoo."""
import csv

import numpy as np
import pytest
import torch

from wsl.cli import main
from wsl.core.checkpoint import load_model, read_checkpoint
from wsl.prediction.model import PropertyPredictor
from wsl.prediction.predict import run_predict
from wsl.weights import WeightBatch
from zoo.config import parse_config
from zoo.generate import generate
from zoo.store import Zoo

# The classes wsl fit builds (the shipped configs name them; these tests give them on the command line).
PREDICTOR = ["--model", "wsl.prediction.model.PropertyPredictor", "--data", "wsl.data.PropertyDataModule"]


def _zoo(path, hidden=(8, 8), n=48, seed=0):
    cfg = parse_config({
        "name": "tiny", "seed": seed, "num_models": n, "epochs": 2, "checkpoints": [0, 1, 2],
        "task": {"name": "digits", "n_train": 200, "n_val": 97},
        "architecture": {"name": "mlp", "hidden": list(hidden), "activation": "relu"},
        "hparams": {"lr": {"log_uniform": [0.001, 0.5]}, "optimizer": {"choice": ["sgd", "adam"]}},
        "training": {"chunk_size": 64},
    })
    return generate(cfg, path, progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    zoo = _zoo(tmp / "tiny.h5")
    args = ["fit", *PREDICTOR, "--data.zoos", f"[{zoo}]", "--data.target", "test_acc", "--data.checkpoints", "all",
            "--data.batch_size", "16", "--data.augment", "{permutation: true}",
            "--model.encoder", "statnn", "--model.lr", "0.003", "--trainer.max_epochs", "3",
            "--trainer.default_root_dir", str(tmp / "runs"), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false"]
    assert main(args) == 0
    ckpts = sorted((tmp / "runs").rglob("best-*.ckpt"))
    assert ckpts, "fit wrote no best checkpoint"
    return tmp, zoo, ckpts[0]


def test_checkpoint_carries_spec_normalizers_and_split(fitted):
    tmp, zoo_path, ckpt = fitted
    model = load_model(ckpt, PropertyPredictor)
    with Zoo(zoo_path) as z:
        assert model.spec.to_json() == z.spec.to_json()
    assert model.hparams.target == "test_acc" and model.regression
    assert not torch.allclose(model.weight_normalizer.scale, torch.ones_like(model.weight_normalizer.scale))
    state = read_checkpoint(ckpt, PropertyPredictor)
    runs = state["PropertyDataModule"]["split_runs_by_zoo"]
    splits = next(iter(runs.values()))
    assert set(splits["train"]).isdisjoint(splits["test"]) and len(splits["test"]) > 0


def test_predict_files_and_zoo_agree(fitted, tmp_path, capsys):
    _, zoo_path, ckpt = fitted
    model = load_model(ckpt, PropertyPredictor)
    with Zoo(zoo_path) as z:
        row = int(z.select()[0])
        sd = z.state_dict(row)
        expected = model.predict_values(WeightBatch.from_params(z.spec, z.batch([row]))).item()
        index = int(z.index[row])
    torch.save(sd, tmp_path / "m.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"))
    preds = run_predict(str(ckpt), [str(tmp_path), str(zoo_path)], csv_path=str(tmp_path / "p.csv"))
    by_source = {p.source: p.value for p in preds}
    assert by_source[str(tmp_path / "m.pt")] == pytest.approx(expected, abs=1e-6)
    assert by_source[str(tmp_path / "m.safetensors")] == pytest.approx(expected, abs=1e-6)
    zoo_pred = [p for p in preds if p.source.endswith(f"#model={index}@epoch=2")]
    assert zoo_pred and zoo_pred[0].value == pytest.approx(expected, abs=1e-6)
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0][:2] == ["input", "predicted_test_acc"] and len(rows) == len(preds) + 1
    # --split test restricts a zoo input to the predictor's own held-out runs
    test_preds = run_predict(str(ckpt), [str(zoo_path)], split="test")
    state = read_checkpoint(ckpt, PropertyPredictor)
    test_runs = set(next(iter(state["PropertyDataModule"]["split_runs_by_zoo"].values()))["test"])
    assert {int(p.source.split("model=")[1].split("@")[0]) for p in test_preds} == test_runs


def test_predict_rejects_other_architectures_and_untrusted_pickles(fitted, tmp_path, capsys):
    _, _, ckpt = fitted
    other = _zoo(tmp_path / "other.h5", hidden=(8, 6), n=4)
    with Zoo(other) as z:
        torch.save(z.state_dict(0), tmp_path / "wrong.pt")
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "wrong.pt")]) == 2
    err = capsys.readouterr().err
    assert "layers.1.weight" in err and "expected shape [8, 8], found [6, 8]" in err
    assert main(["predict", "--model", str(ckpt), str(other)]) == 2
    assert "does not match" in capsys.readouterr().err

    class Evil:  # pickled objects are refused: weights_only=True
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"layers.0.weight": Evil()}, tmp_path / "evil.pt")
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "evil.pt")]) == 2
    assert "tensors-only" in capsys.readouterr().err


def test_wsl_test_reports_metrics_on_test_runs(fitted, capsys):
    tmp, zoo_path, ckpt = fitted
    args = ["test", *PREDICTOR, "--data.zoos", f"[{zoo_path}]", "--data.checkpoints", "all", "--model.encoder", "statnn",
            "--trainer.default_root_dir", str(tmp / "runs"), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false", "--ckpt_path", str(ckpt)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("test/tau", "test/r2", "test/mae"):
        assert name in out


def test_classification_target(tmp_path):
    zoo = _zoo(tmp_path / "tiny.h5", n=32)
    args = ["fit", *PREDICTOR, "--data.zoos", f"[{zoo}]", "--data.target", "optimizer", "--model.encoder", "hnp",
            "--model.encoder_kwargs", "{channels: 4, layers: 1}", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false"]
    assert main(args) == 0
    model = load_model(sorted((tmp_path / "runs").rglob("*.ckpt"))[0], PropertyPredictor)
    assert not model.regression and model.hparams.class_names == ["adam", "sgd"]
    with Zoo(zoo) as z:
        probs = model.predict_values(WeightBatch.from_params(z.spec, z.batch([0, 1, 2])))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1).numpy(), 1.0, atol=1e-5)


def test_fit_predictor_reloads_its_best_checkpoint_with_the_safe_loader(fitted, tmp_path, monkeypatch):
    from wsl.data import PropertyDataModule
    from wsl.prediction.fit import fit_predictor
    from wsl.prediction.model import PropertyPredictor

    def unsafe(*args, **kwargs):
        raise AssertionError("Lightning's loader would unpickle the checkpoint, code and all")

    monkeypatch.setattr(PropertyPredictor, "load_from_checkpoint", unsafe)
    _, zoo_path, _ = fitted
    dm = PropertyDataModule([str(zoo_path)], target="test_acc", checkpoints="all", batch_size=16)
    result = fit_predictor(dm, "statnn", {}, 3e-3, 1, tmp_path / "fp", enable_progress_bar=False, logger=False)
    assert result.checkpoint is not None and not result.model.training
    loaded = load_model(result.checkpoint, PropertyPredictor)
    for (k, a), b in zip(result.model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert ((result.test_predictions >= 0) & (result.test_predictions <= 1)).all()  # accuracies stay in [0, 1]


def test_validation_curve_records_every_epoch_and_its_best_is_the_checkpoints(fitted, tmp_path):
    from wsl.data import PropertyDataModule
    from wsl.prediction.fit import ValidationCurve, fit_predictor

    _, zoo_path, _ = fitted
    dm = PropertyDataModule([str(zoo_path)], target="test_acc", checkpoints="all", batch_size=16)
    curve = ValidationCurve()
    result = fit_predictor(dm, "statnn", {}, 3e-3, 3, tmp_path / "fp", enable_progress_bar=False, logger=False,
                           callbacks=[curve])
    assert [epoch for _, epoch, _ in curve.points] == [0, 1, 2]  # the sanity check is not a point
    seconds = [t for t, _, _ in curve.points]
    assert seconds == sorted(seconds) and seconds[-1] <= result.fit_seconds
    assert max(score for _, _, score in curve.points) == pytest.approx(result.best_val)
