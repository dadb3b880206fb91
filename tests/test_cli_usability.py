"""The command line as a new user meets it: `wsl sample` (overwriting, progress, requests outside
what the generator saw, unconditional sampling, what `zoo info` says of a generated zoo), choices
shown as choices, help on every option, INR config sizes, `wsl predict --split` on any path to
the zoo, and predictions for zoos whose activation is fixed."""
from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import pytest
import torch

from conftest import generate_zoo, save_checkpoint
from wsl.cli.main import build_parser, main
from wsl.data.normalize import TargetNormalizer
from wsl.data.runs import ZooRuns
from wsl.prediction.model import PropertyPredictor
from wsl.prediction.predict import predict_weights, run_predict
from wsl.weights import WeightBatch
from zoo.architectures import build_spec
from zoo.errors import InputError
from zoo.store import Zoo

ZOO = {"name": "usability", "seed": 3, "num_models": 12, "epochs": 2, "checkpoints": [0, 2],
       "task": {"name": "digits", "n_train": 200, "n_val": 97},
       "architecture": {"name": "mlp", "hidden": [6], "activation": "relu"},
       "hparams": {"lr": {"log_uniform": [0.01, 0.3]}, "momentum": {"choice": [0.0, 0.9]}},
       "training": {"chunk_size": 12}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on shared cores (see conftest)."""


@pytest.fixture(scope="module")
def zoo_path(tmp_path_factory):
    return generate_zoo(ZOO, tmp_path_factory.mktemp("usability") / "zoo.h5")


@pytest.fixture(scope="module")
def generator(zoo_path, tmp_path_factory):
    """A generator conditioned on test_acc, trained one epoch: its checkpoint file."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from wsl.core.trainer import make_trainer
    from wsl.data import WeightDataModule
    from wsl.diffusion.model import WeightDiffusion

    d = tmp_path_factory.mktemp("generator")
    dm = WeightDataModule([zoo_path], conditions=["test_acc"], batch_size=4, split=[0.6, 0.2, 0.2])
    model = WeightDiffusion(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions,
                            denoiser="mlp", denoiser_kwargs={"hidden": 8, "layers": 1}, eval_samples=0,
                            sample_steps=2)
    dm.setup("fit")
    model.set_normalizers(**dm.normalizers())
    make_trainer(1, [ModelCheckpoint(dirpath=d, filename="gen")], enable_checkpointing=True).fit(model, dm)
    return str(d / "gen.ckpt"), model.condition_normalizer.observed_range()


# --- wsl sample -------------------------------------------------------------------------------------------

def test_sample_shows_progress_and_overwrites_only_when_asked(generator, zoo_path, tmp_path, capsys):
    ckpt, _ = generator
    out = tmp_path / "gen.h5"
    args = ["sample", "--model", ckpt, "--num", "3", "--out", str(out), "--condition", "test_acc=0.3"]
    assert main(args) == 0
    err = capsys.readouterr().err
    for stage in ("sampling 3 networks", "running the 3 networks on task digits", f"writing {out}"):
        assert stage in err
    before = out.read_bytes()
    assert main(args) == 2
    assert f"--out {out}: the file exists; give --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--seed", "1", "--overwrite"]) == 0 and out.read_bytes() != before
    trained = Path(zoo_path).read_bytes()  # a trained zoo is never replaced, --overwrite or not
    assert main([*args[:6], zoo_path, *args[7:], "--overwrite"]) == 2
    assert "is not a generated zoo" in capsys.readouterr().err and Path(zoo_path).read_bytes() == trained


def test_sample_refuses_impossible_requests_and_warns_outside_the_training_runs(generator, tmp_path, capsys):
    ckpt, (low, high) = generator
    out = tmp_path / "gen.h5"
    for request in ("test_acc=1.7", "test_acc=0.2:1.5", "test_acc=nan"):
        assert main(["sample", "--model", ckpt, "--num", "2", "--out", str(out), "--condition", request]) == 2
        err = capsys.readouterr().err
        assert err.startswith("wsl: error: --condition test_acc: expected") and len(err.splitlines()) == 1
    assert main(["sample", "--model", ckpt, "--num", "2", "--out", str(out), "--condition", "test_acc=1.7"]) == 2
    assert "expected values in [0, 1] (the range of test_acc), found 1.7" in capsys.readouterr().err
    assert not out.exists()
    inside = float((low + high) / 2)
    assert main(["sample", "--model", ckpt, "--num", "2", "--out", str(out), "--condition", f"test_acc={inside}"]) == 0
    assert "warning" not in capsys.readouterr().err
    outside = float(high) + (1 - float(high)) / 2
    assert main(["sample", "--model", ckpt, "--num", "2", "--out", str(out), "--overwrite", "--condition",
                 f"test_acc={outside}"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wsl: warning:")]
    assert len(warning) == 1 and f"training runs ({float(low):.4g} to {float(high):.4g})" in warning[0]


def test_the_condition_normalizer_keeps_the_training_range_and_reads_older_states():
    fitted = TargetNormalizer(2).fit(torch.tensor([[0.2, 1.0], [0.6, float("nan")], [0.4, 3.0]]))
    low, high = fitted.observed_range()
    assert low.tolist() == pytest.approx([0.2, 1.0]) and high.tolist() == pytest.approx([0.6, 3.0])
    loaded = TargetNormalizer(2)
    loaded.load_state_dict(fitted.state_dict())
    assert torch.equal(loaded.observed_range()[1], high)
    older = {k: v for k, v in fitted.state_dict().items() if k in ("mean", "std")}  # checkpoints before the range
    loaded.load_state_dict(older)
    assert loaded.observed_range() is None and torch.equal(loaded.mean, fitted.mean)


def test_unconditional_sampling_of_a_conditional_generator_says_so(generator, tmp_path, capsys):
    ckpt, _ = generator
    out = tmp_path / "uncond.h5"
    assert main(["sample", "--model", ckpt, "--num", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("wsl: warning:")]
    assert len(warning) == 1 and "trained on conditions ['test_acc']; sampling unconditionally" in warning[0]
    assert "conditions none (unconditional)" in captured.out
    assert "requested per network" not in captured.out and "hyperparameters:" not in captured.out


def test_zoo_info_of_a_generated_zoo_says_what_it_is(generator, zoo_path, tmp_path, capsys):
    ckpt, _ = generator
    out = tmp_path / "gen.h5"
    assert main(["sample", "--model", ckpt, "--num", "3", "--out", str(out), "--condition", "test_acc=0.3:0.5",
                 "--guidance", "2", "--seed", "4"]) == 0
    capsys.readouterr()
    assert main(["zoo", "info", str(out)]) == 0
    info = capsys.readouterr().out
    lines = {line[:11].strip(): line[11:] for line in info.splitlines() if not line.startswith(" ")}
    assert lines["generated"].startswith(f"generator {ckpt}, generator_class WeightDiffusion, conditions "
                                         '["test_acc=0.3:0.5"], guidance 2.0, seed 4')
    assert lines["source"].startswith(f"source_zoo {zoo_path}") and "train_runs [" in lines["source"]
    assert "init" not in lines and "hyperparameters:" not in info
    assert "requested per network:\n  requested_test_acc 0.3 .. 0.5\n" in info + "\n"


# --- wsl zoo info, help -------------------------------------------------------------------------------------

def test_zoo_info_shows_a_choice_as_a_choice(zoo_path, capsys):
    assert main(["zoo", "info", zoo_path]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("momentum"))
    with Zoo(zoo_path) as z:
        n = int((z.hparam("momentum") == 0.9).sum())
    assert line == f"  momentum      0 x{12 - n}, 0.9 x{n} (choice)"


def _options(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_says_what_it_is_and_its_default():
    for command, action in _options(build_parser()):
        name = f"wsl {command} {action.option_strings[0] if action.option_strings else action.dest}"
        assert action.help, f"{name}: no help text"
        default = action.default
        if default not in (None, False, [], argparse.SUPPRESS):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert shown in action.help, f"{name}: help does not give the default {default!r}"


def test_an_inr_config_with_fewer_models_says_the_task_sizes_set_the_images(tmp_path, capsys):
    import yaml

    config = tmp_path / "inr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "inr", "num_models": 10, "epochs": 1, "architecture": {"name": "siren", "hidden": [8]},
        "task": {"name": "digits-inr", "n_train": 16, "n_val": 6, "n_test": 6}}))
    assert main(["zoo", "generate", str(config), "--out", str(tmp_path / "inr.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "num_models: expected 28" in err and "n_train 16 + n_val 6 + n_test 6" in err
    assert "set the number of signals (images)" in err and "found 10" in err


# --- wsl predict --split on any path to the zoo ----------------------------------------------------------

def _predictor_with_split(zoo_path: str, recorded_as: str, path: Path, hashes: bool = True) -> tuple[str, dict]:
    """A predictor checkpoint whose data module recorded a split of the zoo under ``recorded_as``."""
    runs = ZooRuns(zoo_path)
    split = runs.draw_split([0.5, 0.25, 0.25], seed=1)
    state = split.state([recorded_as], runs.config_hashes if hashes else None)
    with Zoo(zoo_path) as z:
        spec = z.spec
    model = PropertyPredictor(spec.to_json(), encoder="statnn", target="test_acc").eval()
    save_checkpoint(model, path, PropertyDataModule=state, datamodule_hyper_parameters={"split": [0.5, 0.25, 0.25]})
    return str(path), split.runs


def _models(preds) -> list[int]:
    return sorted(int(p.source.split("model=")[1].split("@")[0]) for p in preds)


def test_predict_split_finds_the_zoo_by_its_content(zoo_path, tmp_path, monkeypatch, capsys):
    zoo = Path(zoo_path)
    monkeypatch.chdir(zoo.parent.parent)
    relative = str(Path(zoo.parent.name) / zoo.name)
    ckpt, runs = _predictor_with_split(relative, relative, tmp_path / "pred.ckpt")
    test_runs = sorted(i for _, i in runs["test"])
    copy = tmp_path / "copy.h5"
    shutil.copy(zoo, copy)
    for given in (relative, str(zoo.resolve()), str(copy), f"./{relative}"):
        assert _models(run_predict(ckpt, [given], split="test", stream=io.StringIO())) == test_runs, given
        assert sorted(i for _, i in ZooRuns(given).saved_split(
            torch.load(ckpt, weights_only=True)["PropertyDataModule"]).runs["val"]) == \
            sorted(i for _, i in runs["val"])
    # a checkpoint written before the hashes: found by path or name
    old, _ = _predictor_with_split(relative, relative, tmp_path / "old.ckpt", hashes=False)
    assert _models(run_predict(old, [str(zoo.resolve())], split="test", stream=io.StringIO())) == test_runs
    # another zoo of the same architecture: the error names the recorded zoo
    other = generate_zoo({**ZOO, "seed": 4}, tmp_path / "other.h5")
    assert main(["predict", "--model", ckpt, other, "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert f"{other}: not a zoo the checkpoint's split was made on" in err and f"it records {relative} (config hash" in err


# --- predictions for a zoo whose config fixes the activation ------------------------------------------------

def test_predict_weights_names_a_fixed_activation_for_a_predictor_of_mixed_ones(zoo_path):
    """benchmark_transfer's shifted zoo: its DataModule serves a batch whose spec fixes relu; a probe
    predictor trained on mixed activations needs each network's named, as wsl predict does."""
    torch.manual_seed(0)
    open_spec = build_spec("mlp", (64,), 10, hidden=[6], activation=None)
    probe = PropertyPredictor(open_spec.to_json(), encoder="probe", encoder_kwargs={"probes": 8, "hidden": 16},
                              target="test_acc").eval()
    with Zoo(zoo_path) as z:
        fixed = WeightBatch.from_params(z.spec, z.batch(list(range(len(z)))))
    assert fixed.spec.activation == "relu" and fixed.activation is None
    with pytest.raises(InputError, match="activation varies per network"):
        probe.predict_values(fixed)  # what the script did
    named = WeightBatch.from_params(open_spec, fixed.params())
    named.activation = ["relu"] * len(named)
    torch.testing.assert_close(predict_weights(probe, fixed, batch_size=5), probe.predict_values(named))
