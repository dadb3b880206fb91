"""``wsl zoo render``: what the networks of an INR zoo have learned, drawn next to their signals.

An INR's weights are only meaningful through its output, so the check that a zoo is right is to
decode them: run stored weights on the zoo's coordinates (``zoo.functional.population_forward``)
and put the result beside the signal it was fitted to, with its PSNR. Images become image pairs;
1-D signals (sine waves) become curves, the decoded one drawn on a grid 8x denser than the
samples, so that a fit that oscillates between its samples shows.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from zoo.functional import population_forward
from zoo.inr import psnr
from zoo.store import Zoo
from zoo.errors import InputError


def decode(zoo: Zoo, rows, checkpoint: int = -1, coords: torch.Tensor | None = None) -> torch.Tensor:
    """Outputs [k, P, d_out] of the INRs at file ``rows`` on ``coords`` (default: the zoo's own)."""
    rows = np.asarray(rows, dtype=np.int64)
    x = zoo.signal_coords() if coords is None else coords
    batch = zoo.batch(rows, checkpoint)
    params = [batch[p.name] for p in zoo.spec.params]
    # a per-model activation: each network runs with its own
    acts = None if zoo.spec.activation is not None else zoo.hparam("activation")[rows].tolist()
    with torch.no_grad():
        return population_forward(zoo.spec, params, x, activation=acts)


def choose_rows(zoo: Zoo, n: int, split: str, seed: int) -> np.ndarray:
    """Up to ``n`` finished models of ``split`` ("all" for any), a seeded random sample in file order."""
    if not zoo.is_inr:
        raise InputError(f"{zoo.path}: not an INR zoo (no /signals): render decodes INR weights into their "
                         f"signals; for other zoos see 'wsl zoo info --plot'")
    if n < 1:
        raise InputError(f"--n: expected at least 1 model, found {n}")
    rows = zoo.select() if split == "all" else zoo.select(split=split)
    if not len(rows):
        splits = sorted(set(zoo.signal("split").tolist()))
        raise InputError(f"{zoo.path}: no finished models in split {split!r} (splits: {splits}, or 'all')")
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    return rows


def _caption(zoo: Zoo, row: int) -> str:
    """What identifies a signal: the image's class, or a sine's frequency."""
    if "label" in zoo.signal_names:
        return f"label {zoo.signal('label')[row]}"
    if "frequency" in zoo.signal_names:
        return f"f={zoo.signal('frequency')[row]:.2f}"
    return f"signal {zoo.signal('signal')[row]}"


def render_inr(zoo: Zoo, out: str | Path, *, n: int = 16, split: str = "test", checkpoint: int = -1,
               seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Draw decoded INRs beside their signals into a PNG; return (path, rows drawn, their PSNR in dB)."""
    from wsl.cli.plots import plt, _save  # matplotlib with the Agg backend

    rows = choose_rows(zoo, n, split, seed)
    c = zoo.checkpoint_position(checkpoint)
    lo, hi = (float(v) for v in zoo.task["target_range"])
    shape = tuple(zoo.task["signal_shape"])
    decoded = decode(zoo, rows, c)
    original = zoo.signal_values(rows)
    db = psnr(((decoded - original) ** 2).mean((1, 2)), hi - lo).numpy()
    epoch = zoo.checkpoint_epochs[c]
    k = len(rows)

    if len(shape) == 1:
        coords = zoo.signal_coords()
        dense = torch.linspace(float(coords.min()), float(coords.max()), 8 * len(coords))[:, None]
        curves = decode(zoo, rows, c, dense)
        cols = min(4, k)
        nrows = math.ceil(k / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(max(3.6 * cols, 6.0), 2.4 * nrows + 0.3), squeeze=False)
        for j, ax in enumerate(axes.flat):
            if j >= k:
                ax.axis("off")
                continue
            ax.plot(coords[:, 0], original[j, :, 0], "o", ms=2.5, color="black", label="signal")
            ax.plot(dense[:, 0], curves[j, :, 0], color="tab:red", lw=1, label="decoded")
            ax.set_ylim(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo))
            ax.set_title(f"model {zoo.index[rows[j]]}, {_caption(zoo, rows[j])}, {db[j]:.1f} dB", fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.legend(fontsize=6, loc="upper right")
    else:
        pairs = min(4, k)  # pairs per figure row: original | decoded
        nrows = math.ceil(k / pairs)
        fig, axes = plt.subplots(nrows, 2 * pairs, figsize=(max(4.0 * pairs, 6.0), 2.5 * nrows + 0.3), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for j in range(k):
            ax_o, ax_d = axes[j // pairs, 2 * (j % pairs)], axes[j // pairs, 2 * (j % pairs) + 1]
            for ax, v, title in ((ax_o, original[j], f"model {zoo.index[rows[j]]}, {_caption(zoo, rows[j])}"),
                                 (ax_d, decoded[j], f"decoded, {db[j]:.1f} dB")):
                img = v.reshape(*shape, v.shape[-1]).numpy()
                if img.shape[-1] == 1:
                    ax.imshow(img[..., 0], cmap="gray", vmin=lo, vmax=hi)
                else:  # colour: scaled to [0, 1] for imshow
                    ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1))
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"{zoo.name}: {k} {split} INR{'s' if k > 1 else ''} at epoch {epoch}, "
                 f"mean PSNR {np.mean(db):.1f} dB", fontsize=10)
    return _save(fig, out), rows, db
