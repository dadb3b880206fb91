"""Tasks: the small in-memory datasets that populations of networks are trained on.

Every loader returns a ``TaskData`` with fixed, seeded train/val/test splits, so that two zoos
built with the same options saw exactly the same examples. Inputs are standardised with one mean
and one standard deviation computed on the training split only (a single scalar keeps image
structure intact and never divides by the zero variance of always-blank border pixels).

Nothing here downloads anything: digits ship with scikit-learn, MNIST-1D is generated offline,
``sine`` is procedural, MNIST / Fashion-MNIST are read from local IDX files and CIFAR-10 from the
local batches of its binary version.

``TASKS`` is a plain dict from task name to loader, so other modules can register more tasks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .store import SPLITS
from .errors import InputError, MissingFileError

LAYOUTS = ("flat", "image")


@dataclass(eq=False, repr=False)
class TaskData:
    """One task's three splits plus the metadata a model and a zoo file need."""

    name: str
    kind: str  # "classification" or "regression"
    input_shape: tuple[int, ...]  # per-example shape
    output_dim: int  # number of classes, or regression output size
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)  # provenance; JSON-serialisable values

    def __post_init__(self) -> None:
        # Catch a malformed task where it is built, not deep inside a training loop.
        if self.kind not in ("classification", "regression"):
            raise InputError(f"task {self.name!r}: kind must be 'classification' or 'regression', got {self.kind!r}")
        self.input_shape = tuple(int(d) for d in self.input_shape)
        for split in SPLITS:
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if tuple(x.shape[1:]) != self.input_shape:
                raise InputError(f"task {self.name!r}: x_{split} has shape {tuple(x.shape)}, "
                                 f"expected [N, {', '.join(map(str, self.input_shape))}]")
            if y.shape[0] != x.shape[0]:
                raise InputError(f"task {self.name!r}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}")
            if self.kind == "classification" and (y.dtype != torch.int64 or y.dim() != 1):
                raise InputError(f"task {self.name!r}: y_{split} must be int64 [N] for classification")
            if self.kind == "regression" and (y.dtype != torch.float32 or tuple(y.shape[1:]) != (self.output_dim,)):
                raise InputError(f"task {self.name!r}: y_{split} must be float32 [N, {self.output_dim}] for regression")

    @property
    def num_classes(self) -> int | None:
        return self.output_dim if self.kind == "classification" else None

    def to(self, device: torch.device | str) -> "TaskData":
        """A copy with every tensor on ``device`` (info is shared, not copied)."""
        moved = {f"{p}_{s}": getattr(self, f"{p}_{s}").to(device) for p in ("x", "y") for s in SPLITS}
        return dataclasses.replace(self, **moved)

    def __repr__(self) -> str:
        # The default repr would print every tensor and every split index.
        sizes = "/".join(str(getattr(self, f"x_{s}").shape[0]) for s in SPLITS)
        return (f"TaskData(name={self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
                f"output_dim={self.output_dim}, train/val/test={sizes})")


# ----------------------------------------------------------------------------------------------
# Shared helpers

def _check_int(task: str, option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"task {task!r}: option {option!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_layout(task: str, layout: Any) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"task {task!r}: option 'layout' must be one of {LAYOUTS}, got {layout!r}")


def _split_indices(task: str, n_total: int, n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets drawn from one seeded permutation of ``range(n_total)``."""
    if n_train + n_val + n_test > n_total:
        raise InputError(f"task {task!r}: n_train={n_train} + n_val={n_val} + n_test={n_test} "
                         f"exceeds the {n_total} available examples")
    seed = _check_int(task, "split_seed", seed, 0)
    perm = np.random.default_rng(seed).permutation(n_total)
    bounds = np.cumsum([0, n_train, n_val, n_test])
    return {s: perm[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}


def _build(name: str, kind: str, layout: str, output_dim: int, xs: dict[str, np.ndarray],
           ys: dict[str, np.ndarray], info: dict[str, Any]) -> TaskData:
    """Standardise inputs with train statistics, apply the layout and assemble the TaskData.

    ``xs`` hold inputs in image layout: [N, C, H, W] for images, [N, 1, L] for signals.
    """
    x = {s: torch.as_tensor(np.asarray(xs[s], dtype=np.float32)) for s in SPLITS}
    mean = x["train"].double().mean().item()
    std = x["train"].double().std(correction=0).item()
    std = std if std > 0 else 1.0
    x = {s: ((v - mean) / std).float() for s, v in x.items()}
    image_shape = list(x["train"].shape[1:])  # [C, H, W] or [1, L]: what task variants transform
    if layout == "flat":
        x = {s: v.reshape(v.shape[0], -1) for s, v in x.items()}
    if kind == "classification":
        y = {s: torch.as_tensor(np.asarray(ys[s], dtype=np.int64)) for s in SPLITS}
    else:
        y = {s: torch.as_tensor(np.asarray(ys[s], dtype=np.float32).reshape(-1, output_dim)) for s in SPLITS}
    info = dict(info, layout=layout, x_mean=mean, x_std=std, image_shape=image_shape,
                sizes={s: int(x[s].shape[0]) for s in SPLITS})
    return TaskData(name=name, kind=kind, input_shape=tuple(x["train"].shape[1:]), output_dim=output_dim,
                    x_train=x["train"], y_train=y["train"], x_val=x["val"], y_val=y["val"],
                    x_test=x["test"], y_test=y["test"], info=info)


def _indices_info(idx: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {s: [int(i) for i in v] for s, v in idx.items()}


# ----------------------------------------------------------------------------------------------
# digits

def load_digits_task(*, layout: str = "flat", split_seed: int = 0, n_train: int = 1000, n_val: int = 297) -> TaskData:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled with the package, no download)."""
    from sklearn.datasets import load_digits

    _check_layout("digits", layout)
    n_train = _check_int("digits", "n_train", n_train, 1)
    n_val = _check_int("digits", "n_val", n_val, 0)
    bunch = load_digits()
    images = bunch.images.astype(np.float64) / 16.0  # [1797, 8, 8], pixels 0..16
    labels = bunch.target.astype(np.int64)
    n_test = len(labels) - n_train - n_val
    if n_test < 1:
        raise InputError(f"task 'digits': n_train={n_train} + n_val={n_val} leaves no test examples "
                         f"out of {len(labels)}")
    idx = _split_indices("digits", len(labels), n_train, n_val, n_test, split_seed)
    info = {"task": "digits", "source": "sklearn.datasets.load_digits", "pixel_scale": 1 / 16,
            "options": {"layout": layout, "split_seed": split_seed, "n_train": n_train, "n_val": n_val},
            "split_indices": _indices_info(idx)}
    xs = {s: images[i][:, None] for s, i in idx.items()}
    ys = {s: labels[i] for s, i in idx.items()}
    return _build("digits", "classification", layout, 10, xs, ys, info)


# ----------------------------------------------------------------------------------------------
# MNIST-1D

def load_mnist1d_task(*, layout: str = "flat", split_seed: int = 0, num_samples: int = 5000, n_val: int = 500,
                      data_seed: int = 42, n_train: int | None = None) -> TaskData:
    """MNIST-1D generated offline by the ``mnist1d`` package (never its downloading ``get_dataset``).

    The package's own 80/20 split gives train and test; ``n_val`` examples of its train part,
    chosen by ``split_seed``, become the validation split, and ``n_train`` of the rest (default: all)
    the training split. A large ``num_samples`` with a capped ``n_train`` measures test metrics
    precisely without making training dearer.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    _check_layout("mnist1d", layout)
    num_samples = _check_int("mnist1d", "num_samples", num_samples, 10)
    n_val = _check_int("mnist1d", "n_val", n_val, 0)
    data_seed = _check_int("mnist1d", "data_seed", data_seed, 0)
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = data_seed
    # make_dataset reseeds the global `random` and `numpy.random` generators; restore them so
    # loading a task does not silently change the randomness of the caller.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    pool_x, pool_y = np.asarray(data["x"]), np.asarray(data["y"])
    n_left = len(pool_y) - n_val
    if n_left < 1:
        raise InputError(f"task 'mnist1d': n_val={n_val} leaves no training examples out of the "
                         f"{len(pool_y)} in the generated train part (num_samples={num_samples})")
    n_train = n_left if n_train is None else _check_int("mnist1d", "n_train", n_train, 1)
    if n_train > n_left:
        raise InputError(f"task 'mnist1d': n_train={n_train} is more than the {n_left} examples the generated "
                         f"train part (num_samples={num_samples}) has left after n_val={n_val}")
    idx = _split_indices("mnist1d", len(pool_y), n_train, n_val, 0, split_seed)
    xs = {"train": pool_x[idx["train"]], "val": pool_x[idx["val"]], "test": np.asarray(data["x_test"])}
    ys = {"train": pool_y[idx["train"]], "val": pool_y[idx["val"]], "test": np.asarray(data["y_test"])}
    xs = {s: v[:, None, :] for s, v in xs.items()}  # [N, 1, 40]
    info = {"task": "mnist1d", "source": "mnist1d.data.make_dataset (generated offline)",
            "options": {"layout": layout, "split_seed": split_seed, "num_samples": num_samples,
                        "n_val": n_val, "data_seed": data_seed, "n_train": n_train},
            "generator_args": {k: v for k, v in vars(args).items() if k != "url"},
            "split_indices": {"train": [int(i) for i in idx["train"]], "val": [int(i) for i in idx["val"]]},
            "split_pools": {"train": "generated train part", "val": "generated train part",
                            "test": "generated test part (all of it)"}}
    return _build("mnist1d", "classification", layout, 10, xs, ys, info)


# ----------------------------------------------------------------------------------------------
# IDX files: MNIST and Fashion-MNIST

IDX_DATASETS = ("mnist", "fashion-mnist")

# Official md5 of the *uncompressed* IDX files, keyed by dataset and file name without ".gz".
# The t10k values are those of ../shared/data/README.md (checked against the files there). The
# training files' values: MNIST as listed beside torchvision's archive md5s (f68b3c2d..., d53e105e...)
# in public download scripts that check the extracted files (e.g. a CMake `fetch_mnist` and a shell
# script fetching from ossci-datasets.s3, both listing archive and extracted md5s); Fashion-MNIST as
# in the `raw_data` list of a torchvision-style FashionMNIST loader and in the md5sum output after
# gunzip of zalandoresearch/fashion-mnist's data/fashion/*.gz (whose README gives the .gz md5s).
IDX_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dims
LABELS_MAGIC = 0x00000801  # uint8, 1 dim

_IDX_STEMS = {"images": "{}-images-idx3-ubyte", "labels": "{}-labels-idx1-ubyte"}


def _read_maybe_gzip(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, gunzipped if it is gzip; the flag says the gzip stream was cut short.

    Decompressing incrementally keeps whatever a truncated stream still holds, so the caller can
    report how many bytes were found against how many the IDX header expects.
    """
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw, False
    out, data = [], raw
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(data))
        except zlib.error as e:
            raise InputError(f"{path}: corrupt gzip data ({e})") from e
        if not d.eof:
            return b"".join(out), True
        data = d.unused_data.lstrip(b"\x00")  # next gzip member, ignoring zero padding
    return b"".join(out), False


def read_idx(path: str | os.PathLike, expected_magic: int | None = None, expected_md5: str | None = None) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into an array of its native shape.

    ``expected_magic`` pins the type and number of dimensions (e.g. 0x803 for uint8 images);
    ``expected_md5`` is checked against the uncompressed bytes. Every failure names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"IDX file not found: {path}")
    data, truncated_gzip = _read_maybe_gzip(path)
    if len(data) < 4:
        what = "truncated gzip stream" if truncated_gzip else "file too short"
        raise InputError(f"{path}: not an IDX file ({what}: {len(data)} bytes, expected at least a 4-byte magic number)")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        raise InputError(f"{path}: not the expected IDX file: magic number 0x{magic:08X}, expected 0x{expected_magic:08X}")
    if data[0] != 0 or data[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise InputError(f"{path}: not an IDX file: magic number 0x{magic:08X}, expected 0x0000TTNN with "
                         f"type TT in {{{', '.join(f'{c:02X}' for c in _IDX_DTYPES)}}} and NN >= 1 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path}: truncated IDX file: header needs {header} bytes, found {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected_bytes = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected_bytes or truncated_gzip:
        raise InputError(f"{path}: truncated IDX file{' (gzip stream cut short)' if truncated_gzip else ''}: "
                         f"dims {dims} need {expected_bytes} bytes, found {len(data)}")
    if len(data) > expected_bytes:
        raise InputError(f"{path}: IDX file has trailing data: dims {dims} need {expected_bytes} bytes, found {len(data)}")
    if expected_md5 is not None:
        found = hashlib.md5(data).hexdigest()
        if found != expected_md5:
            raise InputError(f"{path}: md5 mismatch of the uncompressed data: expected {expected_md5}, found {found}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories that may hold ``name``'s IDX files, in the order they are tried."""
    if data_dir is not None:
        # An explicit directory is either the dataset's own folder or its parent.
        return [Path(data_dir) / name, Path(data_dir)]
    dirs = []
    if os.environ.get("WSL_DATA"):
        dirs.append(Path(os.environ["WSL_DATA"]) / name)
    dirs.append(Path.cwd() / ".." / "shared" / "data" / name)
    dirs.append(Path(__file__).resolve().parents[2] / "shared" / "data" / name)
    return dirs


def resolve_idx_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding ``name``'s t10k IDX files: ``data_dir``, else ``$WSL_DATA/<name>``,
    else ``../shared/data/<name>`` relative to the working directory, then to the repo root."""
    if name not in IDX_DATASETS:
        raise InputError(f"unknown IDX dataset {name!r}; valid: {', '.join(IDX_DATASETS)}")
    searched = _candidate_dirs(name, data_dir)
    stem = _IDX_STEMS["images"].format("t10k")
    for directory in searched:
        if _find_idx_file(directory, stem) is not None:
            return directory.resolve()
    raise MissingFileError(
        f"{name}: could not find {stem} (or {stem}.gz); searched: {', '.join(str(d) for d in searched)}. "
        f"Pass data_dir=... or set WSL_DATA to a directory containing '{name}/'.")


def _resolve_for_protocol(name: str, data_dir: str | os.PathLike | None, needs_train: bool) -> Path:
    """``resolve_idx_dir``, whose error also lists the training files when the protocol needs them."""
    try:
        return resolve_idx_dir(name, data_dir)
    except MissingFileError as e:
        if not needs_train:
            raise
        files = ", ".join(f"{v.format(p)}(.gz)" for p in ("train", "t10k") for v in _IDX_STEMS.values())
        raise MissingFileError(f"{e} The protocols on the 60,000 training images need the IDX files there: "
                               f"{files}") from None


def load_idx_images(name: str, data_dir: str | os.PathLike | None = None, verify_md5: bool = True,
                    parts: tuple[str, ...] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw MNIST-style images and labels: ``{'test': (uint8 [N,28,28], int64 [N])}``, plus
    ``'train'`` when the training files are present. Files with a known md5 are verified.

    ``parts`` (some of ``'train'``, ``'test'``) reads exactly those, each required: a protocol
    that needs the 60,000 training images fails, naming the files, rather than silently using 10,000."""
    directory = resolve_idx_dir(name, data_dir)
    known = IDX_MD5.get(name, {}) if verify_md5 else {}
    out = {}
    for part in ("train", "t10k"):
        key = "test" if part == "t10k" else "train"
        if parts is not None and key not in parts:
            continue
        stems = {k: v.format(part) for k, v in _IDX_STEMS.items()}
        files = {k: _find_idx_file(directory, stem) for k, stem in stems.items()}
        if parts is None and part == "train" and files["images"] is None and files["labels"] is None:
            continue  # only the test set is available
        for k, f in files.items():
            if f is None and part == "train":
                raise MissingFileError(
                    f"{name}: expected {stems[k]} (or {stems[k]}.gz) in {directory}: the protocols on the "
                    f"60,000 training images need the training files {stems['images']}(.gz) and "
                    f"{stems['labels']}(.gz) there, next to the t10k files (or task.data_dir / WSL_DATA naming a folder with '{name}/' holding "
                    f"all four)")
            if f is None:
                raise MissingFileError(f"{name}: expected {stems[k]} (or {stems[k]}.gz) in {directory}")
        images = read_idx(files["images"], IMAGES_MAGIC, known.get(stems["images"]))
        labels = read_idx(files["labels"], LABELS_MAGIC, known.get(stems["labels"]))
        if len(images) != len(labels):
            raise InputError(f"{name}: {files['images']} has {len(images)} images but "
                             f"{files['labels']} has {len(labels)} labels")
        out["test" if part == "t10k" else "train"] = (images, labels.astype(np.int64))
    return out


def _downsample(images: np.ndarray, factor: int, task: str) -> np.ndarray:
    """Average-pool [N, H, W] images by an integer factor that divides H and W."""
    n, h, w = images.shape
    if h % factor or w % factor:
        raise InputError(f"task {task!r}: option 'downsample'={factor} must divide the image size {h}x{w}")
    return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


# Which IDX images a classification task reads: "auto" the training files when present (the
# behaviour of configs written before the option), "test" the 10,000 t10k images only, "all" the
# 60,000 training and 10,000 t10k images (the training files are then required).
IDX_IMAGES = {"auto": None, "test": ("test",), "all": ("train", "test")}


def _load_idx_task(name: str, layout: str, split_seed: int, data_dir: str | os.PathLike | None,
                   n_train: int | None, n_val: int | None, downsample: int, max_images: int | None,
                   verify_md5: bool, images: str = "auto") -> TaskData:
    _check_layout(name, layout)
    if images not in IDX_IMAGES:
        raise InputError(f"task {name!r}: option 'images' must be one of {list(IDX_IMAGES)}, got {images!r}")
    downsample = _check_int(name, "downsample", downsample, 1)
    if max_images is not None:
        max_images = _check_int(name, "max_images", max_images, 1)
    directory = _resolve_for_protocol(name, data_dir, images == "all")
    raw = load_idx_images(name, directory, verify_md5=verify_md5, parts=IDX_IMAGES[images])
    # max_images caps each file to its first images, for quick experiments.
    raw = {k: (x[:max_images], y[:max_images]) for k, (x, y) in raw.items()}
    test_x, test_y = raw["test"]
    if "train" in raw:
        # Official layout: train/val come from the training files, test is all of t10k.
        pool_x, pool_y = raw["train"]
        n_val = min(5000, len(pool_y) // 10) if n_val is None else _check_int(name, "n_val", n_val, 0)
        n_train = len(pool_y) - n_val if n_train is None else _check_int(name, "n_train", n_train, 1)
        idx = _split_indices(name, len(pool_y), n_train, n_val, 0, split_seed)
        xs = {"train": pool_x[idx["train"]], "val": pool_x[idx["val"]], "test": test_x}
        ys = {"train": pool_y[idx["train"]], "val": pool_y[idx["val"]], "test": test_y}
        pools = {"train": "train", "val": "train", "test": "t10k"}
        indices = {"train": idx["train"], "val": idx["val"], "test": np.arange(len(test_y))}
    else:
        # Only the 10,000-image test set: split it 50% / 10% / rest by default.
        n = len(test_y)
        n_train = n // 2 if n_train is None else _check_int(name, "n_train", n_train, 1)
        n_val = n // 10 if n_val is None else _check_int(name, "n_val", n_val, 0)
        if n - n_train - n_val < 1:
            raise InputError(f"task {name!r}: n_train={n_train} + n_val={n_val} leaves no test images out of {n}")
        idx = _split_indices(name, n, n_train, n_val, n - n_train - n_val, split_seed)
        xs = {s: test_x[i] for s, i in idx.items()}
        ys = {s: test_y[i] for s, i in idx.items()}
        pools = {s: "t10k" for s in SPLITS}
        indices = idx
    xs = {s: _downsample(v.astype(np.float64) / 255.0, downsample, name)[:, None] for s, v in xs.items()}
    info = {"task": name, "source_dir": str(directory), "pixel_scale": 1 / 255,
            "options": {"layout": layout, "split_seed": split_seed,
                        "data_dir": None if data_dir is None else str(data_dir), "n_train": n_train,
                        "n_val": n_val, "downsample": downsample, "max_images": max_images,
                        "verify_md5": verify_md5, "images": images},
            "md5_verified": bool(verify_md5),
            "files_present": sorted(raw),
            "image_size": list(xs["train"].shape[2:]),
            "split_pools": pools, "split_indices": _indices_info(indices)}
    return _build(name, "classification", layout, 10, xs, ys, info)


def load_mnist_task(*, layout: str = "flat", split_seed: int = 0, data_dir: str | os.PathLike | None = None,
                    n_train: int | None = None, n_val: int | None = None, downsample: int = 2,
                    max_images: int | None = None, verify_md5: bool = True, images: str = "auto") -> TaskData:
    """MNIST from local IDX files (see ``resolve_idx_dir`` for where they are looked for);
    ``images`` one of ``IDX_IMAGES`` (``all``: train/val from the 60,000, test the 10,000 t10k)."""
    return _load_idx_task("mnist", layout, split_seed, data_dir, n_train, n_val, downsample, max_images, verify_md5,
                          images)


def load_fashion_mnist_task(*, layout: str = "flat", split_seed: int = 0, data_dir: str | os.PathLike | None = None,
                            n_train: int | None = None, n_val: int | None = None, downsample: int = 2,
                            max_images: int | None = None, verify_md5: bool = True, images: str = "auto") -> TaskData:
    """Fashion-MNIST from local IDX files, like ``load_mnist_task``."""
    return _load_idx_task("fashion-mnist", layout, split_seed, data_dir, n_train, n_val, downsample, max_images,
                          verify_md5, images)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 from its binary version (the python version is a pickle and is never read)

CIFAR10_DIR = "cifar-10-batches-bin"  # the folder of cifar-10-binary.tar.gz
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
# A record: 1 label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes, each channel's
# 32x32 pixels row by row (the format stated on the CIFAR page, www.cs.toronto.edu/~kriz/cifar.html).
# Only the archive's md5 is published, not the batches', so each file's structure is checked instead.
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_RECORDS_PER_FILE = 10_000


def resolve_cifar10_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of CIFAR-10's binary batches: ``<base>/cifar10/cifar-10-batches-bin``,
    ``<base>/cifar10``, ``<base>/cifar-10-batches-bin`` or ``<base>``, where base is ``data_dir``,
    else ``$WSL_DATA``, else ``../shared/data`` (as for the IDX files)."""
    searched = []
    for d in _candidate_dirs("cifar10", data_dir):
        for candidate in (d / CIFAR10_DIR, d):
            searched.append(str(candidate))
            if any((candidate / f).is_file() for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
                return candidate.resolve()
    files = ", ".join((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))
    raise MissingFileError(
        f"cifar10: could not find CIFAR-10's binary batches ({files}: the folder {CIFAR10_DIR}/ of "
        f"cifar-10-binary.tar.gz; the python version is a pickle and is not read); searched: {', '.join(searched)}. "
        f"Pass task.data_dir or set WSL_DATA to a directory containing 'cifar10/{CIFAR10_DIR}/'.")


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch as uint8 images [N, 3, 32, 32] and int64 labels [N]; its size and labels are
    checked, and every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"CIFAR-10 batch not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    expected = CIFAR10_RECORDS_PER_FILE * CIFAR10_RECORD
    if raw.size and raw[0] > 9:
        raise InputError(f"{path}: not a CIFAR-10 binary batch: its first label byte is {raw[0]}, expected 0-9 "
                         f"(the python version's pickles are not read: use cifar-10-binary.tar.gz)")
    if raw.size != expected:
        raise InputError(f"{path}: not a CIFAR-10 binary batch: expected {expected} bytes ({CIFAR10_RECORDS_PER_FILE} "
                         f"records of 1 label byte + 3,072 pixel bytes), found {raw.size}")
    records = raw.reshape(CIFAR10_RECORDS_PER_FILE, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise InputError(f"{path}: not a CIFAR-10 binary batch: record {bad} has label {labels[bad]}, expected 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10_images(data_dir: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{'train': data_batch_1..5 concatenated in order (50,000), 'test': test_batch (10,000)}``."""
    directory = resolve_cifar10_dir(data_dir)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [f for f in names if not (directory / f).is_file()]
    if missing:
        raise MissingFileError(f"cifar10: {', '.join(missing)} not found in {directory}; the task needs all of "
                               f"{', '.join(names)} there")
    train = [read_cifar10_batch(directory / f) for f in CIFAR10_TRAIN_FILES]
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": read_cifar10_batch(directory / CIFAR10_TEST_FILE)}


def cifar10_grayscale(images: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] uint8 -> [N, 1, H, W] float32 in [0, 1]: the plain mean of the three channels.

    The Small CNN Zoo's CIFAR10-GS (Unterthiner et al. 2020) converted so: google-research
    ``dnn_predict_accuracy/train_network.py`` takes ``tf.math.reduce_mean(image, axis=-1)`` of the
    scaled RGB image, not a luminance weighting such as ``tf.image.rgb_to_grayscale``'s."""
    return images.sum(axis=1, keepdims=True, dtype=np.uint16).astype(np.float32) / np.float32(3 * 255)


def load_cifar10_task(*, layout: str = "flat", split_seed: int = 0, data_dir: str | os.PathLike | None = None,
                      n_train: int | None = None, n_val: int | None = None, grayscale: bool = False,
                      max_images: int | None = None) -> TaskData:
    """CIFAR-10 from its binary batches: train and val drawn (``split_seed``) from the 50,000
    training images, test the 10,000 of ``test_batch.bin``; ``grayscale`` gives CIFAR10-GS."""
    task = "cifar10"
    _check_layout(task, layout)
    if not isinstance(grayscale, bool):
        raise InputError(f"task {task!r}: option 'grayscale' must be true or false, got {grayscale!r}")
    if max_images is not None:
        max_images = _check_int(task, "max_images", max_images, 1)
    directory = resolve_cifar10_dir(data_dir)
    raw = {k: (x[:max_images], y[:max_images]) for k, (x, y) in load_cifar10_images(directory).items()}
    pool_x, pool_y = raw["train"]
    n_val = min(5000, len(pool_y) // 10) if n_val is None else _check_int(task, "n_val", n_val, 0)
    n_train = len(pool_y) - n_val if n_train is None else _check_int(task, "n_train", n_train, 1)
    idx = _split_indices(task, len(pool_y), n_train, n_val, 0, split_seed)
    to_float = cifar10_grayscale if grayscale else (lambda v: v.astype(np.float32) / np.float32(255))
    xs = {"train": to_float(pool_x[idx["train"]]), "val": to_float(pool_x[idx["val"]]),
          "test": to_float(raw["test"][0])}
    ys = {"train": pool_y[idx["train"]], "val": pool_y[idx["val"]], "test": raw["test"][1]}
    info = {"task": task, "source_dir": str(directory), "pixel_scale": 1 / 255,
            "grayscale": "mean of R, G, B (Small CNN Zoo CIFAR10-GS)" if grayscale else None,
            "options": {"layout": layout, "split_seed": split_seed,
                        "data_dir": None if data_dir is None else str(data_dir), "n_train": n_train,
                        "n_val": n_val, "grayscale": grayscale, "max_images": max_images},
            "image_size": [32, 32], "split_pools": {"train": "train", "val": "train", "test": "test_batch"},
            "split_indices": _indices_info({"train": idx["train"], "val": idx["val"],
                                            "test": np.arange(len(ys["test"]))})}
    return _build(task, "classification", layout, 10, xs, ys, info)


# ----------------------------------------------------------------------------------------------
# sine: procedural regression

def load_sine_task(*, layout: str = "flat", split_seed: int = 0, n_points: int = 32, n_train: int = 2000,
                   n_val: int = 500, n_test: int = 1000, data_seed: int = 0, freq_min: float = 0.5,
                   freq_max: float = 3.0, noise: float = 0.05) -> TaskData:
    """Regress the frequency of a noisy sine wave from its samples.

    Each example is ``a * sin(f * t + phase) + noise`` at ``n_points`` positions in [0, 2π), with
    a ~ U[0.5, 1.5], f ~ U[freq_min, freq_max], phase ~ U[0, 2π). Amplitude and phase are nuisance
    variables, so a network must read the oscillation rate rather than the signal's scale or offset.
    The target is [f], standardised with train statistics (``info['y_mean']``, ``info['y_std']``).
    """
    _check_layout("sine", layout)
    n_points = _check_int("sine", "n_points", n_points, 2)
    n_train = _check_int("sine", "n_train", n_train, 1)
    n_val = _check_int("sine", "n_val", n_val, 0)
    n_test = _check_int("sine", "n_test", n_test, 1)
    data_seed = _check_int("sine", "data_seed", data_seed, 0)
    if not 0 < freq_min < freq_max:
        raise InputError(f"task 'sine': options need 0 < freq_min < freq_max, got freq_min={freq_min}, freq_max={freq_max}")
    if noise < 0:
        raise InputError(f"task 'sine': option 'noise' must be >= 0, got {noise}")
    n = n_train + n_val + n_test
    rng = np.random.default_rng(data_seed)
    amplitude = rng.uniform(0.5, 1.5, size=(n, 1))
    frequency = rng.uniform(freq_min, freq_max, size=(n, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    t = np.linspace(0.0, 2 * np.pi, n_points, endpoint=False)
    signal = amplitude * np.sin(frequency * t + phase) + noise * rng.standard_normal((n, n_points))
    idx = _split_indices("sine", n, n_train, n_val, n_test, split_seed)
    y_mean = float(frequency[idx["train"]].mean())
    y_std = float(frequency[idx["train"]].std()) or 1.0
    xs = {s: signal[i][:, None, :] for s, i in idx.items()}  # [N, 1, n_points]
    ys = {s: (frequency[i] - y_mean) / y_std for s, i in idx.items()}
    info = {"task": "sine", "source": "procedural",
            "options": {"layout": layout, "split_seed": split_seed, "n_points": n_points, "n_train": n_train,
                        "n_val": n_val, "n_test": n_test, "data_seed": data_seed, "freq_min": freq_min,
                        "freq_max": freq_max, "noise": noise},
            "targets": ["frequency"], "y_mean": y_mean, "y_std": y_std,
            "split_indices": _indices_info(idx)}
    return _build("sine", "regression", layout, 1, xs, ys, info)


# ----------------------------------------------------------------------------------------------
# Task variants: one classification task seen differently by different models of one zoo

# A variant is a name such as ``classes:0-4`` (the hyperparameter ``task_variant``); steps joined by
# "+" apply left to right (``classes:0-4+relabel:1``). Each step, and what it does to every split:
VARIANTS = {
    "full": "the task as it is",
    "classes": "classes:0-4 or classes:0,2,4: only the examples of those classes (labels unchanged)",
    "relabel": "relabel:SEED: labels mapped by a fixed permutation of the classes drawn from SEED (never the identity)",
    "permute": "permute:SEED: the pixels (positions) of every input shuffled by a fixed permutation drawn from SEED",
    "flip": "flip: every input mirrored along its last axis (images left-right, 1-D signals in time)",
    "invert": "invert: every (standardised) input negated",
}
_SEEDED = {"relabel": 1, "permute": 2}  # a seeded step's stream, so relabel:1 and permute:1 are unrelated draws


def parse_variant(text: Any) -> list[tuple[str, Any]]:
    """The steps of a variant name: ``[(kind, argument)]``, argument a sorted list of classes, a
    seed or None. Syntax only: whether the classes exist is checked against a task by ``variant_view``."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"task variant: expected a name such as {', '.join(VARIANTS)}, found {text!r}")
    steps = []
    for part in text.split("+"):
        kind, _, arg = part.strip().partition(":")
        if kind not in VARIANTS:
            raise InputError(f"task variant {text!r}: unknown step {kind!r}; expected one of {list(VARIANTS)}")
        if kind in ("full", "flip", "invert"):
            if arg:
                raise InputError(f"task variant {text!r}: {kind!r} takes no argument, found {arg!r}")
            steps.append((kind, None))
        elif kind == "classes":
            steps.append((kind, _parse_classes(text, arg)))
        else:
            if not arg.isdigit():
                raise InputError(f"task variant {text!r}: {VARIANTS[kind]}; found seed {arg!r}")
            steps.append((kind, int(arg)))
    return steps


def _parse_classes(text: str, arg: str) -> list[int]:
    classes: set[int] = set()
    for item in arg.split(","):
        lo, dash, hi = item.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise InputError(f"task variant {text!r}: {VARIANTS['classes']}; found {arg!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a > b:
            raise InputError(f"task variant {text!r}: class range {item!r} is empty")
        classes.update(range(a, b + 1))
    return sorted(classes)


def _fixed_permutation(kind: str, seed: int, n: int, avoid_identity: bool) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SEEDED[kind]]))
    perm = rng.permutation(n)
    while avoid_identity and n > 1 and bool((perm == np.arange(n)).all()):
        perm = rng.permutation(n)
    return perm


def variant_view(task: TaskData, variant: str) -> TaskData:
    """``task`` as the models of ``variant`` see it: every split's examples filtered, relabelled or
    transformed by the variant's steps (``VARIANTS``). Metrics of such a model are computed on the
    view's validation and test examples, its own task's."""
    steps = parse_variant(variant)
    if all(kind == "full" for kind, _ in steps):
        return task
    if task.kind != "classification":
        raise InputError(f"task variant {variant!r}: variants apply to classification tasks; task {task.name!r} "
                         f"is a {task.kind}")
    shape = task.info.get("image_shape", [1, *task.input_shape])
    xs = {s: getattr(task, f"x_{s}") for s in SPLITS}
    ys = {s: getattr(task, f"y_{s}") for s in SPLITS}
    for kind, arg in steps:
        if kind == "classes":
            missing = [c for c in arg if not 0 <= c < task.output_dim]
            if missing:
                raise InputError(f"task variant {variant!r}: task {task.name!r} has classes 0..{task.output_dim - 1}, "
                                 f"found {missing}")
            keep = {s: torch.isin(ys[s], torch.tensor(arg)) for s in SPLITS}
            xs, ys = {s: xs[s][keep[s]] for s in SPLITS}, {s: ys[s][keep[s]] for s in SPLITS}
        elif kind == "relabel":
            perm = torch.as_tensor(_fixed_permutation(kind, arg, task.output_dim, avoid_identity=True))
            ys = {s: perm[y] for s, y in ys.items()}
        elif kind == "permute":
            positions = math.prod(shape[1:])
            perm = torch.as_tensor(_fixed_permutation(kind, arg, positions, avoid_identity=False))
            xs = {s: x.reshape(len(x), shape[0], positions)[..., perm].reshape(x.shape) for s, x in xs.items()}
        elif kind == "flip":
            xs = {s: x.reshape(len(x), *shape).flip(-1).reshape(x.shape) for s, x in xs.items()}
        elif kind == "invert":
            xs = {s: -x for s, x in xs.items()}
    for s in ("train", "test"):
        if len(ys[s]) == 0:
            raise InputError(f"task variant {variant!r}: leaves no {s} examples of task {task.name!r}")
    moved = {f"{p}_{s}": v[s].contiguous() for p, v in (("x", xs), ("y", ys)) for s in SPLITS}
    info = dict(task.info, variant=variant, sizes={s: int(len(ys[s])) for s in SPLITS})
    return dataclasses.replace(task, info=info, **moved)


# ----------------------------------------------------------------------------------------------
# Registry

TASKS: dict[str, Callable[..., TaskData]] = {
    "digits": load_digits_task,
    "mnist1d": load_mnist1d_task,
    "mnist": load_mnist_task,
    "fashion-mnist": load_fashion_mnist_task,
    "cifar10": load_cifar10_task,
    "sine": load_sine_task,
}


def task_options(name: str) -> list[str]:
    """The option names that ``load_task(name, ...)`` accepts, read from the loader's signature."""
    params = inspect.signature(TASKS[name]).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def load_task(name: str, **options: Any) -> TaskData:
    """Load a registered task by name; unknown names and options fail before any work is done."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    accepted = task_options(name)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(TASKS[name]).parameters.values())
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise InputError(f"task {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"accepted options: {', '.join(accepted)}")
    return TASKS[name](**options)
