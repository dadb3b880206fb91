"""How unlike a predictor's training zoo a network is: a distance in weight-statistics space and a
conformal p-value against the validation runs.

- **Features**: per-layer weight statistics (``wsl.weights.statistics``: mean, variance and
  quantiles of every parameter tensor). They do not depend on the encoder and show what a training
  recipe leaves in the weights (initialisation scale, weight decay, optimizer, training length);
  variances on a log scale, then every feature standardized with the training checkpoints' mean
  and standard deviation.
- **Score**: the mean Euclidean distance to the ``k`` nearest training checkpoints (a
  nearest-neighbour novelty score, as in Sun et al. 2022, "Out-of-Distribution Detection with Deep
  Nearest Neighbors"), against at most ``max_reference`` of them (a seeded subset; a predictor
  takes its reference from that many of its data module's training checkpoints).
- **p-value**: with the same score for the n validation checkpoints, an input's p-value is
  (1 + #{validation scores ≥ its score}) / (n + 1), a conformal p-value (Bates et al. 2023,
  "Testing for outliers with conformal p-values"): for a network drawn like the validation runs,
  P(p ≤ α) ≤ α, so flagging p < α raises a false alarm on at most a fraction α of in-distribution
  networks.

Everything is kept as tensors and travels in the predictor's checkpoint (``get_extra_state``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wsl.core.module import ExtraState

from wsl.weights import WeightBatch
from wsl.weights.statistics import STATISTICS, weight_statistics
from zoo.errors import InputError
from zoo.weight_space import WeightSpaceSpec


class OODScore(ExtraState):
    """Nearest-neighbour distance to the training checkpoints in weight-statistics space, and its
    conformal p-value against the validation checkpoints (see the module docstring)."""

    def __init__(self, spec: WeightSpaceSpec, k: int = 10, max_reference: int = 4096, chunk: int = 4096):
        super().__init__()
        self.spec, self.k, self.max_reference, self.chunk = spec, k, max_reference, chunk
        self.mean: Tensor | None = None  # [F] the training features' mean and std
        self.std: Tensor | None = None
        self.reference: Tensor | None = None  # [R, F] standardized features of training checkpoints
        self.calibration: Tensor | None = None  # [n] sorted scores of the validation checkpoints

    @property
    def fitted(self) -> bool:
        return self.reference is not None

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def features(self, wb: WeightBatch) -> Tensor:
        """[B, F] per-layer weight statistics, variances as log10."""
        out = []
        for s in range(0, len(wb), self.chunk):
            part = {name: t.detach().float().cpu() for name, t in wb[s:s + self.chunk].to_dict().items()}
            stats = weight_statistics(self.spec, part)
            var = STATISTICS.index("var")
            stats[:, var::len(STATISTICS)] = stats[:, var::len(STATISTICS)].clamp_min(1e-12).log10()
            out.append(stats)
        return torch.cat(out) if out else torch.zeros(0, len(STATISTICS) * len(self.spec.params))

    def fit(self, train: WeightBatch, seed: int = 0) -> None:
        """Take the training checkpoints as the reference."""
        feats = self.features(train)
        if len(feats) < 2:
            raise InputError(f"out-of-distribution reference: needs at least 2 training checkpoints, found {len(feats)}")
        self.mean, self.std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        if len(feats) > self.max_reference:
            keep = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))[:self.max_reference]
            feats = feats[keep.sort().values]
        self.reference = (feats - self.mean) / self.std
        self.calibration = None  # scores against another reference no longer apply

    def scores_of_features(self, feats: Tensor) -> Tensor:
        """[B] mean distance to the k nearest reference checkpoints, from ``features``' output."""
        if not self.fitted:
            raise InputError("the predictor carries no out-of-distribution reference (its checkpoint predates it, or "
                             "it was trained without a data module holding its training weights)")
        z = (feats.float() - self.mean) / self.std
        k = min(self.k, len(self.reference))
        out = [torch.cdist(z[s:s + self.chunk], self.reference).topk(k, dim=1, largest=False).values.mean(1)
               for s in range(0, len(z), self.chunk)]
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, wb: WeightBatch) -> Tensor:
        """[B] how unlike the training checkpoints each network is (higher: less like them)."""
        return self.scores_of_features(self.features(wb))

    def calibrate(self, val_features: Tensor) -> None:
        """Keep the validation checkpoints' scores (from their ``features``)."""
        self.calibration = self.scores_of_features(val_features).sort().values

    def p_value(self, scores: Tensor) -> Tensor:
        """[B] conformal p-values of scores against the validation checkpoints' (small: unusual)."""
        if not self.calibrated:
            raise InputError("the predictor's out-of-distribution score is not calibrated on validation runs")
        n = len(self.calibration)
        at_least = n - torch.searchsorted(self.calibration, scores.float(), right=False)
        return (1.0 + at_least.float()) / (n + 1.0)

    # --- in the checkpoint: tensors only -------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        if not self.fitted:
            return {}
        state = {"mean": self.mean, "std": self.std, "reference": self.reference, "k": self.k}
        if self.calibrated:
            state["calibration"] = self.calibration
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std, self.reference = state.get("mean"), state.get("std"), state.get("reference")
        self.calibration = state.get("calibration")
        self.k = int(state.get("k", self.k))
