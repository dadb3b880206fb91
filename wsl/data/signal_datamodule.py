"""``SignalDataModule``: an INR zoo served per signal, for models that map signals to networks
(INR hypernetworks: an image in, its SIREN out).

A batch is ``(WeightBatch, values [B, P, d_out], labels [B])``:

- the fitted network's raw weights (the distillation target; not normalized here, because a
  hypernetwork emits raw weights and normalizes both sides with ``weight_normalizer``),
- the signal it fits, sampled on the zoo's coordinate grid (``Zoo.signal_coords``): the image
  a hypernetwork is conditioned on, and the target of its functional (reconstruction) loss,
- the signal's class (the ``label`` field), ``-1`` in zoos whose signals have no class (sines).

Runs, splits (``recorded`` by default: the zoo's fixed split of the signals), the normalizer fitted
on training runs only and the split saved in checkpoints all come from ``WeightDataModule``: this
module only adds the per-item signal and label. Its ``conditions`` are not stored properties, as
``WeightDataModule``'s are, but what a hypernetwork is conditioned on: ``image`` or ``class``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsl.data.datamodule import WeightDataModule
from zoo.signals import grid_coords
from zoo.store import Zoo
from zoo.errors import InputError, MissingFileError

SIGNAL_CONDITIONS = ("image", "class")


def read_signal_info(path: str | Path) -> dict[str, Any]:
    """What a model needs to know of an INR zoo's signals: their grid shape, value width, value
    range (the PSNR's peak) and number of classes. Raises a clear error for a zoo that is not an
    INR zoo or whose coordinates are not the regular grid of its signal shape."""
    with Zoo(path) as z:
        if not z.is_inr:
            raise InputError(f"{path}: expected an INR zoo (one network fitted per signal, with /signals), found "
                             f"a {z.spec.architecture} zoo on task {z.task.get('name')!r} without signals; "
                             f"generate one with e.g. `wsl zoo generate configs/zoo/digits_inr.yaml`")
        task = z.task
        missing = [k for k in ("signal_shape", "target_range", "output_dim") if k not in task]
        if missing:
            raise InputError(f"{path}: the stored task lacks {missing} (found keys {sorted(task)}); "
                             f"was it written by another version of wsl?")
        shape = [int(s) for s in task["signal_shape"]]
        coords = z.signal_coords()
        expected = grid_coords(tuple(shape))
        if tuple(coords.shape) != tuple(expected.shape) or not torch.allclose(coords, expected, atol=1e-6):
            raise InputError(f"{path}: /signals/coords [{', '.join(map(str, coords.shape))}] are not the regular "
                             f"grid of signal_shape {shape} ([{', '.join(map(str, expected.shape))}]); "
                             f"SignalDataModule serves signals on that grid")
        num_classes = None
        if "label" in z.signal_names:
            labels = z.signal("label")
            num_classes = int(task.get("num_classes", int(labels.max()) + 1))
    lo, hi = (float(v) for v in task["target_range"])
    return {"task": task.get("name"), "shape": shape, "in_dim": int(coords.shape[1]),
            "out_dim": int(task["output_dim"]), "target_range": [lo, hi], "num_classes": num_classes}


class SignalDataModule(WeightDataModule):
    """Batches ``(WeightBatch raw, signal values [B, P, d_out], labels [B])`` of one INR zoo, split by run.

    Args:
        zoo: an INR zoo file (``configs/zoo/digits_inr.yaml`` makes one in seconds).
        checkpoint: which fitted network to serve: ``last`` or a stored epoch.
        conditions: what a model is conditioned on, linked to it: ``["image"]`` (the signal's values)
            or ``["class"]`` (its ``label`` field).
        split: ``recorded`` (the zoo's fixed split of its signals) or fractions (train, val, test),
            drawn by signal (all INRs of a signal on one side).
        split_seed, batch_size, max_models, num_workers, select, align: as ``WeightDataModule``'s
            (``align``: permute every network's hidden neurons onto one training network, which
            makes weight distillation's targets less arbitrary).
    """

    def __init__(self, zoo: str, checkpoint: str | int = "last", conditions: list[str] | None = None,
                 split: str | list[float] = "recorded", split_seed: int = 0, batch_size: int = 64,
                 max_models: int | None = None, num_workers: int = 0, select: dict | None = None,
                 align: bool = False):
        zoo = str(zoo)
        conditions = ["image"] if conditions is None else list(conditions)
        if len(conditions) != 1 or conditions[0] not in SIGNAL_CONDITIONS:
            raise InputError(f"conditions must be one of {[[c] for c in SIGNAL_CONDITIONS]}, found {conditions!r}")
        if not (checkpoint == "last" or (isinstance(checkpoint, int) and not isinstance(checkpoint, bool))):
            raise InputError(f"checkpoint must be 'last' or a stored epoch (an integer), found {checkpoint!r}")
        if not Path(zoo).exists():
            raise MissingFileError(f"{zoo}: not found (expected an INR zoo file, e.g. zoos/digits_inr.h5)")
        info = read_signal_info(zoo)
        if conditions == ["class"] and info["num_classes"] is None:
            with Zoo(zoo) as z:
                fields = z.signal_names
            raise InputError(f"{zoo}: condition 'class' needs the signal field 'label'; this zoo's signals have "
                             f"fields {fields} (task {info['task']!r}); condition on ['image'] instead")
        super().__init__([zoo], checkpoints="last" if checkpoint == "last" else [int(checkpoint)], split=split,
                         split_seed=split_seed, batch_size=batch_size, max_models=max_models,
                         num_workers=num_workers, conditions=None, normalize=False, select=select, align=align)
        self.zoo, self.checkpoint = zoo, checkpoint
        self.signal_info = info
        self.conditions: list[str] = conditions  # not stored properties: what the model is conditioned on
        self.signal_shape: tuple[int, ...] = tuple(info["shape"])
        self.coords: Tensor = grid_coords(self.signal_shape)
        self.peak: float = info["target_range"][1] - info["target_range"][0]
        self.num_classes: int | None = info["num_classes"]
        # WeightDataModule's form, plus the signals' layout: a model rebuilds its coordinates and PSNR from it
        self.source_json: str = json.dumps({"zoo": zoo, "config": self.runs.configs[0], "select": self.select,
                                            "conditions": self.conditions, "signals": info})

    # --- per-item values (WeightDataModule hooks) --------------------------------------------------
    def _on_load(self) -> None:
        """After the weights: each item's signal values and class, gathered by its run."""
        self._conditions = None  # WeightDataModule's stored-property conditions: none here
        runs = self._runs
        rows = self.runs.rows(0, [i for _, i in runs])
        with Zoo(self.zoos[0]) as z:
            values = z.signal_values(rows).float()  # [runs, P, d_out]
        if "label" in self.runs.signal_names[0]:
            labels = torch.as_tensor(self.runs.column(0, "label")[rows].astype(np.int64))
        else:
            labels = torch.full((len(runs),), -1, dtype=torch.long)
        self._values = values[self._item_run]
        self._labels = labels[self._item_run]
        if not torch.isfinite(self._values).all():
            raise InputError(f"{self.zoos[0]}: /signals/values holds non-finite values for loaded runs")

    def _extras(self) -> list[Tensor]:
        return [self._values, self._labels]

    def normalizers(self) -> dict[str, torch.nn.Module]:
        """The weight normalizer, fitted on the training runs only (what distillation matches in)."""
        if self.weight_normalizer is None:
            raise RuntimeError("SignalDataModule: call setup() before asking for the normalizers")
        return {"weight_normalizer": self.weight_normalizer}

    # --- inspection -------------------------------------------------------------------------------
    def signals(self, split: str) -> tuple[Tensor, Tensor]:
        """All ``(values [N, P, d_out], labels [N])`` of a split's items, in loader order (unshuffled)."""
        if self.split_runs is None:
            raise RuntimeError("SignalDataModule: call setup() first")
        idx = self._split_items[split]
        return self._values[idx], self._labels[idx]

    def _info_header(self) -> list[str]:
        i = self.signal_info
        return [f"signals     task {i['task']}, shape {i['shape']}, values in {i['target_range']}, "
                f"classes {i['num_classes']}", f"conditions  {', '.join(self.conditions)}"]
