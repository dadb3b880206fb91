"""Split conformal prediction: intervals and prediction sets with a coverage guarantee, calibrated
on a predictor's validation runs.

Split conformal prediction (Vovk, Gammerman & Shafer 2005; Lei et al. 2018; Angelopoulos & Bates
2023 for an introduction): from n calibration items the predictor was not fitted on, with
nonconformity scores s_1..s_n, a new item's set at level 1 - α is built with q̂, the
⌈(n + 1)(1 - α)⌉-th smallest score. If the new item is exchangeable with the calibration items,
it lies in its set with probability at least 1 - α (and, without ties, at most 1 - α + 1/(n + 1)).
Where ⌈(n + 1)(1 - α)⌉ > n the set is everything (an interval over the target's whole range).

- **Regression**: score |y - ŷ|, interval ŷ ± q̂. One q̂ for every input would make the interval
  of an untrained network (accuracy at chance, predicted tightly) as wide as that of a trained one,
  so the scores are grouped by the predicted value: Mondrian conformal prediction (Vovk et al.
  2005, ch. 4.5), whose guarantee holds within each group because the grouping depends on the input
  only. The groups are bins of ŷ at its calibration quantiles, each with at least ``min_per_bin``
  items (``max_bins`` at most).
- **Classification**: score 1 - p̂(y), set {c : 1 - p̂(c) ≤ q̂} (Sadinle, Lei & Wasserman 2019):
  the smallest sets on average among those with marginal coverage.

The calibration keeps its scores whole, not one q̂, so that any level can be asked for at
prediction time; they travel in the predictor's checkpoint as tensors (``get_extra_state``).
Validation runs are also what the kept checkpoint is chosen by; the score that chooses it is
Kendall τ or accuracy, not the residuals, and the measured coverage on held-out test runs
(docs/benchmarks.md) says how little that costs.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from wsl.core.module import ExtraState
from zoo.errors import InputError


def conformal_quantile(scores: Tensor, level: float) -> float:
    """q̂: the ⌈(n + 1) level⌉-th smallest of ``scores`` (inf where that exceeds n)."""
    n = scores.numel()
    k = math.ceil((n + 1) * level - 1e-9)  # the tolerance keeps (n + 1) * 0.9 = 9.000000000000002 at 9
    if n == 0 or k > n:
        return math.inf
    return float(scores.sort().values[max(k, 1) - 1])


def check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise InputError(f"coverage level must lie strictly between 0 and 1 (e.g. 0.9), found {level}")
    return float(level)


class ConformalCalibration(ExtraState):
    """Calibration scores of a predictor, and the intervals or sets they give (see the module docstring)."""

    def __init__(self, regression: bool, min_per_bin: int = 200, max_bins: int = 8):
        super().__init__()
        self.regression = regression
        self.min_per_bin, self.max_bins = min_per_bin, max_bins
        self.scores: Tensor | None = None  # [n] nonconformity scores of the calibration items
        self.bins: Tensor | None = None  # [n] regression: each item's bin of predicted value
        self.edges: Tensor | None = None  # [bins - 1] regression: inner bin edges of predicted value

    @property
    def calibrated(self) -> bool:
        return self.scores is not None

    @property
    def size(self) -> int:
        return 0 if self.scores is None else self.scores.numel()

    def calibrate(self, predicted: Tensor, truth: Tensor) -> None:
        """Keep the scores of calibration items: ``predicted`` values [n] and true values [n]
        (regression), or class probabilities [n, C] and true class indices [n]."""
        predicted = predicted.detach().float().cpu()
        truth = truth.detach().cpu()
        if len(predicted) != len(truth):
            raise InputError(f"calibration: {len(predicted)} predictions but {len(truth)} true values")
        if self.regression:
            self.scores = (truth.float() - predicted).abs()
            n_bins = max(1, min(self.max_bins, len(predicted) // self.min_per_bin))
            inner = torch.quantile(predicted, torch.arange(1, n_bins) / n_bins) if n_bins > 1 else torch.zeros(0)
            self.edges = torch.unique(inner)  # ties (e.g. many values clamped at a bound) merge bins
            self.bins = torch.bucketize(predicted, self.edges)
        else:
            self.scores = 1.0 - predicted.gather(1, truth.long().view(-1, 1)).squeeze(1)

    def interval(self, predicted: Tensor, level: float) -> tuple[Tensor, Tensor]:
        """[B] lower and upper ends of the intervals ŷ ± q̂ (q̂ of ŷ's bin) at coverage ``level``."""
        self._check_ready(True)
        level = check_level(level)
        predicted = predicted.detach().float().cpu()
        q_bin = torch.tensor([conformal_quantile(self.scores[self.bins == b], level)
                              for b in range(len(self.edges) + 1)])
        half = q_bin[torch.bucketize(predicted, self.edges)]
        return predicted - half, predicted + half

    def prediction_sets(self, probs: Tensor, level: float) -> Tensor:
        """[B, C] bool: the classes in each input's set at coverage ``level``."""
        self._check_ready(False)
        q = conformal_quantile(self.scores, check_level(level))
        return (1.0 - probs.detach().float().cpu()) <= q

    def _check_ready(self, regression: bool) -> None:
        if regression != self.regression:
            raise InputError(f"this calibration is for {'regression' if self.regression else 'classification'}")
        if not self.calibrated:
            raise InputError("the predictor carries no conformal calibration (it was not validated on "
                             "held-out runs, or its checkpoint predates calibration): retrain it with wsl fit")

    # --- in the checkpoint: tensors only -------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        if not self.calibrated:
            return {}
        state = {"scores": self.scores}
        if self.regression:
            state |= {"bins": self.bins, "edges": self.edges}
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.scores = state.get("scores")
        self.bins, self.edges = state.get("bins"), state.get("edges")
