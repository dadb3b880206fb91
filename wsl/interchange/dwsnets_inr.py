"""The DWSNets MNIST-INR and Fashion-MNIST-INR datasets (Navon et al. 2023) read as their loaders read them.

A splits JSON lists each split's INR files, in one of two forms:

- MNIST (DWSNets ``experiments/mnist/generate_data_splits.py``): ``{"train": {"path": [...],
  "label": [...]}, "val": ..., "test": ...}``, labels as strings, files
  ``mnist_png_{training,testing}_<label>_<idx>/checkpoints/model_final.pth``;
- Fashion-MNIST (``fmnist_inrs/splits.json``, as neural-graphs'
  ``experiments/inr_classification/dataset/preprocess_fmnist.py`` reads it): ``{"train": [path,
  ...], ...}``, each file a state_dict plus its ``"label"``.

Each file is the state_dict of DWSNets' ``INR`` (``nn/inr.py``): ``seq = Siren(2, 32),
Siren(32, 32), nn.Linear(32, 1)`` with sin(30 (Wx + b)) layers, ``forward = seq(x) + 0.5``; the
loader (``experiments/data.py``, ``INRDataset``) takes the ``weight`` and ``bias`` entries in file
order. Paths recorded in the JSON are resolved as given, else by their trailing parts under the
JSON's folder (or ``root``), as neural-graphs re-roots them.

Onto our SIREN spec (``zoo.architectures.siren``, ω₀ in its options): our SIRENs have no output
offset, so the +0.5 is recorded where our INR zoos record it, in the task's ``target_range``
[-0.5, 0.5] (our network's output is the INR's minus 0.5, as ``configs/zoo/mnist_inr.yaml``
fits pixels in [0, 1]). DWSNets samples its image at ``np.meshgrid(x, y)`` points, the first
coordinate running along a row (``experiments/utils.py``, ``make_coordinates``); our grid
(``zoo.signals.grid_coords``) puts the row first, so the first layer's two input columns are
swapped: at every pixel our network computes the DWSNets INR's value there, minus 0.5.

Signal fields: ``label``, ``split`` as the JSON records them and, for MNIST, ``source_index`` as
``zoo.signals`` counts images (training images first, then the 10,000 test images): the number in
``mnist_png_<set>_<label>_<n>``, plus 60,000 for the test set. That the number is the image's
index in its IDX file (as the mnist_png export names its files) is unconfirmed by any loader.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import torch

from zoo.architectures import build_spec
from zoo.errors import InputError, MissingFileError
from zoo.store import SPLITS

from .published import FITTED_EPOCH, PublishedFile, existing, grid_signals, image_inr_task, read_tensors
from .records import ImportSource, ImportedCheckpoint, ImportedRun

NAME = "dwsnets-inr"
OMEGA_0 = 30.0  # nn/inr.py: Siren(w0=30.0)
OUTPUT_OFFSET = 0.5  # nn/inr.py: INR.forward returns seq(x) + 0.5
IMAGE_SHAPE = (28, 28)
MNIST_TRAIN_IMAGES = 60_000  # source_index of the first test image (zoo.signals' "all" order)
HIDDEN = [32, 32]  # INR(in_dim=2, n_layers=3, up_scale=16)
EXPECTED = "a DWSNets INR state_dict (seq.0.weight, seq.0.bias, ..., seq.2.bias)"
MNIST_FOLDER = re.compile(r"mnist_png_(training|testing)_(\d+)_(\d+)")
SPLITS_HEAD = re.compile(rb'^\s*\{\s*"(train|val|test)"\s*:\s*[\[{]')


def _splits_files(sources: list[Path]) -> list[Path]:
    out = []
    for s in sources:
        for p in (sorted(s.glob("*.json")) if s.is_dir() else [s]):
            if p.suffix == ".json" and p.is_file():
                with p.open("rb") as fh:
                    if SPLITS_HEAD.match(fh.read(256)):
                        out.append(p)
    return out


def detect(sources: list[Path]) -> bool:
    """A splits JSON (or a folder holding one) that starts ``{"train": [`` or ``{"train": {``."""
    try:
        return len(_splits_files([Path(s) for s in sources])) == 1
    except OSError:
        return False


def _entries(path: Path) -> list[tuple[str, str, int | None]]:
    """(split, recorded path, label or None) of every INR the JSON lists, split by split."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or not set(data) <= set(SPLITS) or not data:
        raise InputError(f"{path}: expected a splits JSON with keys among {list(SPLITS)}, found "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    out = []
    for split in SPLITS:
        part = data.get(split)
        if part is None:
            continue
        if isinstance(part, dict):
            paths, labels = part.get("path"), part.get("label")
            if not isinstance(paths, list) or not isinstance(labels, list) or len(paths) != len(labels):
                raise InputError(f"{path}: {split}: expected {{'path': [...], 'label': [...]}} of equal lengths")
            try:
                labels = [int(l) for l in labels]  # generate_data_splits.py writes them as strings
            except (TypeError, ValueError):
                raise InputError(f"{path}: {split}.label: expected class numbers, found {labels[:3]!r}...") from None
        elif isinstance(part, list):
            paths, labels = part, [None] * len(part)
        else:
            raise InputError(f"{path}: {split}: expected a list of paths or {{'path': [...], 'label': [...]}}, "
                             f"found {type(part).__name__}")
        if not all(isinstance(p, str) for p in paths):
            raise InputError(f"{path}: {split}: expected paths as strings")
        out += [(split, p, l) for p, l in zip(paths, labels)]
    return out


def resolve(recorded: str, bases: list[Path], hint: list | None = None) -> Path:
    """A path the JSON recorded: as given, else its trailing parts under each base (the longest
    first). ``hint`` keeps the (base, parts kept) that found the last one, tried first: 70,000
    paths of one dataset are re-rooted alike."""
    p = Path(recorded)
    if p.is_absolute() and p.exists():
        return p
    parts = p.parts[1:] if p.is_absolute() else p.parts
    tries = [(base, k) for base in bases for k in range(len(parts), 0, -1)]
    if hint:
        tries.insert(0, hint[0])
    for base, k in tries:
        candidate = base.joinpath(*parts[-k:])
        if k <= len(parts) and candidate.is_file():
            if hint is not None:
                hint[:] = [(base, k)]
            return candidate
    raise MissingFileError(f"{recorded}: INR file listed in the splits JSON not found as given nor under "
                           f"{', '.join(map(str, bases))}")


def to_our_grid(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The first layer's input columns swapped from DWSNets' (x = column, y = row) to our (row, column)."""
    weights = [k for k in tensors if "weight" in k]  # the loader's own test of a name
    if not weights or tensors[weights[0]].dim() != 2 or tensors[weights[0]].shape[1] != 2:
        raise InputError(f"{path}: expected {EXPECTED}; its first weight is not [hidden, 2]: "
                         f"{ {k: list(v.shape) for k, v in tensors.items()} }")
    out = dict(tensors)
    out[weights[0]] = tensors[weights[0]][:, [1, 0]].contiguous()
    return out


def open(sources: list[Path], root: str | Path | None = None) -> ImportSource:
    """The INRs a DWSNets splits JSON lists, one run each, read lazily. ``root``: where the INR
    folders are, when the JSON's recorded paths do not exist as given (default: the JSON's folder)."""
    sources = existing(sources)
    found = _splits_files(sources)
    if len(found) != 1:
        raise InputError(f"{', '.join(map(str, sources))}: expected one DWSNets splits JSON "
                         f"({{\"train\": ..., \"val\": ..., \"test\": ...}}), found {len(found)}")
    splits_json = found[0]
    entries = _entries(splits_json)
    bases = [Path(root)] if root is not None else []
    bases += [splits_json.parent, splits_json.parent.parent]
    hint: list = []
    files = [resolve(p, bases, hint) for _, p, _ in entries]
    fashion = any(l is None for _, _, l in entries)
    name = "fashion-mnist-inr" if fashion else "mnist-inr"
    spec = build_spec("siren", (2,), 1, hidden=HIDDEN, omega_0=OMEGA_0)
    target_range = (-OUTPUT_OFFSET, 1.0 - OUTPUT_OFFSET)
    config = {
        "name": f"dwsnets-{name}",
        "task": image_inr_task(name, IMAGE_SHAPE, 1, target_range,
                               "DWSNets " + ("Fashion-MNIST" if fashion else "MNIST") + " INRs (Navon et al. 2023)",
                               output_offset=OUTPUT_OFFSET, splits_file=splits_json.name),
        "architecture": {"name": "siren", "hidden": HIDDEN, "omega_0": OMEGA_0},
        "hparams": {},
        "checkpoints": [FITTED_EPOCH],
    }

    def stream() -> Iterator[ImportedRun]:
        for (split, recorded, label), path in zip(entries, files):
            if label is None:  # the Fashion-MNIST form: the label is in the file, read now
                tensors, extras = read_tensors(path, EXPECTED, extras=("label",))
                if "label" not in extras:
                    raise InputError(f"{path}: the splits JSON lists paths only, so the file must carry its "
                                     f"'label'; it has none")
                label, weights = int(extras["label"]), to_our_grid(tensors, path)
            else:  # read when the writer looks, so a resumed import skips it unread
                weights = PublishedFile(path, EXPECTED, to_our_grid)
            signals: dict[str, Any] = {"label": int(label), "split": split}
            m = MNIST_FOLDER.search(recorded)
            if m:
                signals["source_index"] = int(m.group(3)) + (MNIST_TRAIN_IMAGES if m.group(1) == "testing" else 0)
            yield ImportedRun(run=recorded, checkpoints=[ImportedCheckpoint(FITTED_EPOCH, weights, source=str(path))],
                              signals=signals, split=split, activation="sine", source=str(path))

    # files read eagerly are hashed from this list; a PublishedFile hashes its own as it is read
    eager = [f for (_, _, label), f in zip(entries, files) if label is None]
    return ImportSource(format=NAME, runs=stream(), spec=spec, config=config, count=len(entries),
                        files=[splits_json, *eager], signals=grid_signals(IMAGE_SHAPE), name=config["name"],
                        task=config["task"], options={"sources": [str(s) for s in sources],
                                                      "root": None if root is None else str(root)})
