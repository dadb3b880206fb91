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
from typing import Any, Iterable, Iterator, Mapping

from torch import Tensor

from zoo.weight_space import WeightSpaceSpec


class StateDictFile(Mapping):
    """A checkpoint's tensors, read from its file only when first looked at: a reader can list a
    million runs without reading one, and the writer skips the runs a resumed import already holds,
    or hands the reading to its workers. ``sha256`` is the file's digest once it has been read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.sha256: str | None = None
        self._tensors: dict[str, Tensor] | None = None

    @property
    def ordered(self) -> bool:
        """False where the file stores its tensors sorted by name (safetensors), not in module order."""
        from wsl.core.checkpoint import keeps_module_order

        return keeps_module_order(self.path)

    def load(self) -> dict[str, Tensor]:
        if self._tensors is None:
            import hashlib

            from wsl.core.checkpoint import hf_weights, load_state_dict_file

            weights = self.path if self.path.suffix else hf_weights(self.path) or self.path
            if weights.suffix == ".safetensors" and weights.is_file():  # read once: hashed and decoded
                data = weights.read_bytes()
                self.sha256 = hashlib.sha256(data).hexdigest()
                self._tensors = load_state_dict_file(weights, data)
            else:
                self._tensors = load_state_dict_file(self.path)
                with open(weights, "rb") as fh:  # just read: hashed from the page cache
                    self.sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        return self._tensors

    def __getstate__(self) -> dict:  # to a worker process: the path, not tensors already read
        return {"path": self.path, "sha256": None, "_tensors": None}

    def __getitem__(self, key: str) -> Tensor:
        return self.load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())

    def __repr__(self) -> str:
        return f"StateDictFile({str(self.path)!r})"


@dataclass
class ImportedCheckpoint:
    """One stored state of a run."""

    epoch: int
    tensors: Mapping[str, Tensor]  # the format's own names -> tensors in PyTorch layout (or a StateDictFile)
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
    index: int | None = None  # the run's model index where the format keeps one (a zoo's export)
    status: str | None = None  # "done" / "diverged" / "pending" where the format records it (zoo.store.STATUS_NAMES)
    diverged_epoch: int | None = None  # where recorded; else the first checkpoint holding NaN/inf
    annotations: dict[str, float] = field(default_factory=dict)  # per-run annotations (a zoo's export)


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
    # What a zoo's export records and an import must give back unchanged (None: the writer decides).
    name: str | None = None
    task: dict[str, Any] | None = None
    config_hash: str | None = None
    checkpoint_epochs: list[int] | None = None
    metric_names: list[str] | None = None
    generated: dict[str, Any] | None = None
    annotation_info: dict[str, dict] | None = None  # per-run annotation name -> its info (zoo.store)
    pairs: dict[str, list] | None = None  # /annotations/pairs columns (run ids are the runs' index)
    pairs_info: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the reader's options, for the provenance
