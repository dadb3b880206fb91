"""INR tasks: sets of signals (images, sine waves), each fitted by its own network.

An INR zoo fits one SIREN per signal: the network maps a coordinate in [-1, 1]^d to the signal's
value there. Unlike a classification task, every model has its own data, so a ``SignalSet`` holds
one coordinate grid shared by all signals and one value array per signal, plus per-signal fields
that a weight-space model later predicts (the image's class, the sine's frequency) and the
signal's split. Splits are by signal (an image's INRs all land in one split), fixed and seeded.

Images are scaled to ``target_range``: ``[-1, 1]`` or ``[0, 1]`` (the two published MNIST-INR
variants differ here; the range is recorded in the zoo). Nothing downloads: digits ship with
scikit-learn, MNIST / Fashion-MNIST come from local IDX files (``zoo.tasks.load_idx_images``), sine
waves are procedural.

``SIGNAL_TASKS`` maps task names to loaders, like ``zoo.tasks.TASKS``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .store import SPLITS
from .tasks import _check_int, _resolve_for_protocol, load_idx_images
from .errors import InputError


@dataclass(eq=False, repr=False)
class SignalSet:
    """Signals to fit: ``values[n]`` is signal n sampled at ``coords``."""

    name: str
    coords: torch.Tensor  # [P, d_in] float32 in [-1, 1]
    values: torch.Tensor  # [N, P, d_out] float32
    fields: dict[str, np.ndarray]  # per signal [N]: "split" (str), "source_index", "label", "frequency", ...
    signal_shape: tuple[int, ...]  # how P points lay out, e.g. (28, 28) for images, (P,) for 1-D
    target_range: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        P, d_in = self.coords.shape
        if self.values.dim() != 3 or self.values.shape[1] != P:
            raise InputError(f"signal task {self.name!r}: values have shape {list(self.values.shape)}, "
                             f"expected [N, {P}, d_out]")
        if int(np.prod(self.signal_shape)) != P:
            raise InputError(f"signal task {self.name!r}: signal_shape {self.signal_shape} does not hold {P} points")
        for k, v in self.fields.items():
            if len(v) != len(self):
                raise InputError(f"signal task {self.name!r}: field {k!r} has {len(v)} entries, expected {len(self)}")
        bad = sorted(set(self.fields["split"].tolist()) - set(SPLITS))
        if bad:
            raise InputError(f"signal task {self.name!r}: field 'split' holds {bad}; expected {list(SPLITS)}")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def in_dim(self) -> int:
        return self.coords.shape[1]

    @property
    def out_dim(self) -> int:
        return self.values.shape[2]

    @property
    def peak(self) -> float:
        """The data range that PSNR refers to."""
        return float(self.target_range[1] - self.target_range[0])

    def __repr__(self) -> str:
        counts = "/".join(str(int((self.fields["split"] == s).sum())) for s in SPLITS)
        return (f"SignalSet(name={self.name!r}, signals={len(self)}, points={self.coords.shape[0]}, "
                f"shape={self.signal_shape}, range={list(self.target_range)}, {'/'.join(SPLITS)}={counts})")


def grid_coords(shape: tuple[int, ...]) -> torch.Tensor:
    """Pixel-centre-free grid in [-1, 1]^d, row-major (the first axis varies slowest): [prod(shape), d]."""
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def _split_field(n_train: int, n_val: int, n_test: int) -> np.ndarray:
    """The ``split`` field of signals listed train first, then val, then test."""
    return np.repeat(np.asarray(SPLITS), [n_train, n_val, n_test])


def _check_range(task: str, target_range: Any) -> tuple[float, float]:
    """[lo, hi] the pixel intensities are mapped to: e.g. [-1, 1] (Sitzmann et al., the NFN datasets),
    [0, 1], or [-0.5, 0.5] (a SIREN fitting [0, 1] with a +0.5 output offset, as Navon et al.'s)."""
    r = None
    if isinstance(target_range, (list, tuple)) and len(target_range) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in target_range):
        r = tuple(float(v) for v in target_range)
    if r is None or not (np.isfinite(r).all() and r[0] < r[1]):
        raise InputError(f"task {task!r}: option 'target_range' must be [low, high] with low < high, "
                         f"e.g. [-1, 1] or [0, 1], found {target_range!r}")
    return r


def _split_labels(task: str, n_total: int, n_train: int, n_val: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which source items are used (a seeded permutation) and the split of each."""
    if n_train + n_val + n_test > n_total:
        raise InputError(f"task {task!r}: n_train + n_val + n_test = {n_train + n_val + n_test} exceeds the "
                         f"{n_total} available signals")
    chosen = np.random.default_rng(np.random.SeedSequence([seed, 77])).permutation(n_total)[:n_train + n_val + n_test]
    return chosen, _split_field(n_train, n_val, n_test)


def _split_by_pools(task: str, n_pool_train: int, n_pool_test: int, n_train: int, n_val: int, n_test: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The DWSNets protocol on training images followed by test images: train and val signals are
    drawn (seeded) from the training images, test signals from the test images only.

    AvivNavon/DWSNets ``experiments/mnist/generate_data_splits.py`` puts the INRs of MNIST's
    training images in train, takes ``--val-size`` 5,000 of them at random for val, and the INRs of
    the test images are the test split."""
    if n_train + n_val > n_pool_train:
        raise InputError(f"task {task!r}: n_train + n_val = {n_train + n_val} exceeds the {n_pool_train} training "
                         f"images (with source 'all', train and val come from the training files, test from t10k)")
    if n_test > n_pool_test:
        raise InputError(f"task {task!r}: n_test = {n_test} exceeds the {n_pool_test} test images (with source "
                         f"'all', test signals come from the t10k files only)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    chosen = np.concatenate([rng.permutation(n_pool_train)[:n_train + n_val],
                             n_pool_train + rng.permutation(n_pool_test)[:n_test]])
    return chosen, _split_field(n_train, n_val, n_test)


def _image_signals(name: str, images: np.ndarray, labels: np.ndarray, max_value: float, *, split_seed: int,
                   n_train: int, n_val: int, n_test: int, target_range, info: dict,
                   pools: tuple[int, int] | None = None) -> SignalSet:
    """``pools``: the images are that many training images followed by that many test images, split
    by ``_split_by_pools``; without it, by one seeded permutation of all of them."""
    lo, hi = _check_range(name, target_range)
    for opt, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_int(name, opt, v, 0)
    if pools is None:
        chosen, split = _split_labels(name, len(images), n_train, n_val, n_test, split_seed)
    else:
        chosen, split = _split_by_pools(name, *pools, n_train, n_val, n_test, split_seed)
    order = np.argsort(chosen)  # signals in source order, each keeps its split
    chosen_sorted, split = chosen[order], split[order]
    imgs = images[chosen_sorted].astype(np.float32) / max_value
    h, w = imgs.shape[1:]
    values = torch.from_numpy(lo + (hi - lo) * imgs.reshape(len(imgs), h * w, 1))
    fields = {"split": split, "source_index": chosen_sorted.astype(np.int64),
              "label": labels[chosen_sorted].astype(np.int64)}
    return SignalSet(name, grid_coords((h, w)), values, fields, (h, w), (lo, hi),
                     info | {"split_seed": split_seed, "n_train": n_train, "n_val": n_val, "n_test": n_test,
                             "target_range": [lo, hi], "num_classes": 10})


def load_digits_inr(*, split_seed: int = 0, n_train: int = 1437, n_val: int = 180, n_test: int = 180,
                    target_range=(-1.0, 1.0)) -> SignalSet:
    """scikit-learn's 1,797 8x8 digits (intensities 0..16): the embedded default image-INR task."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)
    return _image_signals("digits-inr", images, d.target, 16.0, split_seed=split_seed, n_train=n_train,
                          n_val=n_val, n_test=n_test, target_range=target_range, info={"source": "sklearn digits"})


# Which IDX images an image-INR task fits: the 10,000 t10k images, the 60,000 training images, or
# all 70,000 (training images first, then t10k, as ``source_index`` counts them) split as DWSNets'.
INR_SOURCES = {"test": ("test",), "train": ("train",), "all": ("train", "test")}


def _load_idx_inr(dataset: str, task: str, data_dir, source: str, downsample: int, split_seed: int,
                  n_train: int, n_val: int, n_test: int, target_range) -> SignalSet:
    if source not in INR_SOURCES:
        raise InputError(f"task {task!r}: option 'source' must be one of {list(INR_SOURCES)}, got {source!r}")
    directory = _resolve_for_protocol(dataset, data_dir, "train" in INR_SOURCES[source])
    parts = load_idx_images(dataset, directory, parts=INR_SOURCES[source])
    pools = None
    if source == "all":
        pools = (len(parts["train"][1]), len(parts["test"][1]))
        images = np.concatenate([parts["train"][0], parts["test"][0]])
        labels = np.concatenate([parts["train"][1], parts["test"][1]])
    else:
        images, labels = parts[source]
    _check_int(task, "downsample", downsample, 1)
    if downsample > 1:
        from .tasks import _downsample
        images = _downsample(images.astype(np.float32), downsample, task)
    info = {"source": f"{dataset} {source} IDX", "downsample": downsample}
    if pools is not None:
        info["split_protocol"] = ("DWSNets: train/val from the training images, test from t10k; source_index "
                                  f"< {pools[0]} is a training image, the rest t10k")
    return _image_signals(task, images, labels, 255.0, split_seed=split_seed, n_train=n_train, n_val=n_val,
                          n_test=n_test, target_range=target_range, info=info, pools=pools)


def load_mnist_inr(*, data_dir: str | None = None, source: str = "test", downsample: int = 1, split_seed: int = 0,
                   n_train: int = 8000, n_val: int = 1000, n_test: int = 1000, target_range=(-1.0, 1.0)) -> SignalSet:
    """MNIST images from IDX files (the 10,000-image test set by default), one INR per image;
    ``source`` one of ``INR_SOURCES`` (``all``: the 70,000 images, split as DWSNets')."""
    return _load_idx_inr("mnist", "mnist-inr", data_dir, source, downsample, split_seed, n_train, n_val, n_test,
                         target_range)


def load_fashion_mnist_inr(*, data_dir: str | None = None, source: str = "test", downsample: int = 1,
                           split_seed: int = 0, n_train: int = 8000, n_val: int = 1000, n_test: int = 1000,
                           target_range=(-1.0, 1.0)) -> SignalSet:
    """Fashion-MNIST images from IDX files, one INR per image."""
    return _load_idx_inr("fashion-mnist", "fashion-mnist-inr", data_dir, source, downsample, split_seed,
                         n_train, n_val, n_test, target_range)


def load_sine_inr(*, split_seed: int = 0, n_train: int = 800, n_val: int = 100, n_test: int = 100,
                  n_points: int = 64, frequency=(0.5, 4.0), phase=(0.0, 2 * np.pi), amplitude: float = 1.0) -> SignalSet:
    """1-D sine waves ``amplitude * sin(2 pi f x + phase)`` on x in [-1, 1] with random frequency f
    (cycles per unit) and phase: the INR regression task (target: ``frequency``)."""
    task = "sine-inr"
    for opt, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_int(task, opt, v, 0)
    _check_int(task, "n_points", n_points, 2)
    ranges = {}
    for opt, v in (("frequency", frequency), ("phase", phase)):
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and float(v[0]) <= float(v[1])):
            raise InputError(f"task {task!r}: option {opt!r} must be a range [low, high], found {v!r}")
        ranges[opt] = (float(v[0]), float(v[1]))
    n = n_train + n_val + n_test
    rng = np.random.default_rng(np.random.SeedSequence([split_seed, 78]))
    f = rng.uniform(*ranges["frequency"], n)
    ph = rng.uniform(*ranges["phase"], n)
    coords = grid_coords((n_points,))
    x = coords[:, 0].double().numpy()
    values = amplitude * np.sin(2 * np.pi * f[:, None] * x[None, :] + ph[:, None])
    fields = {"split": _split_field(n_train, n_val, n_test), "source_index": np.arange(n, dtype=np.int64),
              "frequency": f, "phase": ph}
    a = abs(float(amplitude))
    return SignalSet(task, coords, torch.from_numpy(values[..., None].astype(np.float32)), fields, (n_points,),
                     (-a, a), {"split_seed": split_seed, "n_train": n_train, "n_val": n_val, "n_test": n_test,
                               "frequency": list(ranges["frequency"]), "phase": list(ranges["phase"]),
                               "amplitude": amplitude, "target_range": [-a, a]})


SIGNAL_TASKS: dict[str, Callable[..., SignalSet]] = {
    "digits-inr": load_digits_inr,
    "mnist-inr": load_mnist_inr,
    "fashion-mnist-inr": load_fashion_mnist_inr,
    "sine-inr": load_sine_inr,
}


def load_signals(name: str, **options: Any) -> SignalSet:
    """Load INR task ``name``; unknown names or options raise an error naming the valid ones."""
    if name not in SIGNAL_TASKS:
        raise InputError(f"task.name: unknown INR task {name!r}; expected one of {sorted(SIGNAL_TASKS)}")
    fn = SIGNAL_TASKS[name]
    valid = list(inspect.signature(fn).parameters)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"task {name!r}: unknown option(s) {unknown}; valid options: {valid}")
    sig = fn(**options)
    sig.info = sig.info | {"name": name, "signal_shape": list(sig.signal_shape), "num_signals": len(sig)}
    return sig
