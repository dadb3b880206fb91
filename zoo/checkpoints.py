"""What a population trainer keeps of its models: weights and metrics at the checkpoint epochs,
and which models diverged when. Shared by ``zoo.train`` (classifiers, regressors) and
``zoo.inr`` (INRs), so that both fill a zoo file's arrays by the same rules:

* a model whose loss or weights turn NaN/inf is diverged from that epoch on: it stops training,
  its weights are zeroed (so it computes no NaN/inf that could reach the other models), and its
  later checkpoints and metrics stay NaN;
* a model that never diverged is done.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .store import STATUS_DIVERGED, STATUS_DONE


@dataclass
class PopulationResult:
    params: list[np.ndarray]  # per parameter, [M, C, *shape] float32 (NaN after divergence)
    metrics: dict[str, np.ndarray]  # name -> [M, C] float32
    status: np.ndarray  # [M] uint8: STATUS_DONE or STATUS_DIVERGED
    diverged_epoch: np.ndarray  # [M] int32, -1 if never

    @staticmethod
    def concatenate(parts: list["PopulationResult"]) -> "PopulationResult":
        """The results of several populations, one after the other."""
        return PopulationResult([np.concatenate(a) for a in zip(*(r.params for r in parts))],
                                {k: np.concatenate([r.metrics[k] for r in parts]) for k in parts[0].metrics},
                                np.concatenate([r.status for r in parts]),
                                np.concatenate([r.diverged_epoch for r in parts]))

    def rows_in_order(self, order: list[int]) -> "PopulationResult":
        """The result of a population trained in row order ``order``, back in the caller's order."""
        inv = np.argsort(order)
        return PopulationResult([a[inv] for a in self.params], {k: v[inv] for k, v in self.metrics.items()},
                                self.status[inv], self.diverged_epoch[inv])


class CheckpointRecorder:
    """Checkpoints and divergence of a population whose parameters ``params`` ([M, *shape] each)
    the optimizer updates in place. ``alive`` [M] (on the parameters' device) says which models
    still train; it is updated in place, so a training loop may keep a reference to it."""

    def __init__(self, params: list[Tensor], checkpoints: list[int], metric_names: list[str]):
        M, C = params[0].shape[0], len(checkpoints)
        self.params = params
        self.checkpoints = list(checkpoints)
        self.ck_params = [np.full((M, C, *p.shape[1:]), np.nan, dtype=np.float32) for p in params]
        self.ck_metrics = {n: np.full((M, C), np.nan, dtype=np.float32) for n in metric_names}
        self.alive = torch.ones(M, dtype=torch.bool, device=params[0].device)
        self.diverged_epoch = np.full(M, -1, dtype=np.int32)

    def mark_diverged(self, bad: Tensor, epoch: int) -> bool:
        """Stop the models of mask ``bad`` [M] that are still alive, diverged at ``epoch``, and
        zero their weights; True if there were any."""
        bad = bad & self.alive
        if not bool(bad.any()):
            return False
        idx = bad.nonzero().flatten()
        self.diverged_epoch[idx.cpu().numpy()] = epoch
        self.alive[idx] = False
        with torch.no_grad():
            for p in self.params:
                p[idx] = 0.0
        return True

    def record(self, epoch: int, metrics: dict[str, Tensor]) -> None:
        """Keep the live models' current weights and their ``metrics`` ([M] each) as checkpoint ``epoch``."""
        c = self.checkpoints.index(epoch)
        keep = self.alive.cpu().numpy()
        for k, p in enumerate(self.params):
            self.ck_params[k][keep, c] = p.detach()[self.alive].cpu().numpy()
        for name, v in metrics.items():
            self.ck_metrics[name][keep, c] = v[self.alive].cpu().numpy()

    def result(self) -> PopulationResult:
        status = np.where(self.diverged_epoch >= 0, STATUS_DIVERGED, STATUS_DONE).astype(np.uint8)
        return PopulationResult(self.ck_params, self.ck_metrics, status, self.diverged_epoch)
