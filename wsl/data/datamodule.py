"""Lightning DataModules over zoo files: weights for every model family, plus a target for prediction.

- ``WeightDataModule`` serves checkpoints' weights, split by run (``wsl.data.runs``), with no target:
  what a generator or an autoencoder trains on. Batches are ``(WeightBatch,)``, or
  ``(WeightBatch, conditions [B, K])`` when ``conditions`` names stored properties (a metric at the
  checkpoint, a numeric hyperparameter or signal field).
- ``PropertyDataModule`` is that plus a target (a metric, hyperparameter or INR signal field) for
  regression or classification: batches are ``(WeightBatch, target)``.

What both guarantee, and why:

- Weights of the selected checkpoints are read once into per-parameter float32 tensors when they
  fit ``cache_mb``; larger selections are streamed from the zoo files through a cache of that size
  (``wsl.data.stream``). A batch is one gather per tensor with a LongTensor of indices (the sampler
  yields whole index batches), not per-item stacking of thousands of small tensors.
- Under DDP every rank serves its share of each split (``wsl.data.stream.ItemSampler``); evaluation
  shares hold every item exactly once, so metrics synchronised over ranks are the single-process ones.
- ``weight_normalizer`` is fitted on the training split only (exactly invertible, see
  ``wsl.data.normalize``). ``normalize=True`` serves normalized weights (generators map their
  samples back with ``weight_normalizer.inverse``); the property DataModule serves raw weights,
  because the predictor normalizes inside the model, where it must also normalize checkpoints
  from anywhere at prediction time (and the probe encoder runs the networks on raw weights).
  Models receive the normalizers from ``normalizers()``; they never reach into the DataModule.
- Augmentations apply to training batches only, in the loader (where each network's activation is
  known, which sign/scale augmentations need when the activation varies per model), before
  normalization.
- The split is saved in the module's ``state_dict`` (Lightning stores it in every checkpoint), so a
  resumed or reloaded run uses the same runs.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.data.runs import Split, ZooRuns, check_fractions
from wsl.data.stream import InMemoryWeights, ItemSampler, StreamedWeights
from wsl.weights import WeightBatch
from zoo.store import SPLITS
from zoo.errors import InputError

# augment key -> (wsl.data.augment class, its keyword for the value, type of the value)
AUGMENTS = {
    "permutation": ("RandomPermutation", None, bool),
    "scaling": ("RandomScaling", None, bool),
    "noise": ("GaussianNoise", "std", float),
    "dropout": ("WeightDropout", "p", float),
    "mixup": ("AlignedMixUp", "alpha", float),
    "warp": ("InputWarp", None, dict),  # INRs: true (defaults) or {rotate: 45, scale: 0.2, translate: 0.25}
}


class _Items(Dataset):
    """The items of one split, indexed by a LongTensor of positions: returns a whole batch
    ``(wb, *extras)`` (``extras``: per-item tensors such as targets or conditions), and with MixUp
    ``(wb, *extras, lam, partner)``."""

    def __init__(self, spec, store: InMemoryWeights | StreamedWeights, extras: list[Tensor], items: Tensor,
                 activations: list[str] | None = None, augmentations: list[Callable] = (),
                 mixup: Callable | None = None, normalizer: WeightNormalizer | None = None):
        self.spec, self.store, self.extras, self.items = spec, store, extras, items
        self.activations = activations
        self.augmentations, self.mixup, self.normalizer = list(augmentations), mixup, normalizer

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: Tensor):
        idx = self.items[pos]
        # per-network activations only when they vary per model; else the spec's is used
        acts = None if self.activations is None else [self.activations[i] for i in idx.tolist()]
        wb = WeightBatch.from_params(self.spec, self.store.gather(idx))
        kw = {} if acts is None else {"activation": acts}
        for f in self.augmentations:
            wb = f(wb, **kw)
        mixed = ()
        if self.mixup is not None:
            wb, lam, partner = self.mixup(wb, **kw)
            mixed = (lam, partner)  # the mixed network keeps the activation of the first one
        if self.normalizer is not None:
            with torch.no_grad():
                wb = self.normalizer(wb)
        wb.activation = acts
        return (wb, *[e[idx] for e in self.extras], *mixed)


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


class _AlignTo:
    """Per-parameter tensors -> the same networks permuted onto ``ref`` (weight matching); a class,
    not a closure, so that loader workers started by spawning can receive it."""

    def __init__(self, ref: WeightBatch):
        self.ref = ref

    def __call__(self, params: list[Tensor]) -> list[Tensor]:
        from wsl.weights.align import align

        return align(WeightBatch.from_params(self.ref.spec, params), self.ref).params()


class WeightDataModule(pl.LightningDataModule):
    """Batches of zoo checkpoints' weights (and, if asked, stored properties as conditions), split by run.

    Args:
        zoos: zoo files of one weight space (same layers and shapes; the activation may differ).
        checkpoints: ``last``, ``all`` (every stored epoch > 0) or a list of epochs (used as given).
        split: fractions of runs for train, val and test, or ``"recorded"``: the zoo's per-model
            ``split`` field (INR zoos: the fixed split of their signals).
        split_seed: seeds the split, the ``max_models`` subsample, shuffling and augmentations.
        include_init: also use the initialisation checkpoint (epoch 0).
        max_models: use at most this many runs (a seeded random subset of the done ones).
        augment: e.g. ``{"permutation": true, "scaling": false, "noise": 0.0, "dropout": 0.0,
            "mixup": 0.0, "warp": {"rotate": 45, "scale": 0.2, "translate": 0.25}}`` (``warp``: INRs'
            input coordinates); built from ``wsl.data.augment`` when the first training loader is made.
            ``augmentations`` (callables ``wb -> wb``) and ``mixup`` (``wb -> (wb, lam, partner)``)
            may instead be set directly; with per-model activations they are called with
            ``activation=[...]``.
        conditions: stored numeric properties served beside the weights, ``[B, len(conditions)]``
            float32 (a metric at the item's checkpoint, a hyperparameter or a signal field).
        normalize: serve weights through ``weight_normalizer`` (fitted on the training runs):
            ``True`` or ``"tensor"``: its per-tensor form (commutes with neuron permutations);
            ``"parameter"``: every parameter standardised on its own, for models on the flat vector
            of aligned (or shared-initialisation) weights; ``False``: raw weights.
        select: use only the runs whose hyperparameters, signal fields or metrics meet these
            conditions, e.g. ``{"activation": "relu", "optimizer": ["adam"], "lr": [0.001, null],
            "test_acc": [0.9, null]}`` (a value, a list of values or a numeric ``[low, high]``
            range; see ``wsl.data.runs.ZooRuns``). A metric is what the run achieved at its last
            checkpoint, or at the epoch given as ``checkpoint: EPOCH`` in ``select``; a selected
            run contributes all its ``checkpoints``.
        align: permute every network's hidden neurons onto one training network by weight matching
            (``wsl.weights.align``): the same functions, with most of the arbitrary neuron order
            removed. Models without symmetry (a flat MLP, a latent autoencoder) see one mode per
            function instead of one per ordering; equivariant models do not need it.
        cache_mb: the memory the selected weights may take. A selection that fits is read once into
            memory; a larger one is streamed from the zoo files in blocks through a cache of this
            size, split over the ``num_workers`` loader processes (``wsl.data.stream``: training
            then shuffles by block and window). ``null``: always in memory.
    """

    def __init__(self, zoos: list[str] | str, checkpoints: str | list[int] = "last",
                 split: str | list[float] = [0.7, 0.1, 0.2], split_seed: int = 0, batch_size: int = 64,
                 include_init: bool = False, max_models: int | None = None, num_workers: int = 0,
                 augment: dict | None = None, conditions: list[str] | None = None, normalize: bool | str = True,
                 select: dict | None = None, align: bool = False, cache_mb: float | None = 4096):
        super().__init__()
        self.zoos = [str(zoos)] if isinstance(zoos, (str, Path)) else [str(z) for z in zoos]
        self.checkpoints = checkpoints
        self.split = split if isinstance(split, str) else [float(f) for f in split]
        self.split_seed = int(split_seed)
        self.batch_size, self.include_init = int(batch_size), bool(include_init)
        self.max_models, self.num_workers = max_models, int(num_workers)
        self.augment = dict(augment or {})
        self.conditions = list(conditions or [])
        if normalize not in (True, False, "tensor", "parameter"):
            raise InputError(f"normalize must be true, false, 'tensor' or 'parameter', found {normalize!r}")
        self.normalize = normalize is not False
        self.per_parameter = normalize == "parameter"
        self.select = dict(select or {})
        self.align = bool(align)
        self.cache_mb = None if cache_mb is None else float(cache_mb)
        self.save_hyperparameters()
        self._check_args()
        self.runs = ZooRuns(self.zoos, self.select)
        self.spec = self.runs.spec
        self.spec_json: str = self.spec.to_json()
        # What a model trained here must know of its data to run its own networks later (a
        # generator evaluates what it samples on the task): the first zoo's config, task and selection.
        self.source_json: str = json.dumps({"zoo": self.zoos[0], "config": self.runs.configs[0],
                                            "select": self.select, "conditions": self.conditions})
        if self.split == "recorded":
            self.runs.check_recorded_split()
        self._positions = [self.runs.epoch_positions(fi, checkpoints, include_init) for fi in range(len(self.zoos))]
        for name in self.conditions:
            for fi in range(len(self.zoos)):
                self.runs.kind(fi, name)  # KeyError naming what is stored

        self.augmentations: list[Callable] | None = None  # None: build from ``augment`` when needed
        self.mixup: Callable | None = None
        self._augment_states: list[torch.Tensor] | None = None  # from a checkpoint, applied once built
        self.split_runs: dict[str, list] | None = None
        self.weight_normalizer: WeightNormalizer | None = None
        self.condition_normalizer: TargetNormalizer | None = None
        self.excluded: dict[str, int] = self.runs.excluded
        self._loaded_runs: list[tuple[int, int]] | None = None
        self._restored: Split | None = None

    def _check_args(self) -> None:
        if isinstance(self.split, str):
            if self.split != "recorded":
                raise InputError(f"split must be 'recorded' or three fractions (train, val, test), found {self.split!r}")
        else:
            check_fractions(self.split)
        if not (self.checkpoints in ("last", "all") or (isinstance(self.checkpoints, (list, tuple))
                                                         and self.checkpoints)):
            raise InputError(f"checkpoints must be 'last', 'all' or a non-empty list of epochs, "
                             f"found {self.checkpoints!r}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, found {self.batch_size}")
        if self.cache_mb is not None and not self.cache_mb > 0:
            raise InputError(f"cache_mb must be > 0 (or null: always in memory), found {self.cache_mb}")
        if self.max_models is not None and self.max_models < 1:
            raise InputError(f"max_models must be >= 1 or None, found {self.max_models}")
        if self.align and self.augment.get("permutation"):
            raise InputError("align and augment.permutation undo each other: aligned networks would be permuted "
                             "again; use one of them")
        unknown = sorted(set(self.augment) - set(AUGMENTS))
        if unknown:
            raise InputError(f"augment: unknown key(s) {unknown}; valid keys: {list(AUGMENTS)}")

    # --- per-item values ----------------------------------------------------------------------------
    def item_values(self, name: str) -> np.ndarray:
        """``name`` for every loaded item: a metric at the item's checkpoint, else the run's value."""
        runs = [self._runs[k] for k in self._item_run.tolist()]
        out = None
        for fi in range(len(self.zoos)):
            pos = np.flatnonzero(np.asarray([r[0] == fi for r in runs]))
            if not len(pos):
                continue
            col = self.runs.column(fi, name)
            rows = self.runs.rows(fi, [runs[k][1] for k in pos])
            v = col[rows, self._item_pos[pos]] if self.runs.kind(fi, name) == "metric" else col[rows]
            if out is None:
                out = np.empty(len(runs), dtype=v.dtype if v.dtype.kind not in "OUS" else object)
            out[pos] = v
        return out

    def _condition_values(self) -> Tensor:
        """``[items, len(conditions)]`` float32: each loaded item's conditions."""
        cols = []
        for name in self.conditions:
            v = self.item_values(name)
            try:
                cols.append(np.asarray(v, dtype=np.float64))
            except (TypeError, ValueError):
                raise InputError(f"condition {name!r} is not numeric (found values such as {v[:3].tolist()})") from None
        return torch.as_tensor(np.stack(cols, 1), dtype=torch.float32)

    def _extras(self) -> list[Tensor]:
        """Per-item tensors served after the weights: the conditions, if any."""
        return [] if self._conditions is None else [self._conditions]

    # --- data -----------------------------------------------------------------------------------
    def _load(self, runs: list[tuple[int, int]]) -> None:
        """The selected checkpoints of ``runs``: their weights (read into memory if they fit
        ``cache_mb``, else a streamed store), and run, epoch and checkpoint position per item."""
        items = self.runs.items(runs, self._positions)
        self._item_run = torch.as_tensor(items["run"], dtype=torch.long)
        self._item_epoch = torch.as_tensor(items["epoch"], dtype=torch.long)
        self._item_pos = items["pos"]
        if self.cache_mb is None or len(items["run"]) * self.runs.item_bytes() <= self.cache_mb * 2 ** 20:
            self._store = InMemoryWeights(self.runs.read_weights(items))
        else:  # each loader worker (or the main process) holds a slab of this size
            per_reader = self.cache_mb * 2 ** 20 / max(1, self.num_workers)
            self._store = StreamedWeights(self.spec, self.runs.paths, items, per_reader, min_blocks=self.batch_size)
        self._runs = runs
        self._activations = None if self.spec.activation is not None else \
            np.asarray(self.runs.activations(runs), dtype=object)[items["run"]].tolist()
        self._loaded_runs = list(runs)
        self._on_load()

    def _on_load(self) -> None:
        """Per-item values to build after the weights are read: the conditions (subclasses: the target)."""
        self._conditions = self._condition_values() if self.conditions else None

    def _prepare(self) -> None:
        """Make (or restore) the split, load what it needs, fit the normalizers on train."""
        split = self._restored if self._restored is not None else \
            self.runs.split(self.split, self.split_seed, self.max_models)
        runs = split.all_runs
        if self._loaded_runs != runs:
            self._load(runs)
        run_split = torch.empty(len(runs), dtype=torch.long)
        pos = {r: k for k, r in enumerate(runs)}
        for k, s in enumerate(SPLITS):
            run_split[[pos[r] for r in split.runs[s]]] = k
        item_split = run_split[self._item_run]
        self._split_items = {s: torch.nonzero(item_split == k).flatten() for k, s in enumerate(SPLITS)}
        self._split = split
        self.split_runs = split.state(self.zoos)["split_runs"]
        train = self._split_items["train"]
        if self.align:
            self._align_to(self.reference_network())
        self.weight_normalizer = WeightNormalizer(self.spec, self.per_parameter).fit(  # in pieces: no copy
            WeightBatch.from_params(self.spec, self._store.gather(idx)) for idx in self._pieces(train))
        self._fit_normalizers(train)
        if self._store.streamed:
            self._store.close()  # the loaders' workers read with their own handles and slabs

    def _pieces(self, idx: Tensor) -> list[Tensor]:
        """``idx`` in pieces that one gather can serve: a streamed store holds a bounded number of
        blocks (an item spans one block)."""
        return list(idx.split(min(4096, self._store.capacity) if self._store.streamed else 4096))

    def _align_to(self, ref: WeightBatch) -> None:
        """Align every network to ``ref`` (a training network: no held-out run decides anything):
        in place in memory, or as blocks are read when streamed."""
        aligned = _AlignTo(ref)
        if self._store.streamed:
            self._store.close()  # blocks read so far are not aligned
            self._store.transform = aligned
            return
        parts = [aligned(self._store.gather(idx)) for idx in torch.arange(len(self._store)).split(4096)]
        self._store.replace([torch.cat(ts) for ts in zip(*parts)])

    def _fit_normalizers(self, train: Tensor) -> None:
        """Normalizers beyond the weights': the conditions' (subclasses: the target's too)."""
        self.condition_normalizer = None
        if self._conditions is not None:
            self.condition_normalizer = TargetNormalizer(len(self.conditions)).fit(self._conditions[train])

    def setup(self, stage: str | None = None) -> None:
        if self.split_runs is None:
            self._prepare()

    def normalizers(self) -> dict[str, torch.nn.Module]:
        """The fitted normalizers a model receives (``model.set_normalizers(**dm.normalizers())``)."""
        if self.weight_normalizer is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for the normalizers")
        out = {"weight_normalizer": self.weight_normalizer}
        if self.conditions:
            out["condition_normalizer"] = self.condition_normalizer
        return out

    def weights(self, split: str, limit: int | None = None, seed: int = 0) -> WeightBatch:
        """All raw weights of a split's items, in loader order (unshuffled); with ``limit``, a
        seeded subset of at most that many items, in the same order."""
        if self.split_runs is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        idx = self._split_items[split]
        if limit is not None and len(idx) > limit:
            keep = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:limit]
            idx = idx[keep.sort().values]
        parts = [self._store.gather(piece) for piece in self._pieces(idx)]
        wb = WeightBatch.from_params(self.spec, [torch.cat(ts) for ts in zip(*parts)] if parts else
                                     [torch.zeros(0, *p.shape) for p in self.spec.params])
        if self._activations is not None:
            wb.activation = [self._activations[i] for i in idx.tolist()]
        return wb

    def reference_network(self) -> WeightBatch:
        """The first training network's raw weights (one network): what ``align`` aligns to, and
        what a canonical order is defined by (``wsl.diffusion.denoisers.CanonicalDenoiser``). The
        same on every process: the split is seeded."""
        if self.split_runs is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        return WeightBatch.from_params(self.spec, self._store.gather(self._split_items["train"][:1]))

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The split, so that a checkpoint restores it exactly (per file too, for ``wsl predict``), and
        the augmentations' random states, so that a resumed fit draws what an uninterrupted one would."""
        if self.split_runs is None:
            return {}
        state = self._split.state(self.zoos, self.runs.config_hashes)
        if self.augmentations is not None:
            state["augment_rng"] = [g.get_state() for g in self._augment_generators()]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Use the recorded split; Lightning calls this after ``setup``, so rebuild if already set up."""
        self._augment_states = state.get("augment_rng")
        if "split_runs" not in state:
            return
        self._restored = self.runs.restore(state)
        if self.split_runs is not None:
            self._prepare()

    # --- loaders ----------------------------------------------------------------------------------
    def _build_augmentations(self) -> tuple[list[Callable], Callable | None]:
        """Augmentation callables from ``augment``."""
        wanted = {k: v for k, v in self.augment.items() if v}
        if not wanted:
            return [], None
        import wsl.data.augment as aug

        made = {}
        for k, (name, kwarg, kind) in AUGMENTS.items():
            if k not in wanted:
                continue
            if kind is dict:  # several options: a mapping of them, or true for the defaults
                kwargs = dict(wanted[k]) if isinstance(wanted[k], dict) else {}
            else:
                kwargs = {} if kwarg is None else {kwarg: kind(wanted[k])}
            cls = getattr(aug, name)
            if "seed" in inspect.signature(cls).parameters:
                kwargs["seed"] = self.split_seed + list(AUGMENTS).index(k)
            made[k] = cls(**kwargs)
        mixup = made.pop("mixup", None)
        return list(made.values()), mixup

    def _augment_generators(self) -> list[torch.Generator]:
        """The random generators of the built augmentations, in order."""
        made = [*(self.augmentations or []), self.mixup]
        return [f.generator for f in made if isinstance(getattr(f, "generator", None), torch.Generator)]

    def _loader(self, split: str, shuffle: bool = False, train: bool = False) -> DataLoader:
        if self.split_runs is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a data loader")
        augs, mixup = [], None
        if train:
            if self.augmentations is None:
                self.augmentations, self.mixup = self._build_augmentations()
                if self._augment_states is not None:  # a resumed fit: where the checkpointed one stopped
                    for g, state in zip(self._augment_generators(), self._augment_states):
                        g.set_state(state)
                    self._augment_states = None
            augs, mixup = self.augmentations, self.mixup
        items = self._split_items[split]
        ds = _Items(self.spec, self._store, self._extras(), items, self._activations, augs,
                    mixup, self.weight_normalizer if self.normalize else None)
        rank, world = self._rank_and_world()
        streamed = self._store.streamed
        sampler = ItemSampler(len(ds), self.batch_size, shuffle, self.split_seed, rank, world,
                              blocks=self._store.block[items.numpy()] if streamed else None,
                              window=self._store.capacity if streamed else 1, workers=self.num_workers)
        return DataLoader(ds, batch_size=None, sampler=sampler, collate_fn=_as_is, num_workers=self.num_workers,
                          worker_init_fn=_reseed_worker if train else None,
                          persistent_workers=self.num_workers > 0)

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's rank and the number of ranks of the Trainer (DDP), or (0, 1)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    @property
    def streamed(self) -> bool:
        """True when the weights are streamed from the zoo files (the selection exceeds ``cache_mb``)."""
        if self.split_runs is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        return self._store.streamed

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
        """Which checkpoints a split's loader yields, in loader order (unshuffled): run ids and epochs."""
        if self.split_runs is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        idx = self._split_items[split]
        runs = [self._runs[k] for k in self._item_run[idx].tolist()]
        return {"runs": [i if len(self.zoos) == 1 else (f, i) for f, i in runs],
                "epochs": self._item_epoch[idx].tolist()}

    def _describe_split(self, split: str) -> str:
        """What ``info`` adds after a split's counts (subclasses: the target's statistics)."""
        return ""

    def info(self) -> str:
        """Runs and checkpoints per split, excluded models (and, for a target, its statistics)."""
        if self.split_runs is None:
            self.setup()
        lines = [f"zoos        {', '.join(self.zoos)}", *self._info_header(),
                 "excluded    " + ", ".join(f"{c} {n}" for n, c in self.excluded.items())
                 + " models (only done models are used)",
                 f"epochs      {sorted(set(self._item_epoch.tolist()))}"]
        for s in SPLITS:
            lines.append(f"{s:<6}{len(self.split_runs[s]):>6} runs {len(self._split_items[s]):>7} checkpoints"
                         + self._describe_split(s))
        return "\n".join(lines)

    def _info_header(self) -> list[str]:
        """Lines ``info`` prints after the zoo files: what is served beside the weights."""
        return [f"conditions  {', '.join(self.conditions)}"] if self.conditions else []


class PropertyDataModule(WeightDataModule):
    """``WeightDataModule`` plus a target: batches ``(WeightBatch, targets)`` of raw weights.

    Args (beyond ``WeightDataModule``'s):
        target: a metric stored per checkpoint (``test_acc``, ``val_loss``, ...), a hyperparameter or,
            in INR zoos, a signal field (``label``, ``frequency``, ...).
        task: ``auto`` (strings and integer signal fields such as ``label`` -> classification, other
            numbers -> regression), ``regression`` or ``classification`` (classes: the sorted
            distinct values).
    With MixUp, training batches are ``(wb, y, lam, partner)``.
    """

    def __init__(self, zoos: list[str] | str, target: str = "test_acc", task: str = "auto",
                 checkpoints: str | list[int] = "last", split: str | list[float] = [0.7, 0.1, 0.2],
                 split_seed: int = 0, batch_size: int = 64, include_init: bool = False,
                 max_models: int | None = None, num_workers: int = 0, augment: dict | None = None,
                 select: dict | None = None, cache_mb: float | None = 4096):
        if task not in ("auto", "regression", "classification"):
            raise InputError(f"task must be 'auto', 'regression' or 'classification', found {task!r}")
        super().__init__(zoos, checkpoints, split, split_seed, batch_size, include_init, max_models, num_workers,
                         augment, conditions=None, normalize=False, select=select, cache_mb=cache_mb)
        self.target = target
        kinds, class_values = set(), []
        for fi, path in enumerate(self.zoos):
            kind = self.runs.kind(fi, target)
            if kind == "metric":
                kinds.add("metric")
                continue
            v = self.runs.column(fi, target)[self.runs.rows(fi, [i for f, i in self.runs.done if f == fi])]
            if v.dtype.kind in "OUS":
                kinds.add("string")
            elif kind == "signal field" and v.dtype.kind in "iu":
                kinds.add("integer signal field")  # a class (label) or an id, not a quantity
            else:
                kinds.add(f"numeric {kind}")
            class_values.append(v)
        if len(kinds) > 1:
            raise InputError(f"target {target!r} is of different kinds in the zoo files: {sorted(kinds)}")
        kind = kinds.pop()
        if task == "auto":
            task = "classification" if kind in ("string", "integer signal field") else "regression"
        if task == "regression" and kind == "string":
            raise InputError(f"target {target!r} has string values; it needs task 'classification' or 'auto'")
        if task == "classification" and kind == "metric":
            raise InputError(f"target {target!r} is a metric (a number per checkpoint); use task 'regression'")
        self.task_type: str = task
        self._class_values = np.unique(np.concatenate(class_values)) if task == "classification" else None
        self.class_names: list[str] | None = (None if self._class_values is None
                                              else [str(v) for v in self._class_values])
        self.num_outputs: int = 1 if task == "regression" else len(self.class_names)
        self.target_normalizer: TargetNormalizer | None = None

    def _on_load(self) -> None:
        super()._on_load()
        values = self.item_values(self.target)
        if self.task_type == "classification":
            self._targets = torch.as_tensor(np.searchsorted(self._class_values, values.astype(self._class_values.dtype)),
                                            dtype=torch.long)
        else:
            y = np.asarray(values, dtype=np.float64)
            if not np.isfinite(y).all():
                raise InputError(f"target {self.target!r} is not finite for {int((~np.isfinite(y)).sum())} "
                                 f"checkpoints of done models")
            self._targets = torch.as_tensor(y, dtype=torch.float32)

    def _extras(self) -> list[Tensor]:
        return [self._targets]

    def _fit_normalizers(self, train: Tensor) -> None:
        super()._fit_normalizers(train)
        self.target_normalizer = TargetNormalizer()
        if self.task_type == "regression":
            self.target_normalizer.fit(self._targets[train])

    def normalizers(self) -> dict[str, torch.nn.Module]:
        return {**super().normalizers(), "target_normalizer": self.target_normalizer}

    def items(self, split: str) -> dict[str, Any]:
        """Run ids, epochs and targets of a split's items, in loader order (unshuffled)."""
        out = super().items(split)
        out["targets"] = self._targets[self._split_items[split]]
        return out

    def _info_header(self) -> list[str]:
        classes = f", classes {self.class_names}" if self.class_names else ""
        return [f"target      {self.target} ({self.task_type}{classes})"]

    def _describe_split(self, split: str) -> str:
        idx = self._split_items[split]
        y = self._targets[idx]
        if not len(idx):
            return ""
        if self.task_type == "regression":
            return (f"   {self.target} mean {y.mean():.4g} std {y.std(unbiased=False):.4g} "
                    f"min {y.min():.4g} max {y.max():.4g}")
        counts = torch.bincount(y, minlength=self.num_outputs).tolist()
        return "   " + ", ".join(f"{n} {c}" for n, c in zip(self.class_names, counts))
