"""Trainer setup, written once: ``wsl fit`` (LightningCLI), the demo, the benchmarks and the tests
fit every model family through these defaults, so a figure from one is a figure from the others.

Distributed runs (``trainer.strategy: ddp``) need nothing else from a model family but this: what a
model collects over a validation epoch in Python lists is joined over the ranks with
``gather_lists`` before it is scored, so every rank scores the whole validation split.
Torchmetrics metrics synchronise themselves.

Two checkpoints are kept: the best by ``val/score`` (``best-epoch=N.ckpt``), and ``last.ckpt``,
written at the end of every training epoch. Lightning's ``save_last`` of a monitored checkpoint
writes ``last.ckpt`` only when a new best is saved, so resuming from it after a crash could
silently throw away every epoch since the best one; ``last.ckpt`` here comes from its own,
unmonitored callback, and resuming from it continues where training stopped."""
from __future__ import annotations

import datetime
from typing import Sequence

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint

# What every Trainer of the library starts from (LightningCLI's trainer_defaults too).
TRAINER_DEFAULTS = {"accelerator": "auto", "devices": 1, "log_every_n_steps": 10}
# What every model family logs for the checkpoint to keep: higher is better, on validation data only.
SCORE = "val/score"


def best_checkpoint(filename: str = "best-{epoch}", **kwargs) -> ModelCheckpoint:
    """The checkpoint with the best ``val/score`` so far (``best-epoch=N.ckpt``)."""
    return ModelCheckpoint(monitor=SCORE, mode="max", filename=filename, **kwargs)


def last_checkpoint(**kwargs) -> ModelCheckpoint:
    """``last.ckpt``: the state at the end of the latest training epoch, to resume from."""
    return ModelCheckpoint(monitor=None, save_top_k=1, filename="last", save_on_train_epoch_end=True,
                           enable_version_counter=False, **kwargs)


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


def gather_lists(values: list) -> list:
    """A per-rank list joined over all ranks in rank order (DDP); the list itself in one process.
    With the DataModules' evaluation shares (contiguous, every item once), rank order is item order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return [v for part in parts for v in part]
