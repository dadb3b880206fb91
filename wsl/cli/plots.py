"""PNG plots of zoos and predictions (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from zoo.errors import InputError  # noqa: E402


def _save(fig, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def metric_histogram(zoo, out: str | Path, metric: str | None = None) -> Path:
    """Histogram of a metric (default: test accuracy, else test loss) at the last checkpoint."""
    metric = metric or ("test_acc" if "test_acc" in zoo.metric_names else "test_loss")
    vals = zoo.metric(metric)[:, -1][zoo.done]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(vals, bins=40, color="tab:blue", alpha=0.85)
    ax.set_xlabel(f"{metric} at epoch {zoo.checkpoint_epochs[-1]}")
    ax.set_ylabel("models")
    ax.set_title(f"{zoo.name}: {len(vals)} models")
    return _save(fig, out)


def prediction_scatter(results: dict[str, tuple[np.ndarray, np.ndarray, str]], target: str, out: str | Path) -> Path:
    """Predicted vs true, one panel per predictor: name -> (true, predicted, caption)."""
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.6), squeeze=False)
    for ax, (name, (y, p, caption)) in zip(axes[0], results.items()):
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
        ax.scatter(y, p, s=6, alpha=0.5)
        ax.set_xlabel(f"true {target}")
        ax.set_ylabel(f"predicted {target}")
        ax.set_title(f"{name}\n{caption}", fontsize=10)
    return _save(fig, out)


def score_vs_time(panels: dict[str, dict[str, tuple[float, float, float, float]]], out: str | Path,
                  score: str = "test accuracy") -> Path:
    """A score against training time, one panel per zoo: panel -> {predictor: (time mean, time std,
    score mean, score std)}; error bars are the std over seeds. Time on a log axis: encoders differ
    by orders of magnitude."""
    names = sorted({n for rows in panels.values() for n in rows})
    colors = {n: plt.cm.tab10(k % 10) for k, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels.items()):
        for name, (t, t_std, s, s_std) in rows.items():
            ax.errorbar([t], [s], xerr=[t_std], yerr=[s_std], fmt="o", color=colors[name], capsize=3, label=name)
            ax.annotate(name, (t, s), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(score)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def learning_curves(panels: dict[str, dict[str, list[list[tuple[float, int, float]]]]], out: str | Path,
                    score: str = "validation accuracy") -> Path:
    """Validation score against training time, one panel per zoo: panel -> {predictor: one curve of
    (seconds, epoch, score) points per seed}. Seeds share their predictor's colour."""
    names = sorted({n for rows in panels.values() for n in rows})
    colors = {n: plt.cm.tab10(k % 10) for k, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels.items()):
        for name, curves in rows.items():
            for k, points in enumerate(curves):
                if points:
                    t, _, s = zip(*points)
                    ax.plot(t, s, color=colors[name], alpha=0.8, lw=1.2, label=name if k == 0 else None)
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(score)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


def phase_diagram(grid, x: str, y: str, label: str, title: str, out: str | Path, color_scale: str = "auto") -> Path:
    """A heat map of a phase grid (``wsl.landscape.phase.PhaseGrid``): one cell per pair of values of
    ``x`` and ``y``, coloured by its value and printed with it, blank where the cell is NaN. A
    log-spaced axis is drawn on a log scale, an evenly spaced one linearly, any other with one equal
    cell per value; ticks are the grid's values. Colours follow ``color_scale`` (``color_norm``)."""
    from matplotlib.ticker import NullLocator

    from wsl.landscape.phase import value_label

    fig, ax = plt.subplots(figsize=(1.1 * len(grid.x_values) + 3.2, 0.8 * len(grid.y_values) + 2.0))
    (xe, xc, xs), (ye, yc, ys) = _cells(grid.x_values), _cells(grid.y_values)
    values = np.ma.masked_invalid(grid.values)
    norm = color_norm(grid.values, color_scale)
    mesh = ax.pcolormesh(xe, ye, values, cmap="viridis", norm=norm, edgecolors="white", linewidth=0.5)
    for i, cy in enumerate(yc):
        for j, cx in enumerate(xc):
            v = grid.values[i, j]
            if np.isfinite(v):
                r, g, b, _ = mesh.cmap(mesh.norm(v))
                ax.text(cx, cy, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    for axis, set_scale, scale, centres, vals, name in ((ax.xaxis, ax.set_xscale, xs, xc, grid.x_values, x),
                                                        (ax.yaxis, ax.set_yscale, ys, yc, grid.y_values, y)):
        if scale == "log":
            set_scale("log")
        axis.set_ticks(centres, [value_label(v) for v in vals])
        axis.set_minor_locator(NullLocator())
        axis.set_label_text(name + (" (log scale)" if scale == "log" else ""))
    fig.colorbar(mesh, ax=ax, label=label + (" (log scale)" if isinstance(norm, LogNorm) else ""))
    ax.set_title(title, fontsize=10)
    return _save(fig, out)


def color_norm(values: np.ndarray, scale: str = "auto") -> Normalize:
    """How a heat map's values map to colours: ``linear``; ``log`` (positive values only); or
    ``auto``, log where every value is positive and they span two orders of magnitude or more (a
    Hessian trace across a learning-rate grid), else linear."""
    finite = values[np.isfinite(values)]
    if scale not in ("auto", "linear", "log"):
        raise InputError(f"--color-scale must be auto, linear or log, found {scale!r}")
    positive = finite.size > 0 and finite.min() > 0
    if scale == "log" and not positive:
        raise InputError("--color-scale log: the values must all be positive; found "
                         f"{finite.min() if finite.size else 'none'} at least")
    if scale == "log" or (scale == "auto" and positive and finite.max() >= 100 * finite.min()):
        return LogNorm(vmin=finite.min(), vmax=finite.max())
    return Normalize(vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None)


def _cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Cell edges [n + 1] and centres [n] of one axis of a phase diagram, and its scale."""
    from wsl.landscape.phase import axis_scale

    scale = axis_scale(values)
    if scale == "category":
        centres = np.arange(len(values), dtype=np.float64)
        return np.arange(len(values) + 1) - 0.5, centres, scale
    v = values.astype(np.float64)
    t = np.log(v) if scale == "log" else v
    mid = (t[1:] + t[:-1]) / 2
    edges = np.concatenate([[2 * t[0] - mid[0]], mid, [2 * t[-1] - mid[-1]]])
    return (np.exp(edges) if scale == "log" else edges), v, scale


def generator_scale_plot(curves: dict[str, dict], title: str, out: str | Path) -> Path:
    """Quality against weight novelty, one colour per training-set size (the data-scale study of
    ``scripts/benchmark_generate.py``). ``curves``: label -> {"noise": [(novelty, quality), ...]
    (training networks plus noise, a line), "generated": [(novelty, quality), ...] (one star per
    seed), "reference_nn": the training networks' own median nearest-neighbour distance (a dotted
    line)}."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (label, c) in zip(colors, curves.items()):
        if c["noise"]:
            x, y = zip(*sorted(c["noise"]))
            ax.plot(x, y, "--o", color=color, ms=3, lw=1, alpha=0.7, label=f"{label}: training nets + noise")
        if c["generated"]:
            x, y = zip(*c["generated"])
            ax.scatter(x, y, marker="*", s=140, color=color, edgecolor="k", zorder=3, label=f"{label}: generated")
        if c.get("reference_nn") is not None:
            ax.axvline(c["reference_nn"], color=color, ls=":", lw=1, label=f"{label}: their own nearest neighbour")
    ax.set_xscale("log")
    ax.set_xlabel("weight novelty: aligned L2 distance to the nearest training network")
    ax.set_ylabel("test accuracy (mean)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, out)
