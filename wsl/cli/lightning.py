"""``wsl fit|validate|test``: LightningCLI over the property predictor and the zoo DataModule.

The weight space, the number of outputs and the task type come from the zoo file: they are
linked from the DataModule to the model, so a config names only the zoo, the target and the
encoder (see configs/predict/). The checkpoint kept is the best on validation runs (``val/score``:
Kendall tau for regression, accuracy for classification); test runs are only ever evaluated.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from wsl.data import ZooDataModule
from wsl.prediction.model import PropertyPredictor


class WSLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for attr in ("spec_json", "num_outputs", "task_type", "class_names"):
            parser.link_arguments(f"data.{attr}", f"model.{attr}", apply_on="instantiate")
        parser.link_arguments("data.target", "model.target")


def run_lightning_cli(args: list[str]) -> None:
    WSLCLI(
        PropertyPredictor,
        ZooDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        trainer_defaults={
            "accelerator": "auto",
            "devices": 1,
            "max_epochs": 30,
            "default_root_dir": "runs",
            "log_every_n_steps": 10,
            "callbacks": [ModelCheckpoint(monitor="val/score", mode="max", save_last=True, filename="best-{epoch}")],
        },
    )
