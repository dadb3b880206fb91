"""Trainer setup, written once: ``wsl fit`` (LightningCLI), the demo, the benchmarks and the tests
fit every model family through these defaults, so a figure from one is a figure from the others."""
from __future__ import annotations

import datetime
from typing import Sequence

import lightning.pytorch as pl

# What every Trainer of the library starts from (LightningCLI's trainer_defaults too).
TRAINER_DEFAULTS = {"accelerator": "auto", "devices": 1, "log_every_n_steps": 10}


def make_trainer(max_epochs: int, callbacks: Sequence[pl.Callback] = (), max_minutes: float | None = None,
                 quiet: bool = True, **overrides) -> pl.Trainer:
    """A Trainer with the library's defaults; ``quiet``: no logger, progress bar, model summary or
    sanity validation (scripted runs that print their own lines)."""
    kwargs = dict(TRAINER_DEFAULTS, max_epochs=max_epochs, callbacks=list(callbacks),
                  max_time=None if max_minutes is None else datetime.timedelta(minutes=max_minutes))
    if quiet:
        kwargs.update(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)
