"""A zoo's task as training data: the examples a zoo's networks were trained on, for models whose
loss runs networks on them (hypernetworks' functional loss) rather than reading stored weights.

``source_task`` rebuilds the task of a zoo config (a file's stored config or a YAML config):
the same loader, options and seeded splits, hence the same examples the zoo's networks saw.
Generated networks are evaluated on it, and ``TaskDataModule`` serves it to Lightning.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from wsl.data.runs import check_same_space
from zoo.config import ZooConfig, load_config, parse_config, resolve_config, varying_hparams
from zoo.generate import build_task_and_spec
from zoo.signals import SIGNAL_TASKS, SignalSet
from zoo.store import SPLITS, Zoo
from zoo.tasks import TaskData, task_options
from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError, MissingFileError

TASK = "task"  # the condition that names a task: its index into a TaskDataModule's tasks


def rebuild_task(config: dict[str, Any], data_dir: str | Path | None = None
                 ) -> tuple[dict[str, Any], TaskData | SignalSet, WeightSpaceSpec]:
    """A zoo's (normalised) config, with ``data_dir`` put in for tasks read from IDX files (MNIST,
    Fashion-MNIST: their files may sit elsewhere on this machine; other tasks ignore it), and the
    task and weight space it builds: the same loader, options and seeded splits, hence the same
    examples the zoo's networks saw (an INR task: its signals, ``zoo.signals.SignalSet``)."""
    raw = copy.deepcopy(config)
    task_name = raw.get("task", {}).get("name")
    if data_dir is not None and "data_dir" in task_options(task_name):
        raw["task"]["data_dir"] = str(data_dir)
    task, spec = build_task_and_spec(parse_config(raw, f"config of zoo {raw.get('name', '?')!r}"))
    return raw, task, spec


def source_task(config: dict[str, Any], data_dir: str | Path | None = None) -> TaskData | SignalSet:
    """The task a zoo was trained on, rebuilt from its stored config (``Zoo.config``)."""
    return rebuild_task(config, data_dir)[1]


def read_zoo_config(path: str | Path) -> tuple[ZooConfig, str | None]:
    """A zoo config from a YAML file (or the name of a shipped one, ``digits_mlp``) or from a zoo
    file's stored config; and the zoo file, if one."""

    path = Path(path)
    if path.suffix not in (".h5", ".hdf5"):
        return load_config(resolve_config(path)), None
    if not path.exists():
        raise MissingFileError(f"{path}: not found (expected a zoo .h5 file, a zoo config .yaml or a shipped "
                                f"config's name)")
    with Zoo(path) as zoo:
        return parse_config(zoo.config, f"{path} (stored config)"), str(path)


class TaskDataModule(pl.LightningDataModule):
    """Batches ``(x, y, index)`` of a zoo config's task: training examples shuffled, validation
    and test examples in order. ``index`` is the example's position in its split (hypernetworks
    derive per-example data-fraction and label-noise draws from it).

    Args:
        config: a zoo config (YAML, or a shipped config's name) or a zoo file (its stored config):
            the task, the architecture (the weight space of the networks to emit) and the
            hyperparameter space.
        conditions: hyperparameters of that space a model is conditioned on (linked to the model);
            each must vary in the config (its range is what the model samples from); and ``task``
            with ``tasks``.
        tasks: further zoo configs or files of the same weight space whose tasks are served too
            (task 1, 2, ...; ``config``'s is task 0). Training batches are then one batch per task.
        batch_size: training examples per step; ``eval_batch_size`` for validation and test.
        data_dir: where IDX task files are, for tasks read from them (MNIST, Fashion-MNIST).
    """

    def __init__(self, config: str, conditions: list[str] | None = None, batch_size: int = 128,
                 eval_batch_size: int = 2048, seed: int = 0, data_dir: str | None = None,
                 tasks: list[str] | None = None):
        super().__init__()
        self.config_path = str(config)
        zoo_config, zoo_file = read_zoo_config(config)
        if zoo_config.task["name"] in SIGNAL_TASKS:
            raise InputError(f"{config}: task {zoo_config.task['name']!r} is an INR task; TaskDataModule serves "
                             f"tasks with shared examples (digits, mnist1d, mnist, ...)")
        self.conditions = list(conditions or [])
        self.extra_tasks = [str(t) for t in (tasks or [])]
        if (TASK in self.conditions) != bool(self.extra_tasks):
            raise InputError(f"{config}: the condition {TASK!r} and tasks go together: conditions {self.conditions}, "
                             f"tasks {self.extra_tasks}")
        varying = varying_hparams(zoo_config)
        for name in self.conditions:
            if name == TASK:
                continue
            if name not in zoo_config.hparams:
                raise InputError(f"{config}: condition {name!r} is not a hyperparameter of this config; "
                                 f"expected some of {sorted(zoo_config.hparams)}")
            if name not in varying:
                raise InputError(f"{config}: condition {name!r} is fixed to {zoo_config.hparams[name]!r} in this "
                                 f"config; a condition needs a range (uniform, log_uniform or grid)")
        if batch_size < 1 or eval_batch_size < 1:
            raise InputError(f"batch sizes must be >= 1, found {batch_size} and {eval_batch_size}")
        self.batch_size, self.eval_batch_size, self.seed = int(batch_size), int(eval_batch_size), int(seed)
        raw, self.task, spec = rebuild_task(zoo_config.raw, data_dir)
        extra = []
        for path in self.extra_tasks:
            other_raw, other_task, other_spec = rebuild_task(read_zoo_config(path)[0].raw, data_dir)
            check_same_space(other_spec, spec, f"task {path}", self.config_path)
            if other_spec.activation != spec.activation:
                raise InputError(f"task {path}: activation {other_spec.activation!r}, but {self.config_path} has "
                                 f"{spec.activation!r}; the networks of all tasks share one")
            extra.append((other_raw, other_task))
        self.tasks = [self.task] + [t for _, t in extra]
        self.spec = spec
        self.spec_json: str = spec.to_json()
        # the same form as WeightDataModule's: what a model needs to rebuild its task and ranges
        source = {"zoo": zoo_file, "config": raw, "select": {}, "conditions": self.conditions}
        if extra:
            source["tasks"] = [r for r, _ in extra]
        self.source_json: str = json.dumps(source)

    def normalizers(self) -> dict[str, torch.nn.Module]:
        """Nothing is fitted on task examples: models that need no weight normalizer get none."""
        return {}

    @staticmethod
    def _dataset(task: TaskData, split: str) -> TensorDataset:
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        return TensorDataset(x, y, torch.arange(len(y)))

    def train_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader, or one per task (Lightning then serves a list of batches, one per task)."""
        loaders = []
        for k, task in enumerate(self.tasks):
            g = torch.Generator().manual_seed(self.seed + k)
            loaders.append(DataLoader(self._dataset(task, "train"), batch_size=self.batch_size, shuffle=True,
                                      generator=g, drop_last=len(task.y_train) > self.batch_size))
        return loaders if len(loaders) > 1 else loaders[0]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self.task, "val"), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self.task, "test"), batch_size=self.eval_batch_size)

    def info(self) -> str:
        tasks = "; ".join(f"task {k} {t.name} ({t.kind}; " + ", ".join(f"{s} {len(getattr(t, f'y_{s}'))}" for s in SPLITS)
                          + " examples)" for k, t in enumerate(self.tasks))
        return (f"{tasks}; weight space {self.spec.architecture} with {self.spec.num_params} parameters; "
                f"conditions {self.conditions}")
