"""What a reader of foreign checkpoints hands to the zoo writer: runs, their checkpoints and properties.

A reader knows its format (file layout, parameter names, kernel layout, where metrics live); the
writer knows the zoo file. Between them, a run is a list of checkpoints, each a mapping of the
format's own parameter names to tensors already in PyTorch layout (``[out, in, *kernel]`` weights,
``[out]`` biases), plus per-checkpoint metrics and per-run hyperparameters and signal fields.
Names are matched onto the weight space by ``wsl.weights.matching`` in the writer, never here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class ImportedCheckpoint:
    """One stored state of a run."""

    epoch: int
    tensors: dict[str, Tensor]  # the format's own parameter names -> tensors in PyTorch layout
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. test_acc, train_loss at this epoch
    source: str = ""  # the file (or file and row) it was read from, for errors and provenance


@dataclass
class ImportedRun:
    """One trained network: its checkpoints in epoch order and what was recorded about it."""

    run: str  # the format's own name of the run (a file or folder name, a trial id, a row group)
    checkpoints: list[ImportedCheckpoint]
    hparams: dict[str, Any] = field(default_factory=dict)  # per-run values (numbers or strings)
    signals: dict[str, Any] = field(default_factory=dict)  # INR zoos: e.g. {"label": 3}
    split: str | None = None  # "train" / "val" / "test" where the format records one
    seed: int | None = None
    activation: str | None = None  # where the format records it per run
    source: str = ""  # its file or folder
