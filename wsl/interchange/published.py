"""What the readers of the field's published zoos share: finding their files, reading their
tensors without running pickles, and the INR zoos' task record.

Each published format has its own module (``small_cnn_zoo``, ``dwsnets_inr``, ``nfn_siren``,
``model_zoos``); this one holds only what several of them need, so each reader stays the
description of its format.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from wsl.core.checkpoint import load_torch_file
from zoo.errors import InputError, MissingFileError
from zoo.signals import grid_coords

from .records import StateDictFile

# The one stored state of a published INR (fitted for a number of steps the dataset does not
# record): epoch 1, "after fitting", since epoch 0 means the initialisation in a zoo file.
FITTED_EPOCH = 1


def existing(sources: Iterable[Path]) -> list[Path]:
    """The sources as paths, each of which must exist."""
    out = []
    for s in sources:
        p = Path(s)
        if not p.exists():
            raise MissingFileError(f"{p}: not found")
        out.append(p)
    return out


def read_tensors(path: Path, expected: str, extras: tuple[str, ...] = ()) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A torch file's state_dict, read tensors-only (``load_torch_file``; a pickled module is
    refused with the reason), and the plain ``extras`` it may carry beside the tensors (e.g. a
    ``label``). Anything else that is not a tensor is refused, naming it."""
    obj = load_torch_file(path, expected)
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected {expected}, found "
                         f"{'an empty dict' if isinstance(obj, dict) else 'a ' + type(obj).__name__}")
    tensors, found_extras = {}, {}
    for k, v in obj.items():
        if isinstance(v, Tensor):
            if k in extras:
                found_extras[k] = v.item() if v.numel() == 1 else v
            else:
                tensors[str(k)] = v.detach().to(torch.float32).contiguous()
        elif k in extras:
            found_extras[k] = v
        else:
            raise InputError(f"{path}: expected {expected}, found a non-tensor entry {k!r} "
                             f"({type(v).__name__})")
    return tensors, found_extras


class PublishedFile(StateDictFile):
    """A published checkpoint read (``read_tensors``) only when the writer looks at it, so a
    resumed import skips the runs it holds unread; ``transform`` (a module-level function, so that
    worker processes can take it) maps the format's tensors onto ours."""

    def __init__(self, path: str | Path, expected: str,
                 transform: Callable[[dict[str, Tensor], Path], dict[str, Tensor]] | None = None):
        super().__init__(path)
        self.expected, self.transform = expected, transform

    def load(self) -> dict[str, Tensor]:
        if self._tensors is None:
            tensors, _ = read_tensors(self.path, self.expected)
            self._tensors = self.transform(tensors, self.path) if self.transform else tensors
            with self.path.open("rb") as fh:  # just read: hashed from the page cache
                self.sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        return self._tensors

    def __getstate__(self) -> dict:
        return {"path": self.path, "expected": self.expected, "transform": self.transform, "sha256": None,
                "_tensors": None}


def hparam_record(names: Iterable[str]) -> dict[str, None]:
    """The config's ``hparams`` of an imported zoo: the names, each value recorded per run."""
    return {n: None for n in sorted(names)}


def image_inr_task(name: str, shape: tuple[int, int], channels: int, target_range: tuple[float, float],
                   source: str, **extra: Any) -> dict[str, Any]:
    """The task record of an image-INR zoo, with the fields ``zoo.signals`` tasks record."""
    return {"name": name, "kind": "inr", "input_shape": [2], "output_dim": channels,
            "signal_shape": list(shape), "target_range": list(target_range), "num_classes": 10,
            "source": source, **extra}


def grid_signals(shape: tuple[int, int]) -> dict[str, Any]:
    """The ``/signals`` group an image-INR import can fill: our row-major grid, no values (the
    published INR datasets do not ship their images)."""
    return {"coords": grid_coords(shape)}
