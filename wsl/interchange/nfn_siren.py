"""NFN's SIREN datasets (Zhou et al. 2023: MNIST, Fashion-MNIST, CIFAR-10) read as their loader reads them.

Layout: ``siren_{mnist,fashion,cifar}_wts/randinit_smaller_<label>s/net<idx>.pth``, one SIREN per
image; ``idx`` is the image's index in the concatenated train + test set and the folder names its
class. The loader (AllanYangZhou/nfn ``experiments/data_utils.py``, ``SirenDataset``) takes the
idx from ``net(\\d+)\\.pth``, the label from ``_(\\d)s`` and splits by idx at its
``split_points`` (``experiments/classify_siren_configs/dset/*.yaml``: 45,000 and 50,000): train
below the first, val below the second, test the rest. Its glob ``<prefix>_*`` also matches the
augmented copies ``randinit_smaller_aug<i>_<label>s`` (its own TODO says it should not); we read
exactly ``<prefix>_<digit>s``, and an augmented set by giving its prefix.

Each file is the state_dict of nfn's ``Siren`` (``experiments/siren_utils.py``): ``net.0.linear``,
``net.1.linear`` sine layers sin(30 (Wx + b)), ``net.2`` linear, no output offset, 2 -> 32 -> 32 ->
1 (3 for CIFAR); tensors already in PyTorch layout. Its grid (``get_mgrid``: ``torch.meshgrid``
with 'ij' indexing, the row first) is ours, and images are normalised to [-1, 1]
(``Normalize(0.5, 0.5)``), recorded as the task's ``target_range``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from zoo.architectures import build_spec
from zoo.errors import InputError

from .published import FITTED_EPOCH, PublishedFile, existing, grid_signals, image_inr_task
from .records import ImportSource, ImportedCheckpoint, ImportedRun

NAME = "nfn-siren"
PREFIX = "randinit_smaller"
SPLIT_POINTS = (45_000, 50_000)  # classify_siren_configs/dset/{mnist,fashion,cifar}.yaml
OMEGA_0 = 30.0  # SIREN_kwargs: first_omega_0 = hidden_omega_0 = 30
HIDDEN = [32, 32]
IDX = re.compile(r"net(\d+)\.pth$")
# dataset (from the folder name, as SirenAndOriginalDataset tells them apart) -> task, image shape, channels
DATASETS = {"mnist": ("mnist-inr", (28, 28), 1), "fashion": ("fashion-mnist-inr", (28, 28), 1),
            "cifar": ("cifar10-inr", (32, 32), 3)}
EXPECTED = "an NFN SIREN state_dict (net.0.linear.weight, ..., net.2.bias)"


def _label_folders(root: Path, prefix: str) -> list[tuple[int, Path]]:
    pattern = re.compile(re.escape(prefix) + r"_(\d)s")
    return sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name)))


def _root(sources: list[Path], prefix: str) -> Path | None:
    """The ``siren_*_wts`` folder among the sources (or the folder above a label folder)."""
    for s in sources:
        for candidate in (s, s.parent):
            if candidate.is_dir() and _label_folders(candidate, prefix):
                return candidate
    return None


def detect(sources: list[Path]) -> bool:
    """A folder of ``randinit_smaller_<d>s`` label folders."""
    try:
        return len(sources) == 1 and _root([Path(s) for s in sources], PREFIX) is not None
    except OSError:
        return False


def _dataset(root: Path) -> str:
    """mnist / fashion / cifar from the folder name; fashion before mnist ('fashion' names hold no 'mnist' in nfn)."""
    name = root.name.lower()
    for key in ("fashion", "cifar", "mnist"):
        if key in name:
            return key
    raise InputError(f"{root}: cannot tell the dataset from the folder name; expected siren_mnist_wts, "
                     f"siren_fashion_wts or siren_cifar_wts (or give dataset=mnist|fashion|cifar)")


def open(sources: list[Path], prefix: str = PREFIX, dataset: str | None = None,
         split_points: tuple[int, int] = SPLIT_POINTS) -> ImportSource:
    """The SIRENs under ``<root>/<prefix>_<d>s``, one run each in idx order, read lazily."""
    sources = existing(sources)
    root = _root(sources, prefix)
    if root is None:
        raise InputError(f"{', '.join(map(str, sources))}: expected a folder of {prefix}_<digit>s folders of net<idx>.pth")
    dataset = dataset or _dataset(root)
    if dataset not in DATASETS:
        raise InputError(f"dataset: expected one of {sorted(DATASETS)}, found {dataset!r}")
    task, shape, channels = DATASETS[dataset]
    nets: dict[int, tuple[int, Path]] = {}
    for label, folder in _label_folders(root, prefix):
        for f in folder.iterdir():
            m = IDX.fullmatch(f.name)
            if not m:
                continue
            idx = int(m.group(1))
            if idx in nets:
                raise InputError(f"{f}: image {idx} has a second SIREN (also {nets[idx][1]})")
            nets[idx] = (label, f)
    val_point, test_point = (int(v) for v in split_points)
    spec = build_spec("siren", (2,), channels, hidden=HIDDEN, omega_0=OMEGA_0)
    config = {
        "name": f"nfn-siren-{dataset}",
        "task": image_inr_task(task, shape, channels, (-1.0, 1.0), f"NFN SIREN {dataset} (Zhou et al. 2023)",
                               prefix=prefix, split_points=[val_point, test_point]),
        "architecture": {"name": "siren", "hidden": HIDDEN, "omega_0": OMEGA_0},
        "hparams": {},
        "checkpoints": [FITTED_EPOCH],
    }

    def split_of(idx: int) -> str:
        return "train" if idx < val_point else "val" if idx < test_point else "test"

    def stream() -> Iterator[ImportedRun]:
        for idx in sorted(nets):
            label, path = nets[idx]
            split = split_of(idx)
            yield ImportedRun(run=f"{path.parent.name}/{path.name}",
                              checkpoints=[ImportedCheckpoint(FITTED_EPOCH, PublishedFile(path, EXPECTED), source=str(path))],
                              signals={"label": label, "split": split, "source_index": idx}, split=split,
                              activation="sine", source=str(path))

    # each net<idx>.pth is hashed by its PublishedFile as the writer reads it
    return ImportSource(format=NAME, runs=stream(), spec=spec, config=config, count=len(nets), files=[],
                        signals=grid_signals(shape), name=config["name"], task=config["task"],
                        options={"sources": [str(s) for s in sources], "prefix": prefix, "dataset": dataset,
                                 "split_points": [val_point, test_point]})
