"""``ZooDataModule``: checkpoints of one or more zoo files as (weights, target) batches.

What it guarantees, and why:

- Splits are by run. A run is a model of a zoo file (its index; with several files the pair
  (file position, index)); all its selected checkpoints go to the same split, so a predictor is
  never scored on a later checkpoint of a network it was trained on. The split is a seeded
  permutation of the runs; the chosen runs are recorded in ``split_runs`` and in the module's
  ``state_dict`` (Lightning stores it in every checkpoint), so a resumed or reloaded run uses the
  same split even if the seed logic changes.
- INR zoos fit several networks to one signal (an image): a drawn split keeps all INRs of a
  signal together (grouped by (file, ``signal`` field)), else a classifier could be scored on a
  second INR of an image it was trained on. ``split="recorded"`` uses the zoo's own per-model
  ``split`` field instead, the fixed split of the images that published INR benchmarks use.
- Targets are metrics, hyperparameters or an INR zoo's signal fields (``label``, ``frequency``).
- Only models with status done are used: pending ones have no weights, diverged ones have NaN.
- Weights of the selected checkpoints are read once (``Zoo.load`` per checkpoint) into
  per-parameter float32 tensors. A batch is one gather per tensor with a LongTensor of indices
  (the sampler yields whole index batches), not per-item stacking of thousands of small tensors.
- The normalizers are fitted on the training split only and exposed as ``weight_normalizer`` and
  ``target_normalizer``; the model copies their buffers and applies them itself, so prediction on
  new checkpoints normalises exactly as in training.
- Augmentations apply to training batches only, in the loader (where each network's activation
  is known, which sign/scale augmentations need when the activation varies per model).
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from zoo.store import STATUS_NAMES, Zoo
from zoo.weight_space import WeightSpaceSpec

from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.weights import WeightBatch

SPLITS = ("train", "val", "test")
# augment key -> (wsl.data.augment class, its keyword for the value, type of the value)
AUGMENTS = {
    "permutation": ("RandomPermutation", None, bool),
    "scaling": ("RandomScaling", None, bool),
    "noise": ("GaussianNoise", "std", float),
    "dropout": ("WeightDropout", "p", float),
    "mixup": ("AlignedMixUp", "alpha", float),
}


class _BatchSampler(Sampler):
    """Yields LongTensors of positions, one per batch; shuffled with a generator seeded by
    (seed, epoch), so every epoch is reproducible whether or not Lightning calls ``set_epoch``."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
            self.epoch += 1
        else:
            order = torch.arange(self.n)
        return iter(order.split(self.batch_size))


class _Items(Dataset):
    """The items of one split, indexed by a LongTensor of positions: returns a whole batch."""

    def __init__(self, spec: WeightSpaceSpec, params: list[Tensor], targets: Tensor, items: Tensor,
                 activations: list[str] | None = None, augmentations: list[Callable] = (),
                 mixup: Callable | None = None):
        self.spec, self.params, self.targets, self.items = spec, params, targets, items
        self.activations = activations
        self.augmentations, self.mixup = list(augmentations), mixup

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: Tensor):
        idx = self.items[pos]
        # per-network activations only when they vary per model; else the spec's is used
        acts = None if self.activations is None else [self.activations[i] for i in idx.tolist()]
        wb = WeightBatch.from_params(self.spec, [p[idx] for p in self.params])
        y = self.targets[idx]
        kw = {} if acts is None else {"activation": acts}
        for f in self.augmentations:
            wb = f(wb, **kw)
        if self.mixup is not None:
            wb, lam, partner = self.mixup(wb, **kw)
            wb.activation = acts  # the mixed network keeps the activation of the first one
            return wb, y, lam, partner
        wb.activation = acts
        return wb, y


def _as_is(batch):
    return batch


def _reseed_worker(worker_id: int) -> None:
    """Loader workers get copies of the augmentations; reseed their generators so that workers do
    not all draw the same permutations and noise."""
    info = get_worker_info()
    ds = info.dataset
    for k, f in enumerate([*ds.augmentations, ds.mixup]):
        g = getattr(f, "generator", None)
        if isinstance(g, torch.Generator):
            g.manual_seed((info.seed + 7919 * k) % 2**63)


def _run_key(run) -> tuple[int, int]:
    """A recorded run id -> (file position, index): an int (one file) or a [file, index] pair."""
    if isinstance(run, (list, tuple)):
        return int(run[0]), int(run[1])
    return 0, int(run)


class ZooDataModule(pl.LightningDataModule):
    """Batches ``(WeightBatch, targets)`` of zoo checkpoints, split by run.

    Args:
        zoos: zoo files of one weight space (same layers and shapes; the activation may differ).
        target: a metric stored per checkpoint (``test_acc``, ``val_loss``, ...), a hyperparameter or,
            in INR zoos, a signal field (``label``, ``frequency``, ...).
        task: ``auto`` (strings and integer signal fields such as ``label`` -> classification, other
            numbers -> regression), ``regression`` or ``classification`` (classes: the sorted
            distinct values).
        checkpoints: ``last``, ``all`` (every stored epoch > 0) or a list of epochs (used as given).
        split: fractions of runs for train, val and test, or ``"recorded"``: the zoo's per-model
            ``split`` field (INR zoos: the fixed split of their signals).
        split_seed: seeds the split, the ``max_models`` subsample, shuffling and augmentations.
        include_init: also use the initialisation checkpoint (epoch 0).
        max_models: use at most this many runs (a seeded random subset of the done ones).
        augment: e.g. ``{"permutation": true, "scaling": false, "noise": 0.0, "dropout": 0.0,
            "mixup": 0.0}``; built from ``wsl.data.augment`` when the first training loader is made.
            ``augmentations`` (callables ``wb -> wb``) and ``mixup`` (``wb -> (wb, lam, partner)``)
            may instead be set directly; with per-model activations they are called with
            ``activation=[...]``. With mixup, training batches are ``(wb, y, lam, partner)``.
    """

    def __init__(self, zoos: list[str], target: str = "test_acc", task: str = "auto",
                 checkpoints: str | list[int] = "last", split: str | list[float] = [0.7, 0.1, 0.2],
                 split_seed: int = 0, batch_size: int = 64, include_init: bool = False,
                 max_models: int | None = None, num_workers: int = 0, augment: dict | None = None):
        super().__init__()
        self.zoos = [str(zoos)] if isinstance(zoos, (str, Path)) else [str(z) for z in zoos]
        if not self.zoos:
            raise ValueError("ZooDataModule: zoos is empty; give one or more zoo files")
        self.target, self.checkpoints = target, checkpoints
        self.split = split if isinstance(split, str) else [float(f) for f in split]
        self.split_seed = int(split_seed)
        self.batch_size, self.include_init = int(batch_size), bool(include_init)
        self.max_models, self.num_workers = max_models, int(num_workers)
        self.augment = dict(augment or {})
        self.save_hyperparameters()
        self._check_args(task)

        specs, self._epochs = [], []
        kinds, class_values = set(), []
        for path in self.zoos:
            with Zoo(path) as z:
                specs.append(z.spec)
                self._epochs.append(self._select_epochs(z))
                if self.split == "recorded" and "split" not in z.signal_names:
                    raise ValueError(f"{path}: split 'recorded' needs a per-model 'split' field (INR zoos record "
                                     f"one), but this zoo has none (signal fields: {z.signal_names}); give "
                                     f"split fractions such as [0.7, 0.1, 0.2] instead")
                if target in z.metric_names:
                    kinds.add("metric")
                    continue
                if target in z.hparam_names:
                    v, source = z.hparam(target)[z.done], "hyperparameter"
                elif target in z.signal_names:
                    v, source = z.signal(target)[z.done], "signal field"
                else:
                    raise KeyError(f"{path}: target {target!r} is neither a stored metric {z.metric_names}, "
                                   f"a hyperparameter {z.hparam_names} nor a signal field "
                                   f"{z.signal_names or '(none: not an INR zoo)'}")
                if v.dtype.kind in "OUS":
                    kinds.add("string")
                    v = v.astype(str)
                elif source == "signal field" and v.dtype.kind in "iu":
                    kinds.add("integer signal field")  # a class (label) or an id, not a quantity
                else:
                    kinds.add(f"numeric {source}")
                class_values.append(v)
        self.spec = self._common_spec(specs)
        self.spec_json: str = self.spec.to_json()
        if len(kinds) > 1:
            raise ValueError(f"target {target!r} is of different kinds in the zoo files: {sorted(kinds)}")
        kind = kinds.pop()
        if task == "auto":
            task = "classification" if kind in ("string", "integer signal field") else "regression"
        if task == "regression" and kind == "string":
            raise ValueError(f"target {target!r} has string values; it needs task 'classification' or 'auto'")
        if task == "classification" and kind == "metric":
            raise ValueError(f"target {target!r} is a metric (a number per checkpoint); use task 'regression'")
        self.task_type: str = task
        self._class_values = np.unique(np.concatenate(class_values)) if task == "classification" else None
        self.class_names: list[str] | None = (None if self._class_values is None
                                              else [str(v) for v in self._class_values])
        self.num_outputs: int = 1 if task == "regression" else len(self.class_names)

        self.augmentations: list[Callable] | None = None  # None: build from ``augment`` when needed
        self.mixup: Callable | None = None
        self.split_runs: dict[str, list] | None = None
        self.weight_normalizer: WeightNormalizer | None = None
        self.target_normalizer: TargetNormalizer | None = None
        self.excluded: dict[str, int] = {}
        self._loaded_runs: list[tuple[int, int]] | None = None
        self._restored_runs: dict[str, list[tuple[int, int]]] | None = None

    # --- construction helpers -------------------------------------------------------------------
    def _check_args(self, task: str) -> None:
        if task not in ("auto", "regression", "classification"):
            raise ValueError(f"task must be 'auto', 'regression' or 'classification', found {task!r}")
        if isinstance(self.split, str):
            if self.split != "recorded":
                raise ValueError(f"split must be 'recorded' or three fractions (train, val, test), found {self.split!r}")
        elif len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6 or self.split[0] == 0:
            raise ValueError(f"split must be three fractions (train, val, test) >= 0 summing to 1 with "
                             f"train > 0, or 'recorded', found {self.split}")
        if not (self.checkpoints in ("last", "all") or (isinstance(self.checkpoints, (list, tuple))
                                                         and self.checkpoints)):
            raise ValueError(f"checkpoints must be 'last', 'all' or a non-empty list of epochs, "
                             f"found {self.checkpoints!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {self.batch_size}")
        if self.max_models is not None and self.max_models < 1:
            raise ValueError(f"max_models must be >= 1 or None, found {self.max_models}")
        unknown = sorted(set(self.augment) - set(AUGMENTS))
        if unknown:
            raise ValueError(f"augment: unknown key(s) {unknown}; valid keys: {list(AUGMENTS)}")

    def _select_epochs(self, z: Zoo) -> list[int]:
        """Checkpoint positions of ``z`` for the ``checkpoints`` and ``include_init`` arguments."""
        if self.checkpoints == "last":
            epochs = [z.checkpoint_epochs[-1]]
        elif self.checkpoints == "all":
            epochs = [e for e in z.checkpoint_epochs if e > 0]
        else:
            epochs = [int(e) for e in self.checkpoints]
        if self.include_init and 0 not in epochs:
            epochs = [0] + epochs
        return [z.epoch_position(e) for e in epochs]  # KeyError naming the stored epochs

    def _common_spec(self, specs: list[WeightSpaceSpec]) -> WeightSpaceSpec:
        """The shared weight space; files whose activation differs give activation None (per model)."""
        def key(s):
            d = s.to_dict()
            d.pop("activation")
            return d

        for path, s in zip(self.zoos[1:], specs[1:]):
            if key(s) != key(specs[0]):
                raise ValueError(f"zoo files of different weight spaces: {self.zoos[0]} has "
                                 f"{self._describe(specs[0])}, {path} has {self._describe(s)}")
        if len({s.activation for s in specs}) > 1:
            d = specs[0].to_dict()
            d["activation"] = None
            return WeightSpaceSpec.from_dict(d)
        return specs[0]

    @staticmethod
    def _describe(spec: WeightSpaceSpec) -> str:
        return f"{spec.architecture} [" + ", ".join(f"{p.name} {list(p.shape)}" for p in spec.params) + "]"

    # --- data -----------------------------------------------------------------------------------
    def _done_runs(self) -> list[tuple[int, int]]:
        """(file position, index) of every done model; counts the excluded ones."""
        runs, self.excluded = [], {name: 0 for code, name in STATUS_NAMES.items() if code != 1}
        for fi, path in enumerate(self.zoos):
            with Zoo(path) as z:
                status = z.status
                runs += [(fi, int(i)) for i in z.index[status == 1]]
                for code, name in STATUS_NAMES.items():
                    if code != 1:
                        self.excluded[name] += int((status == code).sum())
        if len(set(runs)) != len(runs):
            raise ValueError(f"zoo files {self.zoos} contain the same run index twice in one file")
        return runs

    def _signal_groups(self, runs: list[tuple[int, int]]) -> list[list[int]]:
        """Positions in ``runs`` grouped by (file, ``signal`` field): the INRs of one signal form a
        group; in files without a ``signal`` field every run is its own group. Groups are in order
        of their first run, so a zoo without signals gives one group per run, in run order."""
        signal_of: dict[tuple[int, int], Any] = {}
        for fi, path in enumerate(self.zoos):
            with Zoo(path) as z:
                if "signal" in z.signal_names:
                    signal_of.update({(fi, int(i)): s for i, s in zip(z.index, z.signal("signal").tolist())})
        groups: dict[Any, list[int]] = {}
        for k, run in enumerate(runs):
            key = (run[0], signal_of[run]) if run in signal_of else ("run", run)
            groups.setdefault(key, []).append(k)
        return list(groups.values())

    def _draw_split(self, runs: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
        """Seeded permutation of the signal groups (whole groups up to ``max_models`` runs kept), cut
        by the split fractions of the groups."""
        groups = self._signal_groups(runs)
        order = np.random.default_rng(self.split_seed).permutation(len(groups))
        if self.max_models is not None:
            sizes = np.cumsum([len(groups[g]) for g in order])
            order = order[:max(1, int(np.searchsorted(sizes, self.max_models, side="right")))]
        n = len(order)
        n_train = max(1, round(self.split[0] * n))
        n_val = min(n - n_train, round(self.split[1] * n))
        cuts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        return {s: sorted(runs[k] for g in idx for k in groups[g]) for s, idx in cuts.items()}

    def _recorded_split(self, runs: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
        """The zoos' own per-model ``split`` field (``max_models``: a seeded subset of the runs)."""
        if self.max_models is not None:
            keep = np.random.default_rng(self.split_seed).permutation(len(runs))[:self.max_models]
            runs = [runs[k] for k in sorted(keep)]
        split_of = {}
        for fi, path in enumerate(self.zoos):
            with Zoo(path) as z:
                split_of.update({(fi, int(i)): s for i, s in zip(z.index, z.signal("split").tolist())})
        bad = sorted({split_of[r] for r in runs} - set(SPLITS))
        if bad:
            raise ValueError(f"split 'recorded': the zoos' 'split' field holds {bad}; expected {list(SPLITS)}")
        by_split = {s: sorted(r for r in runs if split_of[r] == s) for s in SPLITS}
        if not by_split["train"]:
            raise ValueError(f"split 'recorded': no done model of {self.zoos} is recorded as 'train'")
        return by_split

    def _load(self, runs: list[tuple[int, int]]) -> None:
        """Read the selected checkpoints of ``runs`` into memory: weights, targets, run and epoch per item."""
        params = [[] for _ in self.spec.params]
        targets, item_runs, item_epochs, activations = [], [], [], []
        run_pos = {r: k for k, r in enumerate(runs)}
        for fi, path in enumerate(self.zoos):
            wanted = np.asarray(sorted(i for f, i in runs if f == fi), dtype=np.int64)
            if not len(wanted):
                continue
            with Zoo(path) as z:
                row_of = {int(i): r for r, i in enumerate(z.index)}
                rows = np.asarray([row_of[int(i)] for i in wanted])
                is_metric = self.target in z.metric_names
                values = z.metric(self.target) if is_metric else z.column(self.target)
                if values.dtype.kind in "OUS":
                    values = values.astype(str)
                acts = (z.hparam("activation")[rows].tolist() if z.spec.activation is None
                        and "activation" in z.hparam_names else [z.spec.activation] * len(rows))
                for c in self._epochs[fi]:
                    weights = z.load(c)
                    for k, p in enumerate(self.spec.params):
                        params[k].append(torch.from_numpy(np.ascontiguousarray(weights[p.name][rows])))
                    targets.append(values[rows, c] if is_metric else values[rows])
                    item_runs.append([run_pos[(fi, int(i))] for i in wanted])
                    item_epochs.append(np.full(len(rows), z.checkpoint_epochs[c]))
                    activations += acts
                z._cache.clear()  # the rows we need are copied; free the whole-checkpoint arrays
        self._params = [torch.cat(p).float() for p in params]
        self._item_run = torch.as_tensor(np.concatenate(item_runs), dtype=torch.long)
        self._item_epoch = torch.as_tensor(np.concatenate(item_epochs), dtype=torch.long)
        self._activations = activations if self.spec.activation is None else None
        values = np.concatenate(targets)
        if self.task_type == "classification":
            self._targets = torch.as_tensor(np.searchsorted(self._class_values, values), dtype=torch.long)
        else:
            y = np.asarray(values, dtype=np.float64)
            if not np.isfinite(y).all():
                raise ValueError(f"target {self.target!r} is not finite for {int((~np.isfinite(y)).sum())} "
                                 f"checkpoints of done models")
            self._targets = torch.as_tensor(y, dtype=torch.float32)
        self._runs = runs
        self._loaded_runs = list(runs)

    def _prepare(self) -> None:
        """Make (or restore) the split, load what it needs, fit the normalizers on train."""
        done = self._done_runs()
        if self._restored_runs is None:
            by_split = self._recorded_split(done) if self.split == "recorded" else self._draw_split(done)
        else:
            by_split = self._restored_runs
            missing = sorted(set(r for s in SPLITS for r in by_split[s]) - set(done))
            if missing:
                raise ValueError(f"the restored split names runs (file position, index) {missing[:10]} that are "
                                 f"not done models of {self.zoos}: is this the zoo the split was made on?")
        runs = sorted(r for s in SPLITS for r in by_split[s])
        if len(set(runs)) != len(runs):
            raise ValueError("a run is recorded in two splits")
        if self._loaded_runs != runs:
            self._load(runs)
        run_split = torch.empty(len(runs), dtype=torch.long)
        pos = {r: k for k, r in enumerate(runs)}
        for k, s in enumerate(SPLITS):
            run_split[[pos[r] for r in by_split[s]]] = k
        item_split = run_split[self._item_run]
        self._split_items = {s: torch.nonzero(item_split == k).flatten() for k, s in enumerate(SPLITS)}
        single = len(self.zoos) == 1
        self.split_runs = {s: [i if single else [f, i] for f, i in by_split[s]] for s in SPLITS}
        self._by_split = by_split
        train = self._split_items["train"]
        self.weight_normalizer = WeightNormalizer(self.spec).fit(  # in chunks: no copy of the whole split
            WeightBatch.from_params(self.spec, [p[idx] for p in self._params]) for idx in train.split(4096))
        self.target_normalizer = TargetNormalizer()
        if self.task_type == "regression":
            self.target_normalizer.fit(self._targets[train])

    def setup(self, stage: str | None = None) -> None:
        if self.split_runs is None:
            self._prepare()

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The split, so that a checkpoint restores it exactly (per file too, for ``wsl predict``)."""
        if self.split_runs is None:
            return {}
        by_zoo = {path: {s: [i for f, i in self._by_split[s] if f == fi] for s in SPLITS}
                  for fi, path in enumerate(self.zoos)}
        return {"zoos": list(self.zoos), "split_runs": self.split_runs, "split_runs_by_zoo": by_zoo}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Use the recorded split; Lightning calls this after ``setup``, so rebuild if already set up."""
        if "split_runs" not in state:
            return
        if len(state.get("zoos", self.zoos)) != len(self.zoos):
            raise ValueError(f"the saved split is over {len(state['zoos'])} zoo files ({state['zoos']}), "
                             f"this data module has {len(self.zoos)} ({self.zoos})")
        self._restored_runs = {s: sorted(_run_key(r) for r in state["split_runs"][s]) for s in SPLITS}
        if self.split_runs is not None:
            self._prepare()

    # --- loaders ----------------------------------------------------------------------------------
    def _build_augmentations(self) -> tuple[list[Callable], Callable | None]:
        """Augmentation callables from ``augment``; wsl.data.augment is imported only when one is asked for."""
        wanted = {k: v for k, v in self.augment.items() if v}
        if not wanted:
            return [], None
        try:
            import wsl.data.augment as aug
        except ImportError as e:
            raise RuntimeError(f"augment {wanted} needs the module wsl.data.augment, which cannot be imported: {e}") from e
        made = {}
        for k, (name, kwarg, kind) in AUGMENTS.items():
            if k not in wanted:
                continue
            kwargs = {} if kwarg is None else {kwarg: kind(wanted[k])}
            cls = getattr(aug, name, None)
            if cls is None:
                raise RuntimeError(f"augment {k!r} needs wsl.data.augment.{name}, which does not exist")
            if "seed" in inspect.signature(cls).parameters:
                kwargs["seed"] = self.split_seed + list(AUGMENTS).index(k)
            try:
                made[k] = cls(**kwargs)
            except TypeError as e:
                raise RuntimeError(f"augment {k!r}: wsl.data.augment.{name}({kwargs}) failed: {e}") from e
        mixup = made.pop("mixup", None)
        return list(made.values()), mixup

    def _loader(self, split: str, shuffle: bool = False, train: bool = False) -> DataLoader:
        if self.split_runs is None:
            raise RuntimeError("ZooDataModule: call setup() before asking for a data loader")
        augs, mixup = [], None
        if train:
            if self.augmentations is None:
                self.augmentations, self.mixup = self._build_augmentations()
            augs, mixup = self.augmentations, self.mixup
        ds = _Items(self.spec, self._params, self._targets, self._split_items[split], self._activations, augs, mixup)
        sampler = _BatchSampler(len(ds), self.batch_size, shuffle, self.split_seed)
        return DataLoader(ds, batch_size=None, sampler=sampler, collate_fn=_as_is, num_workers=self.num_workers,
                          worker_init_fn=_reseed_worker if train else None,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    # --- inspection -------------------------------------------------------------------------------
    def items(self, split: str) -> dict[str, Any]:
        """Which checkpoints a split's loader yields, in loader order (unshuffled): run ids, epochs, targets."""
        if self.split_runs is None:
            raise RuntimeError("ZooDataModule: call setup() first")
        idx = self._split_items[split]
        runs = [self._runs[k] for k in self._item_run[idx].tolist()]
        return {"runs": [i if len(self.zoos) == 1 else (f, i) for f, i in runs],
                "epochs": self._item_epoch[idx].tolist(), "targets": self._targets[idx]}

    def info(self) -> str:
        """Runs and checkpoints per split, excluded models, target statistics."""
        if self.split_runs is None:
            self.setup()
        classes = f", classes {self.class_names}" if self.class_names else ""
        lines = [f"zoos        {', '.join(self.zoos)}",
                 f"target      {self.target} ({self.task_type}{classes})",
                 "excluded    " + ", ".join(f"{c} {n}" for n, c in self.excluded.items())
                 + " models (only done models are used)",
                 f"epochs      {sorted(set(self._item_epoch.tolist()))}"]
        for s in SPLITS:
            idx = self._split_items[s]
            y = self._targets[idx]
            line = f"{s:<6}{len(self.split_runs[s]):>6} runs {len(idx):>7} checkpoints"
            if len(idx) and self.task_type == "regression":
                line += (f"   {self.target} mean {y.mean():.4g} std {y.std(unbiased=False):.4g} "
                         f"min {y.min():.4g} max {y.max():.4g}")
            elif len(idx):
                counts = torch.bincount(y, minlength=self.num_outputs).tolist()
                line += "   " + ", ".join(f"{n} {c}" for n, c in zip(self.class_names, counts))
            lines.append(line)
        return "\n".join(lines)
