"""``wsl fit|validate|test``: LightningCLI over the weight-space model families and their DataModules.

- Property prediction (configs/predict/): ``PropertyPredictor`` on a ``PropertyDataModule``. The
  weight space, the number of outputs and the task type come from the zoo file: they are linked
  from the DataModule to the model, so a config names only the zoo, the target and the encoder.
  The checkpoint kept is the best on validation runs (``val/score``: Kendall tau for regression,
  accuracy for classification).
- Generation (configs/diffusion/): a config whose ``model`` names a ``class_path`` (a
  ``wsl.diffusion`` generator) on a ``WeightDataModule``; the weight space, the source zoo and
  the conditions are linked from the data. The checkpoint kept is the best ``val/score``: the
  validation accuracy of sampled networks (the task's validation examples), or minus the denoising
  loss on validation runs where the task cannot be run.
- Hypernetworks (configs/hyper/): a config whose ``model`` names a ``wsl.hyper`` class and whose
  ``data`` names its DataModule's class (``TaskDataModule`` for the functional loss, a
  ``WeightDataModule`` for distillation from a zoo); weight space, source and conditions are
  linked from the data. The checkpoint kept is the best ``val/score`` (the emitted networks'
  validation accuracy, or PSNR for INRs).

Before each subcommand the DataModule is set up and the model receives its normalizers. Test
runs are only ever evaluated, never used to choose.
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from wsl.data import PropertyDataModule, WeightDataModule
from wsl.diffusion.model import WeightGenerator
from wsl.prediction.model import PropertyPredictor
from wsl.training import TRAINER_DEFAULTS


class WSLCLI(LightningCLI):
    """The property predictor's CLI; ``GeneratorCLI`` differs only in what it links."""

    def add_arguments_to_parser(self, parser) -> None:
        for attr in ("spec_json", "num_outputs", "task_type", "class_names"):
            parser.link_arguments(f"data.{attr}", f"model.{attr}", apply_on="instantiate")
        parser.link_arguments("data.target", "model.target")

    def _hand_over_normalizers(self) -> None:
        """A checkpoint given with --ckpt_path replaces these buffers with its own when it loads."""
        self.datamodule.setup("fit")
        self.model.set_normalizers(**self.datamodule.normalizers())

    def before_fit(self) -> None:
        self._hand_over_normalizers()

    def before_validate(self) -> None:
        self._hand_over_normalizers()

    def before_test(self) -> None:
        self._hand_over_normalizers()


class GeneratorCLI(WSLCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for attr in ("spec_json", "source_json"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")
        parser.link_arguments("data.conditions", "model.init_args.conditions")


class HyperCLI(WSLCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for attr in ("spec_json", "source_json", "conditions"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", apply_on="instantiate")


def model_class_path(args: list[str]) -> str | None:
    """The ``class_path`` a ``--config`` file's ``model`` names (generators, hypernetworks), or None
    (the property predictor's configs name only its arguments)."""
    for k, a in enumerate(args):
        path = args[k + 1] if a == "--config" and k + 1 < len(args) else a[len("--config="):] \
            if a.startswith("--config=") else None
        if path and Path(path).is_file():
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
            model = raw.get("model") if isinstance(raw, dict) else None
            if isinstance(model, dict) and "class_path" in model:
                return str(model["class_path"])
    return None


def _best_checkpoint() -> ModelCheckpoint:
    return ModelCheckpoint(monitor="val/score", mode="max", save_last=True, filename="best-{epoch}")


def run_lightning_cli(args: list[str]) -> None:
    class_path = model_class_path(args)
    common = dict(args=args, save_config_kwargs={"overwrite": True}, seed_everything_default=0)
    if class_path is not None and class_path.startswith("wsl.hyper"):
        HyperCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 **common, trainer_defaults={**TRAINER_DEFAULTS, "max_epochs": 100, "default_root_dir": "runs",
                                             "callbacks": [_best_checkpoint()]})
        return
    if class_path is not None:
        GeneratorCLI(
            WeightGenerator, WeightDataModule, subclass_mode_model=True, **common,
            trainer_defaults={**TRAINER_DEFAULTS, "max_epochs": 100, "default_root_dir": "runs",
                              "callbacks": [_best_checkpoint()]})
        return
    WSLCLI(
        PropertyPredictor, PropertyDataModule, **common,
        trainer_defaults={
            **TRAINER_DEFAULTS,
            "max_epochs": 30,
            "default_root_dir": "runs",
            "callbacks": [_best_checkpoint()],
        },
    )
