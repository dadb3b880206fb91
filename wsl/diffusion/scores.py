"""Scoring a set of networks against the reference networks, the same for the generator's and for
every baseline: quality (the task's test metric; for INRs the PSNR to the nearest test signal),
weight novelty and behavioural novelty per network, and their summaries; and how well a
conditional generator's networks meet what was requested of them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from wsl.diffusion.networks import evaluate_networks, finite_networks, inr_metrics, nearest_signal, render, wrong_sets
from wsl.diffusion.novelty import (DEFAULT_ANCHORS, DEFAULT_CANDIDATES, behavioural_novelty, reference_index,
                                   weight_novelty)
from wsl.weights import WeightBatch
from zoo.inr import psnr
from zoo.signals import SignalSet


def quality_metric(task) -> str:
    """The metric that says how good a network is: test accuracy, test loss for regression, or for
    INRs the PSNR to the nearest test signal."""
    if isinstance(task, SignalSet):
        return "test_psnr"
    return "test_acc" if task.kind == "classification" else "test_loss"


def behaviour_method(task) -> str | None:
    """What behavioural novelty measures on this task (None: not defined, regression)."""
    if isinstance(task, SignalSet):
        return ("max over reference INRs of the PSNR (dB) between their renderings on the task's coordinates "
                "(high = draws what a reference draws; lower = more novel)")
    if task.kind == "classification":
        return ("max over reference networks of the IoU of the sets of test examples each gets wrong (1 = errs "
                "exactly like a reference; lower = more novel)")
    return None


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """Summary statistics of the finite values, and how many were not finite."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(len(v)), "n_nonfinite": int(len(v) - len(fin))}
    if len(fin):
        q = np.quantile(fin, [0.05, 0.25, 0.5, 0.75, 0.95])
        out |= {"mean": float(fin.mean()), "std": float(fin.std()), "min": float(fin.min()), "q05": float(q[0]),
                "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
                "max": float(fin.max())}
    return out


def conditional_agreement(requested: Sequence[float], achieved: Sequence[float]) -> dict[str, Any]:
    """How well achieved values follow the requested ones: Pearson and Spearman correlation, mean
    absolute error (pairs with a non-finite value are left out; a constant side gives NaN)."""
    r, a = np.asarray(requested, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(a)
    r, a = r[keep], a[keep]
    categorical = len(r) > 0 and bool((r == np.round(r)).all())  # class labels: how often they are met

    def pearson(x, y) -> float:
        if len(x) < 2 or x.std() == 0 or y.std() == 0:
            return float("nan")
        return float(((x - x.mean()) * (y - y.mean())).mean() / (x.std() * y.std()))

    return {"n": int(len(r)), "n_left_out": int((~keep).sum()), "pearson": pearson(r, a),
            "spearman": pearson(rankdata(r), rankdata(a)),
            "mae": float(np.abs(r - a).mean()) if len(r) else float("nan"),
            "exact": float((r == a).mean()) if categorical else float("nan")}


class Scorer:
    """Scores sets of networks against one reference set, all run with one ``activation``; the
    references' wrong sets are computed once."""

    def __init__(self, reference: WeightBatch, task, activation: str, *, candidates: int = DEFAULT_CANDIDATES,
                 anchors: int = DEFAULT_ANCHORS, seed: int = 0):
        self.reference, self.task, self.activation = reference, task, activation
        self.candidates, self.seed = candidates, seed
        self.index = reference_index(reference, anchors, seed)
        self.metric = quality_metric(task)
        self.inr = isinstance(task, SignalSet)
        self.classification = not self.inr and task.kind == "classification"
        self.reference_wrong = (wrong_sets(reference.spec, reference, task, "test", activation)
                                if self.classification else None)
        self.reference_outputs = render(reference.spec, reference, task.coords, activation) if self.inr else None

    def novelty_median(self, wb: WeightBatch) -> float:
        d = weight_novelty(wb, self.reference, candidates=self.candidates, seed=self.seed, index=self.index)["distance"]
        return float(np.nanmedian(d)) if np.isfinite(d).any() else float("nan")

    def score(self, wb: WeightBatch, exclude: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Per network: ``metric``, ``weight_novelty`` (and ``_unaligned``, ``_pruning``),
        ``nearest`` (reference position), ``behavioural_novelty`` (NaN for regression); for INRs
        also ``signal``, the task index of the nearest test signal."""
        act = self.activation
        spec = self.reference.spec
        if self.inr:
            outputs = render(spec, wb, self.task.coords, act)
            near = inr_metrics(spec, wb, self.task, act, ("test",), outputs)
            out = {"metric": near["test_psnr"], "signal": near["test_signal"]}
        else:
            out = {"metric": evaluate_networks(spec, wb, self.task, act, splits=("test",))[self.metric]}
        wn = weight_novelty(wb, self.reference, candidates=self.candidates, exclude=exclude, seed=self.seed,
                            index=self.index)
        out |= {"weight_novelty": wn["distance"], "weight_novelty_unaligned": wn["distance_unaligned"],
                "weight_novelty_pruning": wn["distance_pruning"], "nearest": wn["nearest"]}
        if self.classification:
            bn = behavioural_novelty(wrong_sets(spec, wb, self.task, "test", act), self.reference_wrong, exclude)
            bn[~finite_networks(wb)] = np.nan
        elif self.inr:
            _, mse = nearest_signal(outputs, self.reference_outputs, exclude=exclude)
            bn = psnr(torch.as_tensor(mse), self.task.peak).numpy()
        else:
            bn = np.full(len(wb), np.nan)
        out["behavioural_novelty"] = bn
        return out


def summarize(scores: dict[str, np.ndarray], **extra) -> dict[str, Any]:
    """A method's row of the report: how many networks, ``extra`` (how they were made), and the
    distribution of each score."""
    return {"n": int(len(scores["metric"])), **extra, "quality": distribution(scores["metric"]),
            "weight_novelty": distribution(scores["weight_novelty"]),
            "weight_novelty_unaligned": distribution(scores["weight_novelty_unaligned"]),
            "behavioural_novelty": distribution(scores["behavioural_novelty"])}
