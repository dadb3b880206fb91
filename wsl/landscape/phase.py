"""Phase diagrams of a zoo: a quantity per run reduced over the seeds of each cell of a grid of two
hyperparameters, after "A Model Zoo on Phase Transitions" (Schürholt et al. 2025), which grids a
load-like axis (data fraction, width) against a temperature-like one (learning rate, batch size).

A cell is the set of runs that share one value of each axis; its value is the mean (or median, or
standard deviation, numpy's with ddof 0) of the quantity over its done runs that have one, and its
count is how many such runs there are. A cell without any is NaN, count 0. The quantity is any
numeric column of the file (``Zoo.column``: a metric at a checkpoint position, a hyperparameter, an
annotation of ``wsl zoo annotate``) or a gap derived from two stored metrics (``DERIVED``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from zoo.errors import InputError, UnknownNameError
from zoo.store import Zoo

REDUCTIONS = {"mean": np.mean, "median": np.median, "std": np.std}
# name -> (minuend, subtrahend): generalisation gaps from stored metrics, as wsl.landscape.similarity
# defines them (loss: test - train; accuracy: train - test)
DERIVED = {"loss_gap": ("test_loss", "train_loss"), "acc_gap": ("train_acc", "test_acc")}
MAX_AXIS_VALUES = 50  # more distinct values than this is a sampled hyperparameter, not a grid


class PhaseGrid(NamedTuple):
    x_values: np.ndarray  # [X] the distinct values of the x hyperparameter, sorted
    y_values: np.ndarray  # [Y] those of the y hyperparameter
    values: np.ndarray    # [Y, X] float64: the reduction over each cell's runs, NaN for an empty cell
    counts: np.ndarray    # [Y, X] int64: the done runs with a value in each cell


def phase_grid(zoo: Zoo, x: str, y: str, metric: str, checkpoint: int = -1, reduce: str = "mean") -> PhaseGrid:
    """The cell values of ``metric`` over the grid of hyperparameters ``x`` and ``y`` (``checkpoint``
    is a position among the stored epochs, for metrics)."""
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce: expected one of {list(REDUCTIONS)}, found {reduce!r}")
    if x == y:
        raise InputError(f"the two axes are both {x!r}; expected two different hyperparameters")
    xs, x_values = _axis(zoo, x, "x")
    ys, y_values = _axis(zoo, y, "y")
    vals = metric_column(zoo, metric, checkpoint)
    keep = zoo.done & np.isfinite(vals)
    values = np.full((len(y_values), len(x_values)), np.nan)
    counts = np.zeros((len(y_values), len(x_values)), dtype=np.int64)
    for i, yv in enumerate(y_values):
        for j, xv in enumerate(x_values):
            cell = vals[keep & (ys == yv) & (xs == xv)]
            counts[i, j] = len(cell)
            if len(cell):
                values[i, j] = REDUCTIONS[reduce](cell.astype(np.float64))
    return PhaseGrid(x_values, y_values, values, counts)


def _axis(zoo: Zoo, name: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """A hyperparameter's [M] values and its distinct values, refused unless it has a few."""
    gridded = [h for h in zoo.hparam_names if 2 <= len(np.unique(zoo.hparam(h))) <= MAX_AXIS_VALUES]
    expected = (f"--{which} {name!r}: expected a hyperparameter of 2 to {MAX_AXIS_VALUES} values "
                f"(this zoo's: {', '.join(gridded) or 'none'})")
    if name not in zoo.hparam_names:
        raise UnknownNameError(f"{expected}, found no hyperparameter of that name")
    col = zoo.hparam(name)
    distinct = np.unique(col)
    if not 2 <= len(distinct) <= MAX_AXIS_VALUES:
        raise InputError(f"{expected}, found {len(distinct)} value{'s' if len(distinct) > 1 else ''}")
    return col, distinct


def metric_column(zoo: Zoo, name: str, checkpoint: int = -1) -> np.ndarray:
    """[M] float values of a stored numeric column or a ``DERIVED`` gap, at a checkpoint position."""
    if name in DERIVED and name not in _stored(zoo):
        a, b = DERIVED[name]
        if a not in zoo.metric_names or b not in zoo.metric_names:
            raise UnknownNameError(f"--metric {name!r}: needs the metrics {a!r} and {b!r}; stored metrics: "
                                   f"{zoo.metric_names}")
        return zoo.column(a, checkpoint).astype(np.float64) - zoo.column(b, checkpoint)
    if name not in _stored(zoo):
        derived = [d for d, (a, b) in DERIVED.items() if a in zoo.metric_names and b in zoo.metric_names]
        raise UnknownNameError(f"--metric {name!r}: expected a metric {zoo.metric_names}, an annotation "
                               f"{zoo.annotation_names or '(none: see wsl zoo annotate)'}, a hyperparameter or "
                               f"one of {derived}, found no column of that name")
    col = zoo.column(name, checkpoint)
    if col.dtype.kind not in "fiub":
        raise InputError(f"--metric {name!r}: expected a numeric column, found text such as {col[0]!r}")
    return col.astype(np.float64)


def _stored(zoo: Zoo) -> set[str]:
    return {*zoo.metric_names, *zoo.hparam_names, *zoo.signal_names, *zoo.annotation_names}


def axis_scale(values: np.ndarray) -> str:
    """How an axis is drawn: ``log`` for positive values evenly spaced in log (or two values a
    decade or more apart), ``linear`` for numbers evenly spaced, ``category`` otherwise (one equal
    cell per value)."""
    if values.dtype.kind not in "fiu" or len(values) < 2:
        return "category"
    v = values.astype(np.float64)
    if len(v) == 2:
        return "log" if v[0] > 0 and v[1] / v[0] >= 10 else "linear"
    if v[0] > 0 and _even(np.diff(np.log(v))):
        return "log"
    return "linear" if _even(np.diff(v)) else "category"


def _even(steps: np.ndarray, tol: float = 0.06) -> bool:
    return bool(np.all(np.abs(steps - steps.mean()) <= tol * abs(steps.mean())))


def value_label(v) -> str:
    """An axis value as printed on ticks and in tables."""
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def format_table(grid: PhaseGrid, x: str, y: str) -> str:
    """The cell values as text, one row per y value, highest first (as drawn), each cell followed
    by its count of runs in parentheses; an empty cell is ``-``."""
    corner = f"{y} \\ {x}"
    rows = [value_label(v) for v in grid.y_values]
    first = max(len(corner), *map(len, rows))
    cells = [["-" if np.isnan(v) else f"{v:.4g}" for v in row] for row in grid.values]
    width = max(8, *(len(value_label(v)) for v in grid.x_values), *(len(c) for row in cells for c in row)) + 6
    lines = [corner.rjust(first) + "".join(value_label(v).rjust(width) for v in grid.x_values)]
    for i in reversed(range(len(rows))):
        row = "".join(f"{c} ({n})".rjust(width) for c, n in zip(cells[i], grid.counts[i]))
        lines.append(rows[i].rjust(first) + row)
    return "\n".join(lines)


def describe(zoo: Zoo, metric: str, checkpoint: int = -1, reduce: str = "mean") -> str:
    """What a phase diagram's cells hold, for its colour bar: the quantity, the epoch it was read
    at, and the reduction over the seeds."""
    if metric in zoo.annotation_names:
        epoch = zoo.annotation_info(metric).get("checkpoint_epoch")
        what = f"{metric} (annotation at epoch {epoch})"
    elif metric in zoo.metric_names or metric in DERIVED and metric not in _stored(zoo):
        what = f"{metric} at epoch {zoo.checkpoint_epochs[zoo.checkpoint_position(checkpoint)]}"
    else:
        what = metric
    return f"{what}, {reduce} over seeds"
