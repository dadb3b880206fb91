"""Merging runs of a zoo: read the chosen runs at one checkpoint, merge them by a named method,
choosing what the method leaves open (λ, the greedy soup's ingredients) on the task's validation
examples only, rebuilt from the zoo's config (``wsl.data.task.source_task``). Test data is never
used to choose. ``wsl merge`` writes the result as a zoo file marked as merged.

In a task zoo (the hyperparameter ``task_variant``, ``zoo.tasks.VARIANTS``) each run has its own
task: a merge is scored by the mean over the merged runs' variants of the score on each variant's
validation examples, and its stored metrics are on the examples of the runs' variants pooled (each
variant's examples once; the provenance lists every run's variant).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from wsl.data.task import source_task
from wsl.merging.soups import Score, aligned_average, greedy_soup, uniform_soup
from wsl.merging.task_vectors import (DARE_MERGES, best_by_score, check_options, dare, model_breadcrumbs,
                                      task_arithmetic, ties_merging)
from wsl.weights import WeightBatch
from zoo.errors import InputError
from zoo.signals import SignalSet
from zoo.store import SPLITS, STATUS_DONE, STATUS_NAMES, Zoo
from zoo.tasks import TaskData, variant_view
from zoo.train import evaluate

METHODS = ("soup", "greedy-soup", "task-arithmetic", "ties", "dare", "breadcrumbs", "aligned-average")
TASK_VECTOR_METHODS = ("task-arithmetic", "ties", "dare", "breadcrumbs")
#: The splits whose examples may score choices; test examples never do.
SCORE_SPLITS = ("val", "train")
#: The λ grids tried when none is given: a sum of task vectors wants λ below 1, a mean of them about 1.
SUM_LAMBDAS = tuple(round(0.05 * k, 2) for k in range(1, 21))
MEAN_LAMBDAS = tuple(round(0.1 * k, 1) for k in range(5, 21))


@dataclass
class RunsMerge:
    """A merged network and what is needed to write and judge it."""
    wb: WeightBatch  # one network
    config: dict[str, Any]  # the source zoo's config (its task is rebuilt from it)
    task: TaskData
    checkpoint_epoch: int
    provenance: dict[str, Any]
    hparams: dict[str, list] = field(default_factory=dict)


def check_score_split(split: str) -> None:
    """Raise unless ``split`` may score choices (``SCORE_SPLITS``: never test)."""
    if split not in SCORE_SPLITS:
        raise InputError(f"--score-on: choices are scored on {' or '.join(SCORE_SPLITS)} examples, found {split!r}"
                         + (" (choosing on test data would bias the merge's test metric)" if split == "test" else ""))


def validation_score(task: TaskData, split: str = "val") -> Score:
    """Scores networks on a split's examples by the population forward: accuracy for
    classification, minus the mean squared error for regression. ``split`` "test" is refused."""
    check_score_split(split)
    x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")

    def score(wb: WeightBatch) -> torch.Tensor:
        res = evaluate(wb.spec, [t.float() for t in wb.params()], task, x, y, activation=wb.activation)
        return res["acc"] if task.kind == "classification" else -res["loss"]
    return score


def mean_score(tasks: Sequence[TaskData], split: str = "val") -> Score:
    """The mean over ``tasks`` of ``validation_score`` on each: one score for networks that serve
    several tasks (a merge of runs of different task variants)."""
    scores = [validation_score(t, split) for t in tasks]
    if len(scores) == 1:
        return scores[0]
    return lambda wb: torch.stack([s(wb) for s in scores]).mean(0)


def pooled_task(views: Sequence[TaskData]) -> TaskData:
    """The examples of several views of one task (``zoo.tasks.variant_view``) in one task: each
    split the views' examples one after the other, so a metric on it pools the variants' examples."""
    if len(views) == 1:
        return views[0]
    pooled = {f"{p}_{s}": torch.cat([getattr(v, f"{p}_{s}") for v in views]) for p in ("x", "y") for s in SPLITS}
    info = dict(views[0].info, variant=[v.info.get("variant", "full") for v in views],
                sizes={s: int(pooled[f"y_{s}"].shape[0]) for s in SPLITS})
    return dataclasses.replace(views[0], info=info, **pooled)


def _rows_of(z: Zoo, runs: Sequence[int], what: str) -> np.ndarray:
    ids = {int(r): k for k, r in enumerate(z.index)}
    rows = []
    for r in runs:
        if int(r) not in ids:
            raise InputError(f"{what}: run {r} is not in {z.path} (runs {int(z.index.min())}..{int(z.index.max())})")
        row = ids[int(r)]
        if z.status[row] != STATUS_DONE:
            raise InputError(f"{what}: run {r} of {z.path} is {STATUS_NAMES[int(z.status[row])]}, not done")
        rows.append(row)
    return np.asarray(rows)


def read_networks(z: Zoo, rows: np.ndarray, checkpoint: int) -> WeightBatch:
    """Runs ``rows`` of ``z`` at checkpoint position ``checkpoint``, with their activations."""
    wb = WeightBatch.from_params(z.spec, z.batch(rows, checkpoint))
    if z.spec.activation is None:
        wb.activation = [str(a) for a in z.hparam("activation")[rows]]
    return wb


def _pretrained(z: Zoo, pretrained: str, rows: np.ndarray, checkpoint: int) -> tuple[WeightBatch, Any]:
    """The pretrained network: a run at the merge's checkpoint, or "init": the runs' shared initialisation."""
    if pretrained == "init":
        if 0 not in z.checkpoint_epochs:
            raise InputError(f"--pretrained init: {z.path} keeps no initialisation (checkpoint epochs {z.checkpoint_epochs})")
        inits = read_networks(z, rows, z.epoch_position(0)).flatten()
        if not bool((inits == inits[:1]).all()):
            raise InputError(f"--pretrained init: the runs of {z.path} do not share their initialisation (init seeds "
                             f"{z.config.get('init', {}).get('seeds', 'independent')}); give --pretrained RUN")
        return read_networks(z, rows[:1], z.epoch_position(0)), "init"
    try:
        run = int(pretrained)
    except ValueError:
        raise InputError(f"--pretrained: expected a run id or 'init', found {pretrained!r}") from None
    return read_networks(z, _rows_of(z, [run], "--pretrained"), checkpoint), run


def default_lambdas(method: str, dare_merge: str = "task-arithmetic") -> tuple[float, ...]:
    """The λ grid of a task-vector method: ``MEAN_LAMBDAS`` where the task vectors are averaged
    (TIES, DARE then TIES), ``SUM_LAMBDAS`` where they are summed."""
    return MEAN_LAMBDAS if method == "ties" or (method == "dare" and dare_merge == "ties") else SUM_LAMBDAS


def _task_vector_candidates(method: str, pre: WeightBatch, wb: WeightBatch, grid: list[float], *, top_k: float,
                            p: float, dare_merge: str, beta: float, gamma: float,
                            seed: int) -> tuple[WeightBatch, dict[str, Any]]:
    """One merged network per λ of ``grid``, and the options of ``method`` as the provenance records them."""
    if method == "task-arithmetic":
        return task_arithmetic(pre, wb, grid), {}
    if method == "ties":
        return ties_merging(pre, wb, top_k, grid), {"top_k": top_k}
    if method == "breadcrumbs":
        return model_breadcrumbs(pre, wb, beta, gamma, grid), {"beta": beta, "gamma": gamma}
    options = {"p": p, "dare_merge": dare_merge} | ({"top_k": top_k} if dare_merge == "ties" else {})
    return dare(pre, wb, p, seed, dare_merge, top_k, grid), options


def merge_runs(path: str | Path, method: str, runs: Sequence[int], *, checkpoint: int = -1,
               pretrained: str | None = None, lam: float | None = None, lambdas: Sequence[float] | None = None,
               top_k: float = 0.2, p: float = 0.5, dare_merge: str = "task-arithmetic", beta: float = 0.01,
               gamma: float = 0.85, seed: int = 0, score_on: str = "val", data_dir: str | None = None,
               log=lambda s: None) -> RunsMerge:
    """Merge runs ``runs`` (run ids) of the zoo at ``path`` at checkpoint position ``checkpoint``
    by ``method`` (one of ``METHODS``). Task-vector methods need ``pretrained`` (a run id, or
    "init") and take ``lam`` or choose among ``lambdas`` (default ``SUM_LAMBDAS``, TIES
    ``MEAN_LAMBDAS``) by their ``score_on`` score, as greedy soup orders and picks its ingredients."""
    if method not in METHODS:
        raise InputError(f"--method: expected one of {list(METHODS)}, found {method!r}")
    runs = [int(r) for r in runs]
    if len(runs) < 2:
        raise InputError(f"--runs: a merge needs at least 2 runs, found {len(runs)}")
    if len(set(runs)) != len(runs):
        raise InputError(f"--runs: each run once, found {runs}")
    vectors = method in TASK_VECTOR_METHODS
    if vectors and pretrained is None:
        raise InputError(f"--method {method} merges task vectors: give --pretrained RUN (or init)")
    if not vectors and (pretrained is not None or lam is not None or lambdas is not None):
        raise InputError(f"--method {method}: --pretrained, --lambda and --lambdas apply to task-vector methods "
                         f"{list(TASK_VECTOR_METHODS)} only")
    if lam is not None and lambdas is not None:
        raise InputError("give --lambda or --lambdas, not both")
    if dare_merge not in DARE_MERGES:
        raise InputError(f"--dare-merge: expected one of {list(DARE_MERGES)}, found {dare_merge!r}")
    check_options(top_k, p, beta, gamma)
    check_score_split(score_on)
    with Zoo(path) as z:
        if z.is_inr:
            raise InputError(f"{path}: an INR zoo (each network fits its own signal); merging needs a task whose "
                             f"examples every network shares")
        rows = _rows_of(z, runs, "--runs")
        c = z.checkpoint_position(checkpoint)
        epoch = z.checkpoint_epochs[c]
        wb = read_networks(z, rows, c)
        if wb.activation is not None and len(set(wb.activation)) > 1:
            raise InputError(f"--runs: runs of different activations cannot be merged: "
                             f"{dict(zip(runs, wb.activation))}")
        pre, pre_id = _pretrained(z, pretrained, rows, c) if vectors else (None, None)
        if vectors and pre_id in runs:
            raise InputError(f"--pretrained: run {pre_id} is also one of the merged --runs")
        if pre is not None and wb.activation is not None and pre.activation != wb.activation[:1]:
            raise InputError(f"--pretrained: run {pre_id} has activation {pre.activation[0]}, the runs "
                             f"{wb.activation[0]}")
        config, source = z.config, {"source_zoo": str(z.path), "source_config_hash": z.config_hash}
        variants = [str(v) for v in z.hparam("task_variant")[rows]] if "task_variant" in z.hparam_names else None
    task = source_task(config, data_dir)
    if isinstance(task, SignalSet):
        raise InputError(f"{path}: task {task.name!r} is an INR task; merging needs a task with shared examples")
    views = [variant_view(task, v) for v in dict.fromkeys(variants or ["full"])]
    score = mean_score(views, score_on)
    metric = f"{score_on}_acc" if task.kind == "classification" else f"-{score_on}_loss"
    provenance: dict[str, Any] = {"method": method, "runs": runs, "checkpoint_epoch": epoch, **source,
                                  "score_on": score_on, "metric": metric, "seed": int(seed)}
    if variants is not None:
        provenance["task_variants"] = variants
        if len(views) > 1:
            provenance["metric"] = f"mean of {metric} over the runs' task variants"
        task = pooled_task(views)
    log(f"merging runs {runs} of {path} at epoch {epoch} by {method}")
    if method == "soup":
        merged = uniform_soup(wb)
    elif method == "greedy-soup":
        merged, ingredients = greedy_soup(wb, score)
        provenance["ingredients"] = [runs[i] for i in ingredients]
    elif method == "aligned-average":
        merged = aligned_average(wb, seed=seed)
    else:
        grid = [lam] if lam is not None else list(lambdas or default_lambdas(method, dare_merge))
        candidates, options = _task_vector_candidates(method, pre, wb, grid, top_k=top_k, p=p, dare_merge=dare_merge,
                                                      beta=beta, gamma=gamma, seed=seed)
        best, scores = best_by_score(candidates, score) if len(grid) > 1 else (0, None)
        merged = candidates[best]
        provenance |= {"pretrained": pre_id, "lambda": float(grid[best]), "lambdas": [float(v) for v in grid],
                       **options}
        if scores is not None:
            provenance["lambda_scores"] = [float(v) for v in scores]
    hparams = {"activation": merged.activation[:1]} if merged.activation is not None else {}
    if variants is not None and len(views) == 1:
        hparams["task_variant"] = variants[:1]
    return RunsMerge(merged, config, task, epoch, provenance, hparams)
