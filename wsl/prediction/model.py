"""Property prediction: a LightningModule that maps checkpoints' weights to a property.

Regression (test accuracy, generalization gap, a numeric hyperparameter, ...) is trained with MSE
on standardized targets and reported with Kendall tau, R^2 and MAE in the target's units;
classification (optimizer, activation, an INR's class, ...) with cross-entropy and accuracy. The
weight and target normalizers are buffers of this module: they are fitted on the training split
by the DataModule and handed over with ``set_normalizers``, saved in every checkpoint, and applied
unchanged at prediction time.

Bounded targets are predicted inside their range: a regression head is unbounded, so a predicted
test accuracy could read -0.2 or 1.1. ``zoo.store.METRIC_BOUNDS`` declares the ranges by name, and
``predict_values`` and the validation/test metrics clamp to it (the training loss does not: the
gradient stays informative outside the range).

Every prediction can say how far to trust it: the validation runs, scored at the end of every
validation epoch, calibrate conformal intervals (regression) or prediction sets (classification),
``wsl.prediction.conformal``; the training runs are the reference of an out-of-distribution score,
``wsl.prediction.ood``, whose p-values the same validation runs calibrate once per fit (they do not
depend on the predictor's weights). Both travel in every checkpoint (``trust``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, R2Score
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import KendallRankCorrCoef

from wsl.core.module import WeightSpaceModule
from wsl.nn import build_encoder
from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.prediction.conformal import ConformalCalibration
from wsl.prediction.ood import OODScore
from wsl.weights import WeightBatch
from zoo.errors import InputError
from zoo.store import metric_bounds

@dataclass
class Trust:
    """``PropertyPredictor.trust``'s output for a batch: the values, and what says how far to trust
    them (an entry is None where the predictor carries no calibration for it)."""
    values: torch.Tensor  # [B] regression values, or [B, classes] probabilities
    low: torch.Tensor | None = None  # [B] the conformal interval (regression)
    high: torch.Tensor | None = None
    sets: torch.Tensor | None = None  # [B, classes] bool prediction sets (classification)
    ood_score: torch.Tensor | None = None  # [B]
    ood_p: torch.Tensor | None = None  # [B]

    @staticmethod
    def cat(parts: list["Trust"]) -> "Trust":
        def join(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)
        return Trust(**{name: join(name) for name in Trust.__dataclass_fields__})


class PropertyPredictor(WeightSpaceModule):
    """Args (beyond ``WeightSpaceModule``'s): ``num_outputs``, ``task_type``, ``class_names`` and
    ``target`` (linked from the ``PropertyDataModule``); ``encoder`` (a name of ``wsl.nn``'s
    registry) and ``encoder_kwargs``. Trained with a cosine schedule after one warm-up epoch."""

    kind = "predictor"

    def __init__(self, spec_json: str = "", num_outputs: int = 1, task_type: str = "regression",
                 encoder: str = "hnp", encoder_kwargs: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, warmup_epochs: int = 1, class_names: list[str] | None = None,
                 target: str = "", schedule: str = "cosine"):
        if task_type not in ("regression", "classification"):
            raise InputError(f"task_type must be 'regression' or 'classification', found {task_type!r}")
        super().__init__(spec_json, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs)
        self.encoder = build_encoder(encoder, self.spec, num_outputs, **(encoder_kwargs or {}))
        self.target_normalizer = TargetNormalizer()
        self.regression = task_type == "regression"
        self.target_bounds = metric_bounds(target) if self.regression else None
        self.conformal = ConformalCalibration(self.regression)
        self.ood = OODScore(self.spec)
        self.metrics = torch.nn.ModuleDict()
        for split in ("val", "test"):
            if self.regression:
                self.metrics[f"{split}_tau"] = KendallRankCorrCoef()
                self.metrics[f"{split}_r2"] = R2Score()
                self.metrics[f"{split}_mae"] = MeanAbsoluteError()
            else:
                self.metrics[f"{split}_acc"] = MulticlassAccuracy(num_classes=num_outputs, average="micro")

    # --- normalizers ------------------------------------------------------------------------------
    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None,
                        target_normalizer: TargetNormalizer | None = None,
                        condition_normalizer: TargetNormalizer | None = None) -> None:
        """The weight normalizer, and the target's for regression (``PropertyDataModule.normalizers()``)."""
        super().set_normalizers(weight_normalizer, target_normalizer if self.regression else None)

    # --- the science ---------------------------------------------------------------------------
    def forward(self, wb: WeightBatch) -> Tensor:
        """Raw outputs: standardized predictions (regression) or logits (classification)."""
        if self.encoder.raw_weights:  # it runs the networks: weights as they are
            return self.encoder(wb)
        normed = self.weight_normalizer(wb, squash=not self.encoder.linear_normalization)
        if self.encoder.runs_networks:  # a graph with probe features: the probes run the networks as they are
            return self.encoder(normed, raw=wb)
        return self.encoder(normed)

    @torch.no_grad()
    def predict_values(self, wb: WeightBatch) -> Tensor:
        """Predictions in the target's units [B], or class probabilities [B, classes]."""
        out = self(wb)
        if self.regression:
            return self._in_range(self.target_normalizer.inverse(out.squeeze(-1)))
        return out.softmax(-1)

    def _in_range(self, values: Tensor) -> Tensor:
        """Regression values clamped to the target's range, where it has one."""
        if self.target_bounds is None:
            return values
        return values.clamp(*self.target_bounds)

    @torch.no_grad()
    def trust(self, wb: WeightBatch, level: float = 0.9) -> Trust:
        """Predictions with what says how far to trust them (``Trust``): the conformal interval or
        set at coverage ``level``, and the out-of-distribution score and p-value."""
        out = Trust(self.predict_values(wb))
        if self.conformal.calibrated and self.regression:
            low, high = self.conformal.interval(out.values, level)
            out.low, out.high = self._in_range(low), self._in_range(high)
        elif self.conformal.calibrated:
            out.sets = self.conformal.prediction_sets(out.values, level)
        if self.ood.fitted:
            out.ood_score = self.ood.score(wb)
            if self.ood.calibrated:
                out.ood_p = self.ood.p_value(out.ood_score)
        return out

    def on_fit_start(self) -> None:
        """The training runs become the out-of-distribution reference and the validation runs
        calibrate its p-values (where the data module holds them): neither depends on this model's
        weights, so once per fit."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "weights") and getattr(dm, "split_runs", None) is not None:
            self.ood.fit(dm.weights("train", limit=self.ood.max_reference))
            val = dm.weights("val", limit=self.ood.max_reference)
            if len(val):
                self.ood.calibrate(self.ood.features(val))

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(out.squeeze(-1), self.target_normalizer(y.float()), reduction="none")
        return F.cross_entropy(out, y, reduction="none")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        wb, y = batch[0], batch[1]
        out = self(wb)
        if len(batch) == 4:  # aligned MixUp: (weights, targets, lam [B], partner [B])
            lam, partner = batch[2], batch[3]
            loss = (lam * self._loss(out, y) + (1 - lam) * self._loss(out, y[partner])).mean()
        else:
            loss = self._loss(out, y).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(wb))
        return loss

    def _eval_step(self, batch, split: str) -> None:
        wb, y = batch[0], batch[1]
        out = self(wb)
        self.log(f"{split}/loss", self._loss(out, y).mean(), batch_size=len(wb), sync_dist=True)
        if self.regression:
            pred = self._in_range(self.target_normalizer.inverse(out.squeeze(-1)))
            for name in ("tau", "r2", "mae"):
                self.metrics[f"{split}_{name}"].update(pred, y.float())
        else:
            pred = out.softmax(-1)
            self.metrics[f"{split}_acc"].update(out.argmax(-1), y)
        if split == "val":  # the calibration of this epoch's weights
            self.collect("calibration", (pred.detach().cpu(), y.detach().cpu()))

    def _eval_epoch_end(self, split: str) -> None:
        names = ("tau", "r2", "mae") if self.regression else ("acc",)
        for name in names:
            m = self.metrics[f"{split}_{name}"]
            self.log(f"{split}/{name}", m.compute(), prog_bar=name in ("tau", "acc"))
            m.reset()

    def on_validation_epoch_start(self) -> None:
        for name, m in self.metrics.items():
            if name.startswith("val_"):
                m.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._calibrate(self.gathered("calibration"))
        score_metric = self.metrics["val_tau" if self.regression else "val_acc"]
        if score_metric.update_count:  # the monitored score: tau or accuracy, chosen on validation runs
            self.log_score(score_metric.compute())
        self._eval_epoch_end("val")

    def _calibrate(self, collected: list) -> None:
        """Calibrate the intervals on this validation epoch's runs (not on the sanity check's few batches)."""
        if not collected or (self._trainer is not None and self.trainer.sanity_checking):
            return
        preds, truth = zip(*collected)
        self.conformal.calibrate(torch.cat(preds), torch.cat(truth))

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self.predict_values(batch[0])
