"""The memorization report's files: ``report.json`` (every number), ``report.md`` (the table of
methods), ``accuracy_vs_novelty.png`` and, for a conditional generator, ``conditional.png``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The methods (rows of the report) that the plot singles out: all others are baselines.
GENERATOR, REFERENCE = "generator", "reference (nearest other reference)"


def plain(x: Any) -> Any:
    """JSON-ready: numpy to Python, non-finite floats to None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def markdown_table(report: dict[str, Any]) -> str:
    """method | n | metric mean / median | weight novelty median | behavioural novelty median."""
    metric = report["metric"]
    lines = [f"| method | n | {metric} mean | {metric} median | weight novelty median | behavioural novelty median |",
             "|---|---|---|---|---|---|"]
    for name, s in report["methods"].items():
        lines.append(f"| {name} | {s['n']} | {_fmt(s['quality'], 'mean')} | {_fmt(s['quality'], 'median')} | "
                     f"{_fmt(s['weight_novelty'], 'median')} | {_fmt(s['behavioural_novelty'], 'median')} |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    wn = report["weight_novelty_method"]
    out = [f"# Memorization report: {report['generated']}", "",
           f"Reference: {report['reference']} — {report['n_reference']} networks "
           f"({report['reference_selection']['runs']}, epoch {report['reference_selection']['checkpoint_epoch']}); "
           f"task {report['task']}, activation {report['activation']}.", "",
           markdown_table(report), "",
           f"Weight novelty: {wn['distance']}, after {wn['alignment']}. {wn['pruning']}.",
           f"Behavioural novelty: {report['behavioural_novelty_method'] or 'not defined for regression tasks'}."]
    check = report.get("reference_metric_check")
    if check and check["agrees"] is False:
        out.append(f"**Warning**: the reference networks' recomputed {report['metric']} differs from the stored one by "
                   f"up to {check['max_abs_difference']:.3g}: the task was not rebuilt as it was trained on.")
    cal = report.get("noise_calibration")
    if cal:
        out.append(f"Noise matched to the generator's median weight novelty ({cal['target']:.4g}): sigma "
                   f"{cal['sigma']:.4g} (median {cal['median_weight_novelty']:.4g}"
                   + ("" if cal["converged"] else f", not converged: {cal.get('note', 'iteration limit')}") + ").")
    if report.get("conditional"):
        out += ["", "## Conditional generation: requested vs achieved", "",
                "| condition | n | Pearson | Spearman | mean abs. error | exactly met |", "|---|---|---|---|---|---|"]
        for metric, c in report["conditional"].items():
            out.append(f"| {metric} | {c['n']} | {_fmt(c, 'pearson')} | {_fmt(c, 'spearman')} | {_fmt(c, 'mae')} | "
                       f"{_fmt(c, 'exact')} |")
    return "\n".join(out) + "\n"


def plot_accuracy_vs_novelty(per_network: dict[str, dict[str, np.ndarray]], metric: str, out: Path,
                             behavioural: str | None = "max IoU of wrong sets with a reference network",
                             higher_is_better: bool = True) -> Path:
    """Per network (small points) and per method (its medians, large markers), the metric against
    weight novelty and behavioural novelty (``behavioural``: what it measures, lower = more novel;
    None: no such panel): the generator beside every baseline and the references' own
    nearest-neighbour distances. Weight novelty on a symmetric-log axis: copies sit at 0 and
    memorization shows at small distances. Each axis says which way is more novel (or better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("weight_novelty", "weight novelty: L2 distance to the nearest reference network after alignment\n"
                                 "(right = more novel)")]
    if behavioural:
        panels.append(("behavioural_novelty", f"behavioural novelty: {behavioural}\n(lower, left = more novel)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    colors = {name: "black" if name == GENERATOR else "gray" if name == REFERENCE else plt.cm.tab20(k % 20)
              for k, name in enumerate(per_network)}
    for ax, (key, label) in zip(axes[0], panels):
        for name, s in per_network.items():
            main = name in (GENERATOR, REFERENCE)
            ax.scatter(s[key], s["metric"], s=10 if main else 5, alpha=0.6 if main else 0.3, color=colors[name],
                       marker="*" if name == GENERATOR else "o", zorder=3 if main else 1, linewidths=0)
            x, y = s[key][np.isfinite(s[key])], s["metric"][np.isfinite(s["metric"])]
            if len(x) and len(y):
                ax.scatter([np.median(x)], [np.median(y)], s=160 if name == GENERATOR else 70, color=colors[name],
                           marker="*" if name == GENERATOR else "o", edgecolors="black", zorder=4, label=name)
        if key == "weight_novelty":
            ref = per_network.get(REFERENCE, {}).get(key)
            scale = np.nanmedian(ref) if ref is not None and np.isfinite(ref).any() else 1.0
            ax.set_xscale("symlog", linthresh=max(1e-6, 0.01 * scale))
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} ({'higher' if higher_is_better else 'lower'} = better)")
    axes[0][-1].legend(fontsize=7, loc="best", title="medians", title_fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_conditional(conditional: dict[str, dict[str, Any]], out: Path) -> Path:
    """Requested against achieved value, one panel per conditioned metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(conditional), figsize=(5 * len(conditional), 4.6), squeeze=False)
    for ax, (metric, c) in zip(axes[0], conditional.items()):
        r, a = np.asarray(c["requested"], float), np.asarray(c["achieved"], float)
        keep = np.isfinite(r) & np.isfinite(a)
        if keep.any():
            lo, hi = float(min(r[keep].min(), a[keep].min())), float(max(r[keep].max(), a[keep].max()))
            ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
        ax.scatter(r[keep], a[keep], s=8, alpha=0.6)
        ax.set_xlabel(f"requested {metric}")
        ax.set_ylabel(f"achieved {metric}")
        exact = c.get("exact")
        ax.set_title(f"Pearson {c['pearson']:.3f}, Spearman {c['spearman']:.3f}, MAE {c['mae']:.3g}"
                     + (f", exactly met {exact:.3f}" if exact is not None and np.isfinite(exact) else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_report(report: dict[str, Any], per_network: dict[str, dict[str, np.ndarray]],
                 conditional: dict[str, dict[str, Any]], out_dir: Path, behavioural: str | None,
                 started: float) -> dict[str, Any]:
    """Write the report's files into ``out_dir`` and name them in the report; return it JSON-ready.
    ``behavioural``: as in ``plot_accuracy_vs_novelty``; ``started``: the ``time.perf_counter()``
    the run began at, for its total seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "markdown": out_dir / "report.md",
             "plot": out_dir / "accuracy_vs_novelty.png"}
    plot_accuracy_vs_novelty(per_network, report["metric"], files["plot"], behavioural, report["higher_is_better"])
    if conditional:
        files["conditional_plot"] = plot_conditional(conditional, out_dir / "conditional.png")
    report["files"] = {k: str(v) for k, v in files.items()}
    report["seconds"]["total"] = round(time.perf_counter() - started, 3)
    files["markdown"].write_text(markdown_report(report))
    files["json"].write_text(json.dumps(plain(report), indent=1, sort_keys=False))
    return plain(report)
