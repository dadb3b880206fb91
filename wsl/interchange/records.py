"""What a reader of foreign checkpoints hands to the zoo writer: runs, their checkpoints and properties.

A reader knows its format (file layout, parameter names, kernel layout, where metrics live); the
writer knows the zoo file. Between them, a run is a list of checkpoints, each a mapping of the
format's own parameter names to tensors already in PyTorch layout (``[out, in, *kernel]`` weights,
``[out]`` biases), plus per-checkpoint metrics and per-run hyperparameters and signal fields.
Names are matched onto the weight space by ``wsl.weights.matching`` in the writer, never here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from torch import Tensor

from zoo.weight_space import WeightSpaceSpec


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


@dataclass
class ImportSource:
    """What a format's reader opens: the runs (streamed) and what the zoo file records about them.

    ``spec`` is None where the weight space must be inferred from the first checkpoint's structure
    (a folder of anyone's checkpoints); ``config`` is the zoo config to store (task, architecture,
    hyperparameter names), as complete as the format knows it; ``files`` are every source file,
    hashed for the provenance. ``signals`` (INR zoos) is the ``/signals`` group without values per
    model: ``{"coords": [P, d]}``, plus ``"values"`` only where the format ships the signals."""

    format: str
    runs: Iterable[ImportedRun]
    spec: WeightSpaceSpec | None = None
    config: dict[str, Any] = field(default_factory=dict)
    count: int | None = None  # runs, for the progress bar, where known before reading them
    files: list[Path] = field(default_factory=list)
    signals: dict[str, Any] | None = None
