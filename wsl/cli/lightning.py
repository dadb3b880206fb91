"""``wsl fit|validate|test``: LightningCLI over the property predictor and its DataModule.

The weight space, the number of outputs and the task type come from the zoo file: they are
linked from the DataModule to the model, so a config names only the zoo, the target and the
encoder (see configs/predict/). Before each subcommand the DataModule is set up and the model
receives its normalizers. The checkpoint kept is the best on validation runs (``val/score``:
Kendall tau for regression, accuracy for classification); test runs are only ever evaluated.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from wsl.data import PropertyDataModule
from wsl.prediction.model import PropertyPredictor
from wsl.training import TRAINER_DEFAULTS


class WSLCLI(LightningCLI):
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


def run_lightning_cli(args: list[str]) -> None:
    WSLCLI(
        PropertyPredictor,
        PropertyDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        trainer_defaults={
            **TRAINER_DEFAULTS,
            "max_epochs": 30,
            "default_root_dir": "runs",
            "callbacks": [ModelCheckpoint(monitor="val/score", mode="max", save_last=True, filename="best-{epoch}")],
        },
    )
