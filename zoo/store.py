"""The zoo file: one HDF5 file per zoo (or per shard). This module is its only reader and writer.

Layout (format ``wsl-zoo``, version 1)::

    /                      attributes
        format             "wsl-zoo"
        format_version     1
        name               zoo name
        config             the normalised zoo config (JSON); config_hash its identity
        spec               the weight-space spec (JSON, see zoo.weight_space)
        task               the task's provenance (JSON: name, kind, options, split sizes, ...)
        checkpoint_epochs  int [C]: the epochs whose weights are kept (0 = initialisation)
        metric_names, hparam_names
        shard_index, shard_count   this file's part of the zoo (0, 1 for a whole zoo)
        chunk_size         models trained at once (fixed when the file is made, so resumption
                           reproduces the same chunks)
        random_streams     how the trainer drew each model's random numbers: "hash32-v2" (keys
                           hashed from the model's seed: zoo.rng); older files have no such
                           attribute (torch generators per model, and dropout masks as recorded in
                           their "dropout_masks" attribute) and are not resumed by this version
        generated          only in zoos of generated networks (``wsl sample``): their provenance (JSON:
                           generator checkpoint and its sha256, conditions, guidance, seed, source
                           zoo, its train runs, ...); such a file's config is the source zoo's (its
                           task is rebuilt from it) and its config_hash starts with "generated-", so
                           no trained zoo's config can resume into it
        subset             only in zoos cut from another (``wsl zoo subset``, ``zoo.subset``): their
                           provenance (JSON: source path, its sha256 and config_hash, the
                           conditions, the checkpoint epoch they were read at); the config_hash of
                           such a file starts with "subset-", so generation never resumes into it
        imported           only in zoos read from other files (``wsl zoo import``,
                           ``wsl.interchange``): their provenance (JSON: format, sources, sha256
                           of each file or of their manifest, options, runs skipped and why); its
                           config_hash starts with "imported-" unless the zoo was exported from a
                           zoo file and keeps that one's
        merged             only in zoos of networks merged from runs of another (``wsl merge``,
                           ``wsl.merging``): their provenance (JSON: method, source zoo, runs,
                           options, choices made on validation data); config as for generated
                           zoos, config_hash starting with "merged-"
    /params/<param name>   float32 [M, C, *shape]; HDF5 chunk = 16 consecutive models at one
                           checkpoint (fewer for parameters over 64 KiB), uncompressed, with
                           fletcher32 checksums; NaN where never written (every other dataset is
                           chunked, gzip-compressed and checksummed too)
    /metrics/<metric>      float32 [M, C]: train/val/test loss and accuracy (or the task's metric)
    /hparams/<name>        [M] float64, int64 or fixed-length UTF-8 strings: the model's hyperparameters
    /models/index          int64 [M]: global model index, also the run id (one run = one model)
    /models/seed           uint32 [M]: the model's seed (init, subset, label noise, data order)
    /models/status         uint8 [M]: 0 pending, 1 done, 2 diverged (``STATUS_NAMES``)
    /models/diverged_epoch int32 [M]: first epoch with NaN/inf, -1 if none
    /annotations/<name>    float32 [M], optional: what was computed from the stored weights after
                           training (``wsl zoo annotate``, ``wsl.landscape``: Hessian trace, top
                           eigenvalue, CKA), NaN for runs not annotated; attribute ``info`` (JSON:
                           the checkpoint epoch, estimator and its options; ``"population":
                           true`` where a run's value depends on partners chosen among the file's
                           runs: CKA, LMC). Files without the group read as before (no annotations)
    /annotations/pairs/    optional (``wsl zoo annotate --lmc``, ``write_annotation_pairs``): one
                           row per pair of runs, [N] each: ``run_a``, ``run_b`` (int64 run ids, as
                           /models/index), ``kind`` (UTF-8: "same_hparams", partners whose
                           hyperparameters are equal, or "random"), and float32 measurements
                           (``loss_barrier``, ``acc_barrier``, ``loss_barrier_matched``,
                           ``acc_barrier_matched``; accuracy ones for classification only);
                           attribute ``info`` (JSON: checkpoint epoch, points, pairs per run, seed,
                           ...). Files without it read as before (no pairs)

INR zoos (one network fitted per signal, ``zoo.signals``) also hold what each model fits::

    /signals/coords        float32 [P, d_in]: the coordinates every signal is sampled at
    /signals/values        float32 [M, P, d_out]: the signal model m fits (its image, its wave)
    /signals/fields/<name> [M]: per-model facts about its signal: ``signal`` (which signal of the
                           task; the INRs of one signal share it), ``source_index`` (e.g. the
                           image's index in its IDX file), ``split`` (one of ``SPLITS``:
                           the signal's split), ``label`` (image class), ``frequency`` / ``phase`` (sines)
    attribute signal_fields  the field names (JSON); absent in ordinary zoos

Writes are crash-safe: the file is open only while a finished chunk is written, and a model's
status is set to done in the same flush as its weights, after them. A killed run leaves every
finished model readable; the same command resumes the pending ones.

Why this weight layout: reading one checkpoint of a whole zoo (what training a weight-space model
does first) costs one HDF5 chunk per 16 models, and HDF5 spends ~30 us per chunk; gzip saved only
~14% of trained weights' bytes and cost 4x the read time (scripts/bench_store_layout.py). A
corrupt chunk takes 16 models' weights at one checkpoint with it, and ``verify`` names each.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch

from .rng import STREAMS_VERSION
from .weight_space import WeightSpaceSpec
from .errors import InputError, OutOfRangeError, UnknownNameError

FORMAT = "wsl-zoo"
RANDOM_STREAMS = STREAMS_VERSION
FORMAT_VERSION = 1

# A model's status in /models/status. The codes are part of the file format: never renumber them.
STATUS_PENDING, STATUS_DONE, STATUS_DIVERGED = 0, 1, 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_DIVERGED: "diverged"}
# The data splits: of a task's examples (metrics "<split>_loss"), and of an INR zoo's signals
# (the "split" signal field), which weight-space learning splits its models by.
SPLITS = ("train", "val", "test")
# Metric-name suffix -> the range its values live in: accuracies (train_acc, val_acc, test_acc) are
# fractions of examples classified right.
METRIC_BOUNDS = {"_acc": (0.0, 1.0)}


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range a metric's values live in (``METRIC_BOUNDS``), or None when unbounded."""
    for suffix, bounds in METRIC_BOUNDS.items():
        if name.endswith(suffix):
            return bounds
    return None


class ZooFileError(InputError):
    """A zoo file is missing, not a zoo, of another config, truncated or corrupt."""


def _open(path: str | Path, mode: str = "r") -> h5py.File:
    path = Path(path)
    if mode == "r" and not path.exists():
        raise ZooFileError(f"{path}: zoo file not found")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        msg = str(e)
        if "truncated" in msg:
            raise ZooFileError(f"{path}: file is truncated ({msg}); the zoo must be regenerated or "
                               f"the missing bytes restored") from None
        if "signature" in msg:
            raise ZooFileError(f"{path}: not an HDF5 file ({msg})") from None
        if "lock" in msg:
            raise ZooFileError(f"{path}: file is locked by another process ({msg})") from None
        raise ZooFileError(f"{path}: cannot open: {msg}") from None


def _check_format(f: h5py.File, path) -> None:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise ZooFileError(f"{path}: not a wsl zoo file (attribute 'format' is {fmt!r}, expected {FORMAT!r})")
    ver = int(f.attrs.get("format_version", -1))
    if ver != FORMAT_VERSION:
        raise ZooFileError(f"{path}: zoo format version {ver}, this wsl reads version {FORMAT_VERSION}")


def create_zoo(path: str | Path, *, name: str, config_json: str, config_hash: str, spec: WeightSpaceSpec,
               task_info: dict[str, Any], checkpoint_epochs: list[int], metric_names: list[str],
               indices: np.ndarray, seeds: np.ndarray, hparams: dict[str, list], chunk_size: int,
               shard: tuple[int, int] = (0, 1), signals: dict[str, Any] | None = None,
               random_streams: str = RANDOM_STREAMS, generated: dict[str, Any] | None = None,
               subset: dict[str, Any] | None = None, imported: dict[str, Any] | None = None,
               merged: dict[str, Any] | None = None) -> None:
    """Make an empty zoo file (every model pending) atomically: written beside, then renamed.
    ``signals`` (INR zoos): ``{"coords": [P, d], "values": [M, P, d_out], "fields": {name: [M]}}``.
    ``generated``: the provenance of generated networks, stored as the ``generated`` attribute;
    ``subset``: that of a zoo cut from another, stored as the ``subset`` attribute; ``imported``:
    that of networks read from other files (``wsl zoo import``), as the ``imported`` attribute;
    ``merged``: that of networks merged from runs of a zoo (``wsl merge``), as the ``merged`` attribute."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    M, C = len(indices), len(checkpoint_epochs)
    with h5py.File(tmp, "w") as f:
        f.attrs.update({
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "config": config_json,
            "config_hash": config_hash, "spec": spec.to_json(), "task": json.dumps(task_info, sort_keys=True, default=str),
            "checkpoint_epochs": np.asarray(checkpoint_epochs, dtype=np.int64),
            "metric_names": json.dumps(metric_names), "hparam_names": json.dumps(sorted(hparams)),
            "shard_index": shard[0], "shard_count": shard[1], "chunk_size": int(chunk_size),
            "random_streams": random_streams,
        })
        if generated is not None:
            f.attrs["generated"] = json.dumps(generated, sort_keys=True, default=json_value)
        if subset is not None:
            f.attrs["subset"] = json.dumps(subset, sort_keys=True, default=json_value)
        if imported is not None:
            f.attrs["imported"] = json.dumps(imported, sort_keys=True, default=json_value)
        if merged is not None:
            f.attrs["merged"] = json.dumps(merged, sort_keys=True, default=json_value)
        g = f.create_group("params")
        for p in spec.params:
            g.create_dataset(p.name, shape=(M, C, *p.shape), dtype="f4",
                             chunks=(models_per_chunk(M, p.numel), 1, *p.shape), fletcher32=True, fillvalue=np.nan)
        g = f.create_group("metrics")
        for m in metric_names:
            _small_dataset(g, m, np.full((M, C), np.nan, dtype=np.float32))
        g = f.create_group("hparams")
        for k, vals in hparams.items():
            _column(g, k, vals)
        if signals is not None:
            g = f.create_group("signals")
            coords = np.asarray(signals["coords"], dtype=np.float32)
            values = np.asarray(signals["values"], dtype=np.float32)
            if values.shape[:2] != (M, coords.shape[0]):
                raise InputError(f"signals: values of shape {values.shape}, expected [{M}, {coords.shape[0]}, d_out]")
            _small_dataset(g, "coords", coords)
            g.create_dataset("values", data=values, chunks=(min(M, 256), *values.shape[1:]), compression="gzip",
                             compression_opts=1, shuffle=True, fletcher32=True)
            fg = g.create_group("fields")
            for k, vals in signals["fields"].items():
                _column(fg, k, list(vals))
            f.attrs["signal_fields"] = json.dumps(sorted(signals["fields"]))
        g = f.create_group("models")
        _small_dataset(g, "index", np.asarray(indices, dtype=np.int64))
        _small_dataset(g, "seed", np.asarray(seeds, dtype=np.uint32))
        _small_dataset(g, "status", np.full(M, STATUS_PENDING, dtype=np.uint8))
        _small_dataset(g, "diverged_epoch", np.full(M, -1, dtype=np.int32))
    os.replace(tmp, path)


def json_value(v: Any) -> Any:
    """numpy (or torch) scalars and arrays, e.g. model indices, and paths as plain JSON values, not
    their repr (``json.dumps(..., default=json_value)``)."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} {v!r} is not JSON-serialisable")


#: Models per HDF5 chunk of a weight dataset, and the most bytes a chunk should hold.
MODELS_PER_CHUNK = 16
MAX_CHUNK_BYTES = 2 ** 20


def models_per_chunk(models: int, numel: int) -> int:
    """Models in one HDF5 chunk of a parameter with ``numel`` elements per model."""
    return max(1, min(MODELS_PER_CHUNK, models, MAX_CHUNK_BYTES // (4 * max(1, numel))))


def _column(group: h5py.Group, name: str, vals: list) -> None:
    """A per-model column: UTF-8 strings, int64 or float64 by the values' type."""
    vals = [v.item() if isinstance(v, np.generic) else v for v in vals]
    if all(isinstance(v, str) for v in vals):
        width = max(1, max((len(v.encode()) for v in vals), default=1))
        _small_dataset(group, name, np.asarray([v.encode() for v in vals], dtype=f"S{width}"))  # UTF-8 bytes
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        _small_dataset(group, name, np.asarray(vals, dtype=np.int64))
    else:
        _small_dataset(group, name, np.asarray(vals, dtype=np.float64))


def _read_column(ds: h5py.Dataset) -> np.ndarray:
    return ds.asstr("utf-8")[()] if h5py.check_string_dtype(ds.dtype) else ds[()]


def _small_dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """Per-model metadata: chunked with checksums like the weights, so corruption is detected."""
    chunks = (min(len(data), 65536), *data.shape[1:])
    group.create_dataset(name, data=data, chunks=chunks, compression="gzip",
                         compression_opts=1, shuffle=True, fletcher32=True)


def write_annotations(path: str | Path, values: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Write (or replace) per-run annotations ``name -> [M]`` into ``/annotations`` with ``info``
    (JSON) as each one's attribute; every other dataset of the file is left as it is."""
    with _open(path, "a") as f:
        _check_format(f, path)
        M = f["models/index"].shape[0]
        g = f.require_group("annotations")
        for name, vals in values.items():
            vals = np.asarray(vals, dtype=np.float32)
            if vals.shape != (M,) or not name or "/" in name or name == PAIRS:
                raise InputError(f"{path}: annotation {name!r}: expected a name without '/' (not {PAIRS!r}) and [{M}] values, "
                                 f"found shape {list(vals.shape)}")
            if name in g:
                del g[name]
            _small_dataset(g, name, vals)
            g[name].attrs["info"] = json.dumps(info, sort_keys=True, default=json_value)


#: The group of per-pair annotations under /annotations, and its columns other than measurements.
PAIRS = "pairs"
PAIR_KEYS = ("run_a", "run_b", "kind")


def write_annotation_pairs(path: str | Path, columns: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Write (or replace) the per-pair annotations ``/annotations/pairs``: ``run_a``, ``run_b`` (run
    ids), ``kind`` (strings) and float measurements, [N] each, with ``info`` (JSON) as the group's
    attribute; every other dataset of the file is left as it is."""
    missing = [k for k in PAIR_KEYS if k not in columns]
    n = {len(np.asarray(v)) for v in columns.values()}
    if missing or len(n) != 1:
        raise InputError(f"{path}: annotation pairs: expected columns {list(PAIR_KEYS)} and measurements of one "
                         f"length, found columns {sorted(columns)} of lengths {sorted(n)}")
    with _open(path, "a") as f:
        _check_format(f, path)
        index = set(f["models/index"][()].tolist())
        runs = np.concatenate([np.asarray(columns["run_a"]), np.asarray(columns["run_b"])]).astype(np.int64)
        stray = sorted(set(runs.tolist()) - index)
        if stray:
            raise InputError(f"{path}: annotation pairs name runs {stray[:5]} that the file does not hold")
        g = f.require_group("annotations")
        if PAIRS in g:
            del g[PAIRS]
        pg = g.create_group(PAIRS)
        for name, vals in columns.items():
            if name == "kind":
                enc = [str(v).encode() for v in vals]
                data = np.asarray(enc, dtype=f"S{max([1, *map(len, enc)])}")  # UTF-8 bytes
            else:
                data = np.asarray(vals, dtype=np.int64 if name in ("run_a", "run_b") else np.float32)
            if len(data):
                _small_dataset(pg, name, data)
            else:
                pg.create_dataset(name, data=data)
        pg.attrs["info"] = json.dumps(info, sort_keys=True, default=json_value)


def write_models(path: str | Path, rows: np.ndarray, params: dict[str, np.ndarray], metrics: dict[str, np.ndarray],
                 status: np.ndarray, diverged_epoch: np.ndarray) -> None:
    """Write finished models at file rows ``rows`` (sorted); their status last, in the same flush."""
    rows = np.asarray(rows)
    order = np.argsort(rows)
    rows = rows[order]
    runs = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1) if len(rows) else []
    with _open(path, "a") as f:
        for name, arr in params.items():
            ds = f["params"][name]
            for run in runs:  # consecutive rows in one write: each HDF5 chunk is written once
                ds[rows[run[0]]:rows[run[-1]] + 1] = arr[order[run]]
        for name, arr in metrics.items():
            f["metrics"][name][rows] = arr[order]
        f["models/diverged_epoch"][rows] = diverged_epoch[order]
        f.flush()
        f["models/status"][rows] = status[order]
        f.flush()


class Zoo:
    """Read access to a zoo file.

    ``len(zoo)`` counts every model of the file; ``zoo.done`` says which ones finished (pending and
    diverged ones are in the file too). Weights come as per-layer tensors, as ``state_dict``s
    loadable by ``zoo.architectures.TorchNet``, or in batches. A checkpoint is read into memory
    whole on its first ``batch`` (while the cached checkpoints stay under ``cache_mb``), so random
    batches are memory indexing; ``cache_mb=0`` reads every batch from the file.
    """

    def __init__(self, path: str | Path, cache_mb: float = 1024):
        self.path = Path(path)
        self.cache_bytes = cache_mb * 2 ** 20  # checkpoints up to this size in all are kept in memory
        self.file = _open(self.path)
        _check_format(self.file, self.path)
        a = self.file.attrs
        self.name = str(a["name"])
        self.config = json.loads(a["config"])
        self.config_hash = str(a["config_hash"])
        self.spec = WeightSpaceSpec.from_json(a["spec"])
        self.task = json.loads(a["task"])
        self.checkpoint_epochs = [int(e) for e in a["checkpoint_epochs"]]
        self.metric_names = json.loads(a["metric_names"])
        self.hparam_names = json.loads(a["hparam_names"])
        self.signal_names: list[str] = json.loads(a.get("signal_fields", "[]"))
        self.annotation_names: list[str] = sorted(
            k for k, v in self.file["annotations"].items() if isinstance(v, h5py.Dataset)) if "annotations" in self.file else []
        self.shard = (int(a["shard_index"]), int(a["shard_count"]))
        self.chunk_size = int(a["chunk_size"])
        self.random_streams = random_streams_of(a)
        self.index = self.file["models/index"][()]
        self.seed = self.file["models/seed"][()]
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._uncacheable: set[int] = set()  # checkpoints with an unreadable chunk: read row by row
        self._param_datasets: dict[str, h5py.Dataset] | None = None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Zoo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (f"Zoo({str(self.path)!r}, {self.spec.architecture} on {self.task.get('name')}, {len(self)} models, "
                f"{int(self.done.sum())} done, checkpoints at epochs {self.checkpoint_epochs})")

    @property
    def status(self) -> np.ndarray:
        return self.file["models/status"][()]

    @property
    def generated(self) -> dict[str, Any] | None:
        """The provenance of a zoo of generated networks (``wsl sample``); None for a trained zoo."""
        text = self.file.attrs.get("generated")
        return None if text is None else json.loads(text)

    @property
    def subset(self) -> dict[str, Any] | None:
        """The provenance of a zoo cut from another (``wsl zoo subset``); None for any other zoo."""
        text = self.file.attrs.get("subset")
        return None if text is None else json.loads(text)

    @property
    def imported(self) -> dict[str, Any] | None:
        """Where an imported zoo's networks came from (``wsl zoo import``: format, sources, file
        digests, options); None for a zoo trained or generated here."""
        text = self.file.attrs.get("imported")
        return None if text is None else json.loads(text)

    @property
    def merged(self) -> dict[str, Any] | None:
        """The provenance of a zoo of merged networks (``wsl merge``: method, source zoo, runs,
        options); None for any other zoo."""
        text = self.file.attrs.get("merged")
        return None if text is None else json.loads(text)

    @property
    def done(self) -> np.ndarray:
        """True for models trained to the end without diverging."""
        return self.status == STATUS_DONE

    @property
    def diverged_epoch(self) -> np.ndarray:
        return self.file["models/diverged_epoch"][()]

    def checkpoint_position(self, checkpoint: int) -> int:
        """Normalise a checkpoint position (``-1`` = last); ``epoch_position`` maps epochs to positions."""
        C = len(self.checkpoint_epochs)
        if not -C <= checkpoint < C:
            raise OutOfRangeError(f"{self.path}: checkpoint position {checkpoint} out of range for {C} checkpoints "
                             f"(epochs {self.checkpoint_epochs})")
        return checkpoint % C

    def epoch_position(self, epoch: int) -> int:
        if epoch not in self.checkpoint_epochs:
            raise UnknownNameError(f"{self.path}: no checkpoint at epoch {epoch}; stored epochs: {self.checkpoint_epochs}")
        return self.checkpoint_epochs.index(epoch)

    def metric(self, name: str) -> np.ndarray:
        """[M, C] values of a metric."""
        if name not in self.metric_names:
            raise UnknownNameError(f"{self.path}: no metric {name!r}; stored metrics: {self.metric_names}")
        return self.file["metrics"][name][()]

    def hparam(self, name: str) -> np.ndarray:
        """[M] values of a hyperparameter (strings for categorical ones)."""
        if name not in self.hparam_names:
            raise UnknownNameError(f"{self.path}: no hyperparameter {name!r}; stored: {self.hparam_names}")
        return _read_column(self.file["hparams"][name])

    @property
    def is_inr(self) -> bool:
        """True for INR zoos: each model fits its own signal (``/signals``)."""
        return "signals" in self.file

    def signal(self, name: str) -> np.ndarray:
        """[M] values of a signal field of an INR zoo (``label``, ``split``, ``frequency``, ...)."""
        if name not in self.signal_names:
            raise UnknownNameError(f"{self.path}: no signal field {name!r}; stored: {self.signal_names}"
                           + ("" if self.is_inr else " (not an INR zoo)"))
        return _read_column(self.file["signals/fields"][name])

    def signal_coords(self) -> torch.Tensor:
        """[P, d_in] coordinates of an INR zoo's signals."""
        if not self.is_inr:
            raise UnknownNameError(f"{self.path}: not an INR zoo (no /signals)")
        return torch.from_numpy(self.file["signals/coords"][()])

    def signal_values(self, rows=None) -> torch.Tensor:
        """[k, P, d_out] the signals that models ``rows`` fit (default: every model's, [M, P, d_out])."""
        if not self.is_inr:
            raise UnknownNameError(f"{self.path}: not an INR zoo (no /signals)")
        if rows is None:  # one contiguous read; a list of every row would be a slow point selection
            return torch.from_numpy(self.file["signals/values"][()])
        uniq, inverse = self._rows(rows)
        return torch.from_numpy(self.file["signals/values"][uniq][inverse])

    def column(self, name: str, checkpoint: int = -1) -> np.ndarray:
        """[M] values of a metric (at a checkpoint position), hyperparameter or signal field."""
        if name in self.metric_names:
            return self.file["metrics"][name][:, self.checkpoint_position(checkpoint)]
        if name in self.hparam_names:
            return self.hparam(name)
        if name in self.signal_names:
            return self.signal(name)
        if name in self.annotation_names:
            return self.annotation(name)
        raise UnknownNameError(f"{self.path}: {name!r} is neither a metric {self.metric_names}, a hyperparameter "
                       f"{self.hparam_names}" + (f", a signal field {self.signal_names}" if self.signal_names else "")
                       + (f" nor an annotation {self.annotation_names}" if self.annotation_names else ""))

    def annotation(self, name: str) -> np.ndarray:
        """[M] float32 values of an annotation (``write_annotations``), NaN for runs not annotated."""
        if name not in self.annotation_names:
            raise UnknownNameError(f"{self.path}: no annotation {name!r}; annotations: {self.annotation_names or 'none'}")
        return self.file["annotations"][name][()]

    def annotation_info(self, name: str) -> dict[str, Any]:
        """How an annotation was computed (its ``info`` attribute)."""
        self.annotation(name)  # validates the name
        return json.loads(self.file["annotations"][name].attrs.get("info", "{}"))

    @property
    def annotation_pairs(self) -> dict[str, np.ndarray] | None:
        """The per-pair annotations (``write_annotation_pairs``): column -> [N]; None where the file has none."""
        if "annotations" not in self.file or PAIRS not in self.file["annotations"]:
            return None
        g = self.file["annotations"][PAIRS]
        return {k: _read_column(g[k]) for k in g}

    @property
    def annotation_pairs_info(self) -> dict[str, Any] | None:
        """How the per-pair annotations were computed (the group's ``info``); None where there are none."""
        if "annotations" not in self.file or PAIRS not in self.file["annotations"]:
            return None
        return json.loads(self.file["annotations"][PAIRS].attrs.get("info", "{}"))

    def select(self, *, status: str | None = "done", checkpoint: int = -1, **conditions) -> np.ndarray:
        """File rows of the models that meet every condition, e.g.
        ``zoo.select(test_acc=(0.5, None), optimizer="adam")``: a metric at ``checkpoint`` or a
        hyperparameter or signal field, compared to a value, a set of values or a (low, high) range (None = open)."""
        keep = np.ones(len(self), dtype=bool)
        if status is not None:
            codes = {v: k for k, v in STATUS_NAMES.items()}
            if status not in codes:
                raise InputError(f"status must be one of {list(codes)} or None, found {status!r}")
            keep &= self.status == codes[status]
        for name, cond in conditions.items():
            vals = self.column(name, checkpoint)
            if isinstance(cond, tuple) and len(cond) == 2:
                lo, hi = cond
                if lo is not None:
                    keep &= vals >= lo
                if hi is not None:
                    keep &= vals <= hi
            elif isinstance(cond, (list, set)):
                keep &= np.isin(vals, list(cond))
            else:
                keep &= vals == cond
        return np.flatnonzero(keep)

    def _rows(self, rows) -> tuple[np.ndarray, np.ndarray]:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise OutOfRangeError(f"{self.path}: model rows must lie in [0, {len(self)}), found {rows.min()}..{rows.max()}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        return uniq, inverse

    def batch(self, rows, checkpoint: int = -1) -> dict[str, torch.Tensor]:
        """Weights of models ``rows`` at a checkpoint position: name -> tensor [k, *shape]."""
        c = self.checkpoint_position(checkpoint)
        uniq, inverse = self._rows(rows)  # validates rows: a negative row must not wrap around
        checkpoint_bytes = 4 * len(self) * self.spec.num_params
        if (c not in self._cache and c not in self._uncacheable
                and (len(self._cache) + 1) * checkpoint_bytes <= self.cache_bytes):
            # Random reads of one-model HDF5 chunks cost ~60 us each; a whole checkpoint reads at
            # disk speed, after which batches are memory indexing.
            try:
                self.load(c)
            except ZooFileError:
                self._uncacheable.add(c)
        if c in self._cache:
            rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
            return {n: torch.from_numpy(a[rows]) for n, a in self._cache[c].items()}
        out = {}
        for p in self.spec.params:
            if not len(uniq):
                arr = np.zeros((0, *p.shape), np.float32)
            else:
                try:
                    arr = self.file["params"][p.name][uniq, c]
                except OSError:
                    raise self._unreadable(p.name, uniq) from None
            out[p.name] = torch.from_numpy(np.ascontiguousarray(arr[inverse]))
        return out

    def _unreadable(self, name: str, rows: np.ndarray) -> ZooFileError:
        """The error for a failed read: find the model whose chunk is corrupt and name it."""
        ds = self.file["params"][name]
        for r in rows:
            try:
                ds[int(r)]
            except OSError:
                return ZooFileError(f"{self.path}: model {int(self.index[r])} (row {int(r)}), parameter {name}: "
                                    f"unreadable (checksum or decompression failure); see wsl zoo verify")
        return ZooFileError(f"{self.path}: parameter {name}: unreadable; see wsl zoo verify")

    def read_params(self, rows) -> dict[str, np.ndarray]:
        """Weights of models ``rows`` at every checkpoint, as stored: name -> [k, C, *shape] float32,
        NaN where never written. For copying models between files (``zoo.merge``); training
        reads one checkpoint through ``batch``."""
        uniq, inverse = self._rows(rows)
        out = {}
        for p in self.spec.params:
            try:
                out[p.name] = _read_rows(self.file["params"][p.name], uniq, inverse)
            except OSError:
                raise self._unreadable(p.name, uniq) from None
        return out

    def read_slice(self, start: int, stop: int, checkpoint: int = -1) -> dict[str, np.ndarray]:
        """Weights of the consecutive rows ``[start, stop)`` at one checkpoint position, as stored:
        name -> [stop - start, *shape]. One hyperslab per parameter, the read that streaming
        DataModules make (rows aligned to ``MODELS_PER_CHUNK`` touch one HDF5 chunk each)."""
        c = self.checkpoint_position(checkpoint)
        if not 0 <= start <= stop <= len(self):
            raise OutOfRangeError(f"{self.path}: rows [{start}, {stop}) out of range for {len(self)} models")
        if self._param_datasets is None:  # looking a dataset up by name costs as much as a small read
            self._param_datasets = {p.name: self.file["params"][p.name] for p in self.spec.params}
        out = {}
        for p in self.spec.params:
            try:
                out[p.name] = self._param_datasets[p.name][start:stop, c]
            except OSError:
                raise self._unreadable(p.name, np.arange(start, stop)) from None
        return out

    def read_metrics(self, rows) -> dict[str, np.ndarray]:
        """Metrics of models ``rows`` at every checkpoint: name -> [k, C], NaN where never written."""
        uniq, inverse = self._rows(rows)
        return {m: _read_rows(self.file["metrics"][m], uniq, inverse) for m in self.metric_names}

    def clear_cache(self) -> None:
        """Free the whole checkpoints that ``batch`` and ``load`` keep in memory, for a caller that
        has copied the rows it needs; later reads load them again."""
        self._cache.clear()

    def params(self, row: int, checkpoint: int = -1) -> list[torch.Tensor]:
        """One model's parameters in ``spec.params`` order."""
        b = self.batch([row], checkpoint)
        return [b[p.name][0] for p in self.spec.params]

    def state_dict(self, row: int, checkpoint: int = -1) -> dict[str, torch.Tensor]:
        """One model's weights as a ``state_dict`` for ``TorchNet(zoo.spec)``."""
        return {k: v[0] for k, v in self.batch([row], checkpoint).items()}

    def load(self, checkpoint: int = -1) -> dict[str, np.ndarray]:
        """Read all weights of one checkpoint into memory; later ``batch`` calls index memory."""
        c = self.checkpoint_position(checkpoint)
        if c not in self._cache:
            arrays = {}
            for p in self.spec.params:
                try:
                    arrays[p.name] = self.file["params"][p.name][:, c]
                except OSError:
                    raise self._unreadable(p.name, np.arange(len(self))) from None
            self._cache[c] = arrays
        return self._cache[c]

    def summary(self) -> str:
        """A human-readable description: task, architecture, sizes, status, initialisation (for a
        generated zoo, its provenance instead: generator, request, source zoo), metric distribution,
        hyperparameters (a choice or grid as its values with their counts)."""
        status = self.status
        lines = [
            f"zoo        {self.name}  ({self.path})",
            f"task       {self.task.get('name')} ({self.task.get('kind')}, input {self.task.get('input_shape')}, "
            f"output {self.task.get('output_dim')})",
            f"arch       {self.spec.architecture}: " + " -> ".join(
                f"{l.name} {l.kind} {l.in_features}->{l.out_features}" for l in self.spec.layers)
            + f", activation {self.spec.activation or 'per model'}",
            f"params     {self.spec.num_params} per model",
            f"models     {len(self)} ("
            + ", ".join(f"{int((status == c).sum())} {STATUS_NAMES[c]}"
                        for c in (STATUS_DONE, STATUS_DIVERGED, STATUS_PENDING))
            + ")" + (f", shard {self.shard[0]}/{self.shard[1]}" if self.shard[1] > 1 else ""),
            f"checkpts   epochs {self.checkpoint_epochs}",
        ]
        gen, merged = self.generated, self.merged
        if merged is not None:  # the source zoo's config: its init is not these networks'
            lines.append("merged     " + ", ".join(f"{k} {_short_value(v)}" for k, v in merged.items()
                                                   if k in ("method", "runs", "pretrained", "lambda", "source_zoo",
                                                            "checkpoint_epoch", "score_on")))
        elif gen is None and "imported" in self.file.attrs and "init" not in self.config:
            pass  # networks trained elsewhere: how they were initialised is not known
        elif gen is None and "from" in self.config.get("init", {}):
            init = self.config["init"]  # fine-tuned from a stored network
            lines.append(f"init       from {init['from']} run {init['run']} at checkpoint position {init['checkpoint']}")
        elif gen is None:
            init = self.config.get("init", {})  # zoos made before the field: independent, standard
            lines.append(f"init       {init.get('seeds', 'independent')} seeds, {init.get('scheme', 'standard')} "
                         "scheme" + (f", fitting stops at {self.config['task']['stop_psnr']} dB PSNR"
                                     if self.config.get("task", {}).get("stop_psnr") else ""))
        else:
            lines += _provenance_lines(gen)
        cut = self.subset
        if cut is not None:
            lines.append(f"subset     of {cut.get('source')} where " + (" and ".join(cut.get("where", [])) or "(no condition)")
                         + f", metrics at epoch {cut.get('checkpoint_epoch')}, status {cut.get('status')}")
        imp = self.imported
        if imp is not None:
            sources = ", ".join(map(str, imp.get("options", {}).get("sources", []))) or "?"
            lines.append(f"imported   {imp.get('format')} from {sources}: {imp.get('runs')} runs, {imp.get('files')} "
                         f"files (manifest sha256 {str(imp.get('manifest_sha256'))[:12]}), "
                         f"{imp.get('skipped_count', 0)} runs skipped")
        lines.append("metric at the last checkpoint over done models: min / 5% / median / 95% / max")
        done = self.done
        for m in self.metric_names:
            v = self.file["metrics"][m][:, -1][done]
            if len(v):
                q = np.quantile(v, [0, 0.05, 0.5, 0.95, 1])
                lines.append(f"  {m:<11}" + " / ".join(f"{x:.4g}" for x in q))
        for m in self.annotation_names:  # wsl zoo annotate: one value per run, NaN where not computed
            v = self.annotation(m)[done]
            v = v[~np.isnan(v)]
            if len(v):
                q = np.quantile(v, [0, 0.05, 0.5, 0.95, 1])
                lines.append(f"  {m + ' ':<17}" + " / ".join(f"{x:.4g}" for x in q)
                             + f" (annotation, epoch {self.annotation_info(m).get('checkpoint_epoch')})")
        pairs = self.annotation_pairs
        if pairs is not None:
            kinds = ", ".join(f"{c} {k}" for k, c in zip(*np.unique(pairs["kind"].astype(str), return_counts=True)))
            lines.append(f"  annotated pairs: {len(pairs['run_a'])} ({kinds or 'none'}), epoch "
                         f"{self.annotation_pairs_info.get('checkpoint_epoch')}, columns "
                         + ", ".join(k for k in pairs if k not in PAIR_KEYS))
        if self.hparam_names:
            # a generated zoo's per-model columns are the conditions each network was asked for
            lines.append("requested per network:" if gen is not None else "hyperparameters:")
        space = {} if gen is not None else self.config.get("hparams", {})
        for h in self.hparam_names:
            v = self.hparam(h)
            sampler = space.get(h)
            if v.dtype.kind in "OUS" or isinstance(sampler, dict) and ("choice" in sampler or "grid" in sampler):
                kind = next(iter(sampler)) if isinstance(sampler, dict) else None
                lines.append(_label(h) + _counts(v) + (f" ({kind})" if kind else ""))
            elif np.all(v == v[0]):
                lines.append(_label(h) + f"{v[0]:.4g} (fixed)")
            else:
                lines.append(_label(h) + f"{v.min():.4g} .. {v.max():.4g}")
        if self.is_inr:
            coords = self.file["signals/coords"]
            lines.append(f"signals    {coords.shape[0]} points in {coords.shape[1]}-D per model, "
                         f"shape {self.task.get('signal_shape')}, range {self.task.get('target_range')}")
            for h in self.signal_names:
                v = self.signal(h)
                if v.dtype.kind in "OUS" or (v.dtype.kind == "i" and len(np.unique(v)) <= 20):
                    lines.append(_label(h) + _counts(v))
                else:
                    lines.append(_label(h) + f"{v.min():.4g} .. {v.max():.4g}")
        return "\n".join(lines)

    def iter_batches(self, batch_size: int = 256, checkpoint: int = -1, rows=None, shuffle: bool = False,
                     seed: int = 0) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Yield (rows, weights) over ``rows`` (default: the done models) in batches."""
        rows = self.select() if rows is None else np.asarray(rows)
        if shuffle:
            rows = np.random.default_rng(seed).permutation(rows)
        for s in range(0, len(rows), batch_size):
            r = rows[s:s + batch_size]
            yield r, self.batch(r, checkpoint)


# the summary's lines of a generated zoo's provenance: (heading, keys in order); other keys follow
PROVENANCE_LINES = (("generated", ("generator", "generator_class", "conditions", "guidance", "seed", "steps", "eta")),
                    ("source", ("source_zoo", "select", "train_runs", "trained_on_checkpoints", "checkpoint_epoch")))


def _provenance_lines(gen: dict[str, Any]) -> list[str]:
    """What a generated zoo is, for ``Zoo.summary``: the generator and its request, then the source zoo."""
    if not gen:
        return ["generated  (no provenance recorded)"]
    shown = {k for _, keys in PROVENANCE_LINES for k in keys}
    groups = [*PROVENANCE_LINES, ("also", tuple(sorted(k for k in gen if k not in shown)))]
    lines = []
    for heading, keys in groups:
        parts = [f"{k} {'none (unconditional)' if k == 'conditions' and not gen[k] else _short_value(gen[k])}"
                 for k in keys if k in gen and (k == "conditions" or gen[k] not in ({}, [], None))]
        if parts:
            lines.append(f"{heading:<11}" + ", ".join(parts))
    return lines


def _label(name: str) -> str:
    """A summary row's name column: 14 wide, and at least one space before the value."""
    return f"  {name:<13} "


def _counts(v: np.ndarray) -> str:
    """Each distinct value with how many models have it (numbers in 4 digits)."""
    vals, counts = np.unique(v, return_counts=True)
    return ", ".join(f"{format(a, '.4g') if v.dtype.kind == 'f' else a} x{c}" for a, c in zip(vals, counts))


def _short_value(v: Any) -> str:
    """A provenance value for one summary line: long lists (train runs) by their length."""
    if isinstance(v, list) and len(v) > 8:
        return f"[{len(v)} values]"
    text = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_rows(ds: h5py.Dataset, uniq: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``ds[rows]`` for rows split by ``Zoo._rows``: h5py reads only increasing, distinct rows."""
    if not len(uniq):
        return np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
    arr = ds[uniq]
    return arr if np.array_equal(inverse, np.arange(len(uniq))) else arr[inverse]


def random_streams_of(attrs: Any) -> str:
    """How a file's models drew their random numbers (files before ``random_streams`` existed:
    torch generators per model, dropout masks per their ``dropout_masks`` attribute)."""
    if "random_streams" in attrs:
        return str(attrs["random_streams"])
    return f"torch-generators (dropout masks: {attrs.get('dropout_masks', 'generator-per-chunk')})"


def zoo_identity(path: str | Path) -> dict[str, Any]:
    """The attributes that decide whether a file belongs to a config: hash, shard, chunk size, status."""
    with _open(path) as f:
        _check_format(f, path)
        return {"config_hash": str(f.attrs["config_hash"]), "shard": (int(f.attrs["shard_index"]), int(f.attrs["shard_count"])),
                "chunk_size": int(f.attrs["chunk_size"]), "status": f["models/status"][()],
                "index": f["models/index"][()], "config": f.attrs["config"],
                "random_streams": random_streams_of(f.attrs)}
