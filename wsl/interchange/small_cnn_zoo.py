"""The Small CNN Zoo (Unterthiner et al. 2020) read as its own loaders read it.

One folder per dataset (``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn_cropped``) holds
``weights.npy`` (one row per checkpoint: every parameter of the network flattened), ``layout.csv``
(``varname, start_idx, end_idx, shape``: which columns hold which TensorFlow variable, and its
shape) and ``metrics.csv.gz`` (one row per checkpoint, the same order: ``modeldir``, ``step``,
accuracies and losses, and the run's ``config.*`` flags).

The networks are Keras models (google-research ``dnn_predict_accuracy/train_network.py``,
``build_cnn``): three ``Conv2D(16, 3, strides=2)`` with Keras' default ``padding='valid'``, global
average pooling, ``Dense(10)``, on one-channel (grayscale) images in [-1, 1]. Kernels are stored in
TensorFlow layout, flattened C-order: conv ``(kh, kw, cin, cout)``, dense ``(in, out)``; they are
transposed to PyTorch's ``(cout, cin, kh, kw)`` and ``(out, in)`` exactly as nfn's ``ZooDataset``
does (AllanYangZhou/nfn ``experiments/data_utils.py``), so an imported network computes what the
original did (the test holds our forward to a direct re-implementation of the Keras one).
Offsets come from ``layout.csv``, never from a hard-coded list; each layer's bias precedes its
kernel there.

Runs are the ``modeldir`` groups, checkpoints their ``step`` rows; ``test_accuracy`` becomes
``test_acc`` (and so on), the ``config.*`` columns the run's hyperparameters. nfn splits the final
checkpoints (``step == 86``) by a shuffled index file (its ``idcs_file``: second half test, first
half shuffled with ``random.Random(0)``, 80 % train); give that file as ``split_index`` to record
the same split per run.
"""
from __future__ import annotations

import csv
import gzip
import io
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from zoo.architectures import build_spec
from zoo.errors import InputError, MissingFileError
from zoo.weight_space import ACTIVATIONS

from .published import existing, hparam_record
from .records import ImportSource, ImportedCheckpoint, ImportedRun

NAME = "small-cnn-zoo"
WEIGHTS, LAYOUT, METRICS = "weights.npy", "layout.csv", ("metrics.csv.gz", "metrics.csv")
LAYOUT_COLUMNS = ("varname", "start_idx", "end_idx", "shape")
METRIC_NAMES = {"test_accuracy": "test_acc", "train_accuracy": "train_acc",
                "test_loss": "test_loss", "train_loss": "train_loss"}
CONFIG_PREFIX = "config."
# tfds dataset name -> image side (train_network.py loads them through tfds, grayscale)
IMAGE_SIDE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "svhn_cropped": 32}
OUR_TASK = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar10"}  # zoo.tasks' names
FINAL_STEP = 86  # nfn keeps these rows ("step" == 86 in metrics) and splits them
CNN_STRIDE = 2  # train_network.py's --cnn_stride default; the README's architecture


def _files(sources: list[Path]) -> dict[str, Path] | None:
    """The three files among the sources (a dataset folder, or the files themselves)."""
    found: dict[str, Path] = {}
    for s in sources:
        for p in (sorted(s.iterdir()) if s.is_dir() else [s]):
            if p.name == WEIGHTS:
                found["weights"] = p
            elif p.name == LAYOUT:
                found["layout"] = p
            elif p.name in METRICS and "metrics" not in found:
                found["metrics"] = p
    return found if len(found) == 3 else None


def detect(sources: list[Path]) -> bool:
    """A dataset folder (or its files) holding weights.npy, layout.csv and metrics.csv(.gz)."""
    try:
        return _files([Path(s) for s in sources]) is not None
    except OSError:
        return False


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """The rows of a CSV file (gzip-compressed where it ends in .gz), streamed: the header first."""
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            yield from csv.reader(text)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable {'gzip-compressed ' if path.suffix == '.gz' else ''}UTF-8 CSV "
                         f"file ({e})") from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    rows = _csv_rows(path)
    header = next(rows, [])
    return [dict(zip(header, r)) for r in rows]


@dataclass
class MetricsTable:
    """``metrics.csv.gz`` kept compact (270,000 rows): per row its run, step and metrics; per run
    the ``config.*`` values of its first row (they are the run's flags, equal on every row)."""

    path: Path
    modeldir: list[str]  # per row (the run's one string object)
    step: np.ndarray  # int64 [N]
    values: np.ndarray  # float64 [N, len(METRIC_NAMES)], NaN where empty
    config: dict[str, dict[str, Any]]  # modeldir -> {flag name without "config.": value}
    hparam_names: list[str]

    def __len__(self) -> int:
        return len(self.step)


def read_metrics(path: Path) -> MetricsTable:
    rows = _csv_rows(path)
    header = next(rows, [])
    missing = [c for c in ("modeldir", "step") if c not in header]
    if missing:
        raise InputError(f"{path}: expected columns modeldir and step, found {header}")
    col = {c: i for i, c in enumerate(header)}
    flags = [(c[len(CONFIG_PREFIX):], i) for c, i in col.items() if c.startswith(CONFIG_PREFIX)]
    metric_cols = [col.get(theirs) for theirs in METRIC_NAMES]
    runs: dict[str, str] = {}
    modeldir, step, values, config = [], [], [], {}
    for n, r in enumerate(rows):
        if len(r) != len(header):
            raise InputError(f"{path}: row {n + 1} has {len(r)} cells, the header {len(header)}")
        run = runs.setdefault(r[col["modeldir"]], r[col["modeldir"]])
        if run not in config:
            config[run] = {name: _value(r[i]) for name, i in flags}
        try:
            step.append(int(r[col["step"]]))
            values.append([float(r[i]) if i is not None and r[i] != "" else np.nan for i in metric_cols])
        except ValueError:
            raise InputError(f"{path}: row {n + 1}: step and metrics must be numbers, found "
                             f"{[r[col['step']], *(r[i] for i in metric_cols if i is not None)]}") from None
        modeldir.append(run)
    return MetricsTable(path, modeldir, np.asarray(step, np.int64),
                        np.asarray(values, np.float64).reshape(len(step), len(METRIC_NAMES)), config,
                        sorted(name for name, _ in flags))


def _shape(path: Path, text: str) -> tuple[int, ...]:
    """``(3, 3, 1, 16)`` as a tuple, parsed as data (nfn ``eval``s it; we do not)."""
    if not re.fullmatch(r"\s*\(\s*(\d+\s*,\s*)*\d*\s*\)\s*", text):
        raise InputError(f"{path}: column 'shape': expected a tuple of integers such as (3, 3, 1, 16), found {text!r}")
    return tuple(int(n) for n in re.findall(r"\d+", text))


def read_layout(path: Path) -> list[dict[str, Any]]:
    """The layers in the order they run: ``{"name", "kernel": (start, end, shape), "bias": ...}``."""
    rows = _read_csv(path)
    if not rows or any(c not in rows[0] for c in LAYOUT_COLUMNS):
        raise InputError(f"{path}: expected columns {list(LAYOUT_COLUMNS)}, found {list(rows[0]) if rows else 'none'}")
    layers: dict[str, dict[str, Any]] = {}
    for r in rows:
        var, shape = r["varname"], _shape(path, r["shape"])
        try:
            start, end = int(r["start_idx"]), int(r["end_idx"])
        except ValueError:
            raise InputError(f"{path}: {var}: start_idx/end_idx must be integers, found "
                             f"{r['start_idx']!r}, {r['end_idx']!r}") from None
        if end - start != int(np.prod(shape)):
            raise InputError(f"{path}: {var}: columns [{start}, {end}) hold {end - start} values, its shape "
                             f"{shape} needs {int(np.prod(shape))}")
        role = "kernel" if var.endswith("kernel:0") else "bias" if var.endswith("bias:0") else None
        if role is None:
            raise InputError(f"{path}: varname {var!r} is neither a kernel (…kernel:0) nor a bias (…bias:0)")
        layer = layers.setdefault(var.rsplit("/", 1)[0], {"name": var.rsplit("/", 1)[0]})
        layer[role] = (start, end, shape)
    for layer in layers.values():
        if "kernel" not in layer or "bias" not in layer:
            raise InputError(f"{path}: layer {layer['name']!r} lacks its "
                             f"{'kernel' if 'kernel' not in layer else 'bias'}")
    return sorted(layers.values(), key=lambda l: min(l["kernel"][0], l["bias"][0]))


def _architecture(path: Path, layers: list[dict[str, Any]]) -> tuple[int, list[int], int, int]:
    """(input channels, conv channels, kernel size, outputs) of a convs-then-one-dense layout."""
    convs = [l for l in layers if len(l["kernel"][2]) == 4]
    dense = [l for l in layers if len(l["kernel"][2]) == 2]
    if not convs or len(dense) != 1 or layers[-1] is not dense[0]:
        raise InputError(f"{path}: expected convolutions followed by one dense layer (the Small CNN Zoo's "
                         f"architecture), found layers {[(l['name'], l['kernel'][2]) for l in layers]}")
    kernels = {l["kernel"][2][:2] for l in convs}
    if len(kernels) != 1 or len({*next(iter(kernels))}) != 1:
        raise InputError(f"{path}: expected one square kernel size for every convolution, found {sorted(kernels)}")
    return convs[0]["kernel"][2][2], [l["kernel"][2][3] for l in convs], next(iter(kernels))[0], dense[0]["kernel"][2][1]


def to_torch_layout(kernel: np.ndarray) -> np.ndarray:
    """A TensorFlow kernel in PyTorch's layout: conv (kh, kw, cin, cout) -> (cout, cin, kh, kw),
    dense (in, out) -> (out, in)."""
    return kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T


def _value(text: str) -> Any:
    """A CSV cell as the number it spells, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _nfn_splits(path: Path, metrics: MetricsTable) -> dict[str, str]:
    """modeldir -> split, as nfn's ``ZooDataset._split_indices_iid`` assigns its final checkpoints."""
    order = []
    for line in path.read_text().split():
        try:
            order.append(int(line.split(",")[0]))
        except ValueError:
            raise InputError(f"{path}: expected one row index per line, found {line!r}") from None
    if sorted(order) != list(range(len(metrics))):
        raise InputError(f"{path}: expected a permutation of the {len(metrics)} rows of the metrics file, "
                         f"found {len(order)} indices")
    final = [i for i in order if metrics.step[i] == FINAL_STEP]
    half = int(0.5 * len(final))
    trainval = list(range(half))
    random.Random(0).shuffle(trainval)
    cut = int(0.8 * len(trainval))
    split = {p: "train" for p in trainval[:cut]} | {p: "val" for p in trainval[cut:]}
    return {metrics.modeldir[i]: split.get(p, "test") for p, i in enumerate(final)}


def open(sources: list[Path], split_index: str | Path | None = None, image_size: int | None = None) -> ImportSource:
    """The Small CNN Zoo folder ``sources`` as runs (one per ``modeldir``), read lazily from a
    memory-mapped ``weights.npy``. ``split_index``: nfn's shuffled index file, to record its split;
    ``image_size``: the input side where ``config.dataset`` is not one of the zoo's four."""
    sources = existing(sources)
    files = _files(sources)
    if files is None:
        raise MissingFileError(f"{', '.join(map(str, sources))}: expected a Small CNN Zoo folder with "
                               f"{WEIGHTS}, {LAYOUT} and metrics.csv.gz")
    layers = read_layout(files["layout"])
    cin, channels, kernel, outputs = _architecture(files["layout"], layers)
    try:
        weights = np.load(files["weights"], mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{files['weights']}: refused: not a plain numeric array ({e}); tensors only") from None
    metrics = read_metrics(files["metrics"])
    width = max(max(l["kernel"][1], l["bias"][1]) for l in layers)
    if weights.ndim != 2 or weights.shape[1] != width or weights.shape[0] != len(metrics):
        raise InputError(f"{files['weights']}: expected [{len(metrics)} rows (one per line of {files['metrics'].name}), "
                         f"{width} columns (layout.csv)], found {list(weights.shape)}")
    runs: dict[str, list[int]] = {}
    for i, run in enumerate(metrics.modeldir):
        runs.setdefault(run, []).append(i)
    activations = {c.get("activation") for c in metrics.config.values()}
    unknown = sorted(str(a) for a in activations if a is not None and a not in ACTIVATIONS)
    if unknown:
        raise InputError(f"{files['metrics']}: column config.activation: {unknown} is not an activation our weight "
                         f"spaces compute; expected one of {list(ACTIVATIONS)}")
    datasets = sorted({str(c.get("dataset", "")) for c in metrics.config.values()})
    dataset = datasets[0] if len(datasets) == 1 else ""
    side = image_size or IMAGE_SIDE.get(dataset)
    if side is None:
        raise InputError(f"{files['metrics']}: config.dataset {datasets} is not one of {sorted(IMAGE_SIDE)}; "
                         f"give the input side as image_size")
    activation = next(iter(activations)) if len(activations) == 1 else None
    spec = build_spec("cnn", (cin, side, side), outputs, channels=channels, kernel=kernel, stride=CNN_STRIDE,
                      padding=0, activation=activation)
    splits = _nfn_splits(Path(split_index), metrics) if split_index is not None else {}
    steps = sorted(set(metrics.step.tolist()))
    config = {
        "name": f"small-cnn-zoo-{dataset}",
        "task": {"name": OUR_TASK.get(dataset, dataset), "dataset": dataset, "kind": "classification", "input_shape": [cin, side, side], "output_dim": outputs,
                 "layout": "image", "grayscale": True, "input_range": [-1.0, 1.0],
                 "source": "Small CNN Zoo (Unterthiner et al. 2020)"},
        "architecture": {"name": "cnn", "channels": channels, "kernel": kernel, "stride": CNN_STRIDE, "padding": 0,
                         "activation": activation},
        "hparams": hparam_record(metrics.hparam_names),
        "checkpoints": steps,
    }

    def stream() -> Iterator[ImportedRun]:
        for modeldir, rows in runs.items():
            rows = sorted(rows, key=lambda i: metrics.step[i])
            hparams = dict(metrics.config[modeldir])
            seed = hparams.get("random_seed")
            yield ImportedRun(
                run=modeldir, checkpoints=[_checkpoint(files["weights"], weights, layers, metrics, i) for i in rows],
                hparams=hparams, split=splits.get(modeldir), seed=seed if isinstance(seed, int) else None,
                activation=hparams.get("activation"), source=f"{files['metrics']}: modeldir {modeldir}")

    options = {"sources": [str(s) for s in sources], "split_index": None if split_index is None else str(split_index),
               "image_size": image_size}
    return ImportSource(format=NAME, runs=stream(), spec=spec, config=config, count=len(runs),
                        files=[files["weights"], files["layout"], files["metrics"]]
                        + ([Path(split_index)] if split_index is not None else []),
                        name=config["name"], task=config["task"], options=options)


def _checkpoint(path: Path, weights: np.ndarray, layers: list[dict[str, Any]], metrics: MetricsTable,
                i: int) -> ImportedCheckpoint:
    """Row ``i`` of weights.npy as PyTorch-layout tensors named ``<tf layer>.weight`` / ``.bias``."""
    flat = np.asarray(weights[i], dtype=np.float32)
    tensors = {}
    for layer in layers:
        (ks, ke, kshape), (bs, be, bshape) = layer["kernel"], layer["bias"]
        tensors[f"{layer['name']}.weight"] = torch.from_numpy(np.ascontiguousarray(to_torch_layout(flat[ks:ke].reshape(kshape))))
        tensors[f"{layer['name']}.bias"] = torch.from_numpy(flat[bs:be].reshape(bshape).copy())
    values = {ours: float(v) for ours, v in zip(METRIC_NAMES.values(), metrics.values[i]) if not np.isnan(v)}
    return ImportedCheckpoint(epoch=int(metrics.step[i]), tensors=tensors, metrics=values, source=f"{path}: row {i}")
