"""Linear-mode-connectivity annotations of a zoo: partner runs, each pair's barriers, per-run means.

Partners. Among the done runs, a run's partners are the runs whose hyperparameters are all equal
to its own and whose seed differs (a grid zoo's repeats of one grid point): ``kind``
"same_hparams". A run that has none is paired with runs drawn at random among the done runs of
its activation (interpolating networks of different activations means nothing): ``kind``
"random". Each run takes at most ``pairs`` partners, drawn from a generator seeded with
``(seed, run id)``, so a run's choice depends only on its candidates. A pair is unordered and kept
once (``run_a`` the smaller run id; its ``run_b`` is the one weight matched onto it).

Barriers. For every pair, ``wsl.landscape.connectivity.linear_mode_connectivity`` at ``points``
values of α on the task's first ``examples`` training examples: the loss barrier (and the accuracy
barrier, for classification) raw and after weight matching, all pairs batched. A run's per-run
annotation ``lmc_<measure>`` is the mean over every pair it belongs to (NaN: in none).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from wsl.weights import WeightBatch
from zoo.errors import InputError

from .connectivity import linear_mode_connectivity

SAME, RANDOM = "same_hparams", "random"


def choose_partners(index: np.ndarray, seeds: np.ndarray, hparams: dict[str, np.ndarray],
                    activation: list[str] | None, pairs: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pairs among the runs given (positions into ``index``; see the module docstring): ``a`` [N],
    ``b`` [N] positions with ``index[a] < index[b]``, and each pair's kind."""
    if pairs < 1:
        raise InputError(f"--pairs: expected at least 1 partner per run, found {pairs}")
    n = len(index)
    keys = [tuple(repr(hparams[h][i].item() if hasattr(hparams[h][i], "item") else hparams[h][i])
                  for h in sorted(hparams)) for i in range(n)]
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    acts = activation if activation is not None else [""] * n
    by_act: dict[str, list[int]] = {}
    for i, a in enumerate(acts):
        by_act.setdefault(a, []).append(i)
    distinct_seeds = {k: len({int(seeds[j]) for j in g}) == len(g) for k, g in groups.items()}
    chosen: dict[tuple[int, int], str] = {}
    for i in range(n):
        group = groups[keys[i]]
        if not distinct_seeds[keys[i]]:  # runs of one seed are no repeats of each other
            group = [j for j in group if j == i or seeds[j] != seeds[i]]
        candidates, kind = (group, SAME) if len(group) > 1 else (by_act[acts[i]], RANDOM)
        rng = np.random.default_rng([int(seed), int(index[i])])
        # candidates hold i: draw one more than needed and drop it (no O(n) list per run)
        drawn = [candidates[int(t)] for t in rng.choice(len(candidates), size=min(pairs + 1, len(candidates)),
                                                        replace=False)]
        for j in [j for j in drawn if j != i][:pairs]:
            chosen.setdefault((i, j) if index[i] < index[j] else (j, i), kind)
    ordered = sorted(chosen, key=lambda p: (index[p[0]], index[p[1]]))
    a = np.array([p[0] for p in ordered], dtype=np.int64)
    b = np.array([p[1] for p in ordered], dtype=np.int64)
    return a, b, [chosen[p] for p in ordered]


def pair_barriers(weights: WeightBatch, a: np.ndarray, b: np.ndarray, x: torch.Tensor, y: torch.Tensor, kind: str,
                  points: int = 11, seed: int = 0, chunk: int = 1000,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, np.ndarray]:
    """``loss_barrier``, ``loss_barrier_matched`` (and ``acc_barrier``, ``acc_barrier_matched`` for
    classification) [N] of the pairs ``(weights[a[n]], weights[b[n]])``, in chunks of ``chunk`` pairs."""
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(a), chunk):
        sa, sb = torch.from_numpy(a[s:s + chunk]), torch.from_numpy(b[s:s + chunk])
        res = linear_mode_connectivity(_take(weights, sa), _take(weights, sb), x, y, kind, points=points, seed=seed)
        for side, suffix in (("raw", ""), ("matched", "_matched")):
            for m in ("loss_barrier", "acc_barrier"):
                if m in res[side]:
                    out.setdefault(m + suffix, []).append(res[side][m].float().numpy())
        log(f"lmc: {min(s + chunk, len(a))}/{len(a)} pairs")
    return {k: np.concatenate(v) for k, v in out.items()}


def _take(wb: WeightBatch, rows: torch.Tensor) -> WeightBatch:
    out = WeightBatch.from_params(wb.spec, [p[rows] for p in wb.params()])
    if wb.activation is not None:
        out.activation = [wb.activation[int(r)] for r in rows]
    return out


def per_run_means(M: int, rows: np.ndarray, a: np.ndarray, b: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[M] float32: for file row ``rows[i]``, the mean of ``values`` over the pairs holding position i;
    NaN for rows in none."""
    total, count = np.zeros(len(rows)), np.zeros(len(rows))
    v = values.astype(np.float64)
    np.add.at(total, a, v)
    np.add.at(total, b, v)
    np.add.at(count, a, 1)
    np.add.at(count, b, 1)
    full = np.full(M, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        full[rows] = (total / count).astype(np.float32)
    return full
