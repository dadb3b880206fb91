"""Fit one property predictor on a set-up ``PropertyDataModule``: what the demo and the benchmarks
run for every encoder (``wsl fit`` does the same through LightningCLI)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from wsl.data import PropertyDataModule
from wsl.core.checkpoint import load_model
from wsl.core.trainer import best_checkpoint, make_trainer
from wsl.prediction.model import PropertyPredictor


@dataclass
class FittedPredictor:
    checkpoint: Path | None  # the best checkpoint by validation score (None: no validation runs)
    model: PropertyPredictor  # loaded from it
    test_predictions: np.ndarray  # for dm.items("test"), in that order
    best_val: float  # its validation score (Kendall tau, or accuracy for classification)
    fit_seconds: float


class ValidationCurve(pl.Callback):
    """The learning curve of a fit: ``points`` holds (seconds since the fit started, epoch, validation
    score) after every validation epoch, the sanity check excluded."""

    def __init__(self, monitor: str = "val/score"):
        self.monitor = monitor
        self.points: list[tuple[float, int, float]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.points, self._t0 = [], time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:  # where ModelCheckpoint reads it too
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.points.append((time.perf_counter() - self._t0, trainer.current_epoch, float(value)))


def fit_predictor(dm: PropertyDataModule, encoder: str, encoder_kwargs: dict, lr: float, epochs: int,
                  work_dir: str | Path, filename: str = "best", weight_decay: float = 1e-4, max_minutes: float | None = None,
                  callbacks: Sequence[pl.Callback] = (), **trainer_overrides) -> FittedPredictor:
    """Train, keep the checkpoint with the best validation score (never a test figure), and predict
    the test runs' checkpoints with it."""
    dm.setup("fit")
    model = PropertyPredictor(spec_json=dm.spec_json, num_outputs=dm.num_outputs, task_type=dm.task_type,
                              encoder=encoder, encoder_kwargs=encoder_kwargs, lr=lr, weight_decay=weight_decay,
                              class_names=dm.class_names, target=dm.target)
    model.set_normalizers(**dm.normalizers())
    ckpt = best_checkpoint(filename, dirpath=work_dir, enable_version_counter=False)
    trainer = make_trainer(epochs, [ckpt, *callbacks], max_minutes, **trainer_overrides)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - t0
    path = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    if path is not None:
        model = load_model(path, PropertyPredictor)
    best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    preds = trainer.predict(model, dm.predict_dataloader())
    return FittedPredictor(path, model, torch.cat(preds).float().cpu().numpy(), best_val, fit_s)
