"""The model core: one base module for every family, one checkpoint tag and loader, one
LightningCLI for any subclass, a true last checkpoint that resumes exactly, and one-line errors."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from wsl.cli import main
from wsl.core.checkpoint import load_model, read_checkpoint
from wsl.core.module import WeightSpaceModule
from wsl.core.trainer import best_checkpoint, last_checkpoint, make_trainer
from wsl.data import PropertyDataModule, WeightDataModule
from wsl.diffusion.model import WeightDiffusion, WeightGenerator
from wsl.hyper.model import HyperNetwork
from wsl.prediction.model import PropertyPredictor
from zoo.config import CONFIG_KINDS, resolve_config, shipped_configs
from zoo.config import parse_config
from zoo.generate import generate

from conftest import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> str:
    cfg = parse_config({
        "name": "core", "seed": 0, "num_models": 24, "epochs": 3, "checkpoints": [0, 1, 3],
        "task": {"name": "digits"}, "architecture": {"name": "mlp", "hidden": [8, 8], "activation": "relu"},
        "hparams": {"lr": {"log_uniform": [0.01, 0.3]}, "optimizer": "sgd", "batch_size": 32},
    })
    return str(generate(cfg, tmp_path_factory.mktemp("core") / "core.h5", progress=False, log=lambda s: None))


def _data(zoo: str, **kw) -> PropertyDataModule:
    return PropertyDataModule(zoo, target="test_acc", checkpoints="all", split=[0.5, 0.25, 0.25], batch_size=8,
                              augment={"permutation": True}, **kw)


# --- configs -------------------------------------------------------------------------------------
def test_every_shipped_run_config_names_its_classes_and_resolves_by_name():
    for kind in CONFIG_KINDS[1:]:
        for path in sorted(shipped_configs(kind).glob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            for key in ("model", "data"):
                assert "class_path" in raw[key], f"{path}: {key} names no class_path"
            assert resolve_config(path.stem, CONFIG_KINDS[1:]) == path


# --- the base module -----------------------------------------------------------------------------
def test_families_share_the_base_and_its_hyperparameters(zoo):
    dm = _data(zoo)
    model = PropertyPredictor(dm.spec_json, encoder="statnn", target="test_acc")
    assert isinstance(model, WeightSpaceModule) and model.kind == "predictor"
    assert issubclass(WeightDiffusion, WeightGenerator) and issubclass(WeightGenerator, WeightSpaceModule)
    assert issubclass(HyperNetwork, WeightSpaceModule)
    assert model.hparams.schedule == "cosine" and model.hparams.encoder == "statnn"  # subclass arguments recorded
    with pytest.raises(ValueError, match="PropertyPredictor needs the weight space"):
        PropertyPredictor("")
    with pytest.raises(ValueError, match="schedule must be one of"):
        PropertyPredictor(dm.spec_json, schedule="linear")


def test_normalizers_are_handed_over_with_one_signature(zoo):
    dm = _data(zoo)
    dm.setup("fit")
    model = PropertyPredictor(dm.spec_json, encoder="statnn", target="test_acc")
    assert not model.normalizers_fitted
    model.set_normalizers(**dm.normalizers())
    assert model.normalizers_fitted
    assert torch.equal(model.weight_normalizer.scale, dm.weight_normalizer.scale)
    assert torch.equal(model.target_normalizer.mean, dm.normalizers()["target_normalizer"].mean)
    gen_dm = WeightDataModule(zoo, checkpoints="last", split=[0.5, 0.25, 0.25], conditions=["test_acc"])
    gen_dm.setup("fit")
    gen = WeightDiffusion(gen_dm.spec_json, gen_dm.source_json, ["test_acc"], denoiser="mlp",
                          denoiser_kwargs={"hidden": 16, "layers": 1, "emb_dim": 8}, eval_samples=0)
    with pytest.raises(ValueError, match="conditioned on \\['test_acc'\\], but the data serves no conditions"):
        gen.set_normalizers(weight_normalizer=gen_dm.weight_normalizer)
    gen.set_normalizers(**gen_dm.normalizers())
    assert torch.equal(gen.condition_normalizer.std, gen_dm.condition_normalizer.std)


# --- one tag, one loader -------------------------------------------------------------------------
def test_one_loader_reads_every_family_and_names_what_it_found(zoo, tmp_path):
    dm = _data(zoo)
    predictor = PropertyPredictor(dm.spec_json, encoder="statnn", target="test_acc")
    gen_dm = WeightDataModule(zoo, checkpoints="last", split=[0.5, 0.25, 0.25])
    generator = WeightDiffusion(gen_dm.spec_json, gen_dm.source_json, denoiser="mlp",
                                denoiser_kwargs={"hidden": 16, "layers": 1, "emb_dim": 8}, eval_samples=0)
    p = save_checkpoint(predictor, tmp_path / "p.ckpt")
    g = save_checkpoint(generator, tmp_path / "g.ckpt")
    assert read_checkpoint(p)["wsl_model"] == {"class": "wsl.prediction.model.PropertyPredictor", "kind": "predictor"}
    loaded = load_model(p)
    assert type(loaded) is PropertyPredictor and loaded.normalizers_fitted and not loaded.training
    torch.testing.assert_close(loaded.state_dict(), predictor.state_dict(), rtol=0, atol=0)  # extra states too
    assert type(load_model(g, WeightGenerator)) is WeightDiffusion
    with pytest.raises(ValueError, match="expected a generator checkpoint .* found a predictor checkpoint "
                                         r"\(PropertyPredictor\)"):
        load_model(p, WeightGenerator)
    with pytest.raises(ValueError, match="expected a predictor checkpoint .* found a generator checkpoint"):
        load_model(g, PropertyPredictor)
    with pytest.raises(ValueError, match="expected a hypernetwork checkpoint .* found a predictor checkpoint"):
        load_model(p, HyperNetwork)


def test_a_named_class_outside_wsl_is_never_imported(zoo, tmp_path):
    dm = _data(zoo)
    path = save_checkpoint(PropertyPredictor(dm.spec_json, encoder="statnn"), tmp_path / "x.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["wsl_model"] = {"class": "os.system", "kind": "predictor"}
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="expected a model checkpoint .* found a predictor checkpoint \\(system\\)"):
        load_model(path)


@pytest.mark.parametrize("command", [
    ["sample", "--num", "2", "--out", "{tmp}/s.h5", "--model", "{pred}"],
    ["hyper", "search", "--model", "{pred}"],
    ["predict", "--model", "{gen}", "{zoo}"],
])
def test_commands_name_the_checkpoint_they_were_given(command, zoo, tmp_path, capsys):
    dm = _data(zoo)
    pred = save_checkpoint(PropertyPredictor(dm.spec_json, encoder="statnn"), tmp_path / "p.ckpt")
    gen_dm = WeightDataModule(zoo, checkpoints="last")
    gen = save_checkpoint(WeightDiffusion(gen_dm.spec_json, gen_dm.source_json, denoiser="mlp",
                                         denoiser_kwargs={"hidden": 8, "layers": 1, "emb_dim": 8}), tmp_path / "g.ckpt")
    args = [a.format(tmp=tmp_path, pred=pred, gen=gen, zoo=zoo) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wsl: error:")
    found = "a generator checkpoint" if command[0] == "predict" else "a predictor checkpoint"
    assert found in err[0]


# --- one CLI for any subclass ----------------------------------------------------------------------
USER_MODEL = '''
    """A user's own model: the mean of each network's weights, regressed on the target."""
    import torch
    from wsl.core.module import WeightSpaceModule


    class MeanRegressor(WeightSpaceModule):
        kind = "mean regressor"

        def __init__(self, spec_json: str = "", target: str = "", lr: float = 0.01):
            super().__init__(spec_json, lr=lr)
            self.head = torch.nn.Linear(1, 1)

        def forward(self, wb):
            return self.head(wb.flatten().mean(1, keepdim=True)).squeeze(-1)

        def training_step(self, batch, batch_idx):
            return (self(batch[0]) - batch[1].float()).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.collect("err", float((self(batch[0]) - batch[1].float()).pow(2).sum()))

        def on_validation_epoch_end(self):
            self.log_score(-sum(self.gathered("err")))
'''


def test_a_users_own_subclass_fits_from_a_config(zoo, tmp_path, monkeypatch, capsys):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 2, "default_root_dir": str(tmp_path / "runs"), "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "data": {"class_path": "wsl.data.PropertyDataModule",
                 "init_args": {"zoos": zoo, "target": "test_acc", "split": [0.5, 0.25, 0.25], "batch_size": 8}},
        "model": {"class_path": "user_models.MeanRegressor", "init_args": {"lr": 0.05}},
    }))
    assert main(["fit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    best = next(line.split()[2] for line in out.splitlines() if line.startswith("best checkpoint:"))
    assert "last checkpoint:" in out
    model = load_model(best)
    assert type(model).__name__ == "MeanRegressor" and model.hparams.target == "test_acc"  # linked from the data
    assert sys.modules["user_models"].MeanRegressor is type(model)


# --- one-line errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    ([], "zoos/digits_mlp.h5: zoo file not found; point the config at a zoo with --data.zoos PATH"),
    (["--data.zoos", "{zoo}", "--data.target", "test_accc"], "'test_accc' is neither a stored metric"),
    (["--data.zoos", "{zoo}", "--model.encoder", "nope"], "unknown encoder 'nope'"),
    (["--data.zoos", "{zoo}", "--data.targett", "test_acc"], "Option 'targett' is not accepted; did you mean 'target'?"),
    (["--data.zoos", "{zoo}", "--model.encoder_kwarg", "{{hidden: 8}}"],
     "Option 'encoder_kwarg.hidden' is not accepted; did you mean 'encoder_kwargs'?"),
    (["--data.zoos", "{zoo}", "--ckpt_path", "{tmp}/runs/*/best-*.ckpt"],
     "best-*.ckpt: not found; a pattern in quotes is not expanded by the shell"),
])
def test_fit_mistakes_are_one_line(extra, expected, zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no zoos/digits_mlp.h5 here
    args = ["fit", "--config", "digits_statnn", *[a.format(zoo=zoo, tmp=tmp_path) for a in extra]]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("wsl: error: ") and expected in err[0], err


def test_a_bare_zoo_path_and_a_config_name_fit(zoo, tmp_path, capsys):
    args = ["fit", "--config", "digits_statnn", "--data.zoos", zoo, "--data.split", "[0.5, 0.25, 0.25]",
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false"]
    assert main(args) == 0
    assert "best checkpoint: " in capsys.readouterr().out


# --- the last checkpoint resumes exactly -----------------------------------------------------------
class Crash(pl.Callback):
    """Stops a fit in the middle of an epoch, as a killed process would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise RuntimeError("killed")


def _fit(family: str, zoo: str, folder: Path, epochs: int, callbacks=(), ckpt_path=None) -> WeightSpaceModule:
    """A predictor (its augmentation draws from the data module's generator) or a generator (its
    noise and condition dropout draw from torch's global one), fitted with the core's checkpoints."""
    pl.seed_everything(0)
    if family == "predictor":
        dm = _data(zoo)
        dm.setup("fit")
        model = PropertyPredictor(dm.spec_json, encoder="deepsets", encoder_kwargs={"hidden": 8}, target="test_acc")
    else:
        dm = WeightDataModule(zoo, checkpoints="all", split=[0.5, 0.25, 0.25], batch_size=8, conditions=["test_acc"])
        dm.setup("fit")
        model = WeightDiffusion(dm.spec_json, dm.source_json, ["test_acc"], denoiser="mlp", eval_samples=0,
                                denoiser_kwargs={"hidden": 16, "layers": 1, "emb_dim": 8}, condition_dropout=0.5)
    model.set_normalizers(**dm.normalizers())
    trainer = make_trainer(epochs, [best_checkpoint(dirpath=folder), last_checkpoint(dirpath=folder), *callbacks],
                           accelerator="cpu")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("family", ["predictor", "generator"])
def test_last_checkpoint_is_the_last_state_and_resumes_to_the_same_end(family, zoo, tmp_path, one_thread):
    whole = _fit(family, zoo, tmp_path / "whole", 4)
    last = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3  # the end of training, whatever epoch scored best
    with pytest.raises(RuntimeError, match="killed"):
        _fit(family, zoo, tmp_path / "cut", 4, [Crash(epoch=2)])
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["epoch"] == 1
    resumed = _fit(family, zoo, tmp_path / "cut", 4, ckpt_path=tmp_path / "cut" / "last.ckpt")
    torch.testing.assert_close(resumed.state_dict(), whole.state_dict(), rtol=0, atol=0)  # calibration too
