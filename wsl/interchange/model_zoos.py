"""Schürholt et al.'s model zoos (ModelZoos, 2022; the zoos SANE learns on) read as their loader reads them.

A zoo root holds one Ray Tune trial folder per network (plus ``dataset.pt``, ``config.json``,
``readme.md``, which are not read). Per trial (ModelZoos/ModelZooDataset
``code/checkpoints_to_datasets/dataset_base.py``, ``load_checkpoints_remote`` and
``read_properties_from_path``):

- ``checkpoint_<epoch>/checkpoints`` (or ``checkpoint_<epoch:06d>``): a state_dict of the
  network's ``module_list`` (``code/model_definitions/def_net.py``), read tensors-only;
- ``params.json``: the trial's flat config (``model::type``, ``model::nlin``, ``optim::lr``,
  ``seed``, ...): its scalar entries are the run's hyperparameters, ``seed`` its seed;
- ``result.json``: JSON lines, one per reported epoch (``train_loss``, ``train_acc``,
  ``test_loss``, ``test_acc``, optionally ``val_*``). The loader reads epoch e's line at
  ``e - offset`` and checks it by asserting ``training_iteration == e`` (offset 1, else 0): a
  line's epoch is its ``training_iteration``, which we read directly. ModelZoos' trainer
  (``code/model_definitions/def_NN_experiment.py``) saves the untrained network and reports it
  as iteration 0 with ``train_loss`` and ``train_acc`` set to -999 (not measured): those are
  left out. Lines without ``training_iteration`` are taken in order from epoch 0 where there is
  one per stored epoch (as many lines as the last epoch + 1), else from epoch 1;
  ``result_offset`` forces line j to epoch j + offset.

Splits: the loader shuffles the trial folders with ``random.seed(42)`` and cuts them 70/15/15
(SANE's ``ds_split``); it lists them with ``Path.iterdir`` (file-system order), we sort them by
name first, so the split is reproducible but may differ from one made on another file system.

Our weight spaces hold the MLP zoos exactly (``model::type`` MLP: ``nn.Linear`` layers with the
named nonlinearity). The CNN zoos (CNN-s, CNN-m: max pooling, then a linear layer on the flattened
feature map) compute what no spec of ``zoo.architectures`` computes (convolutions, global average
pooling, a linear head), so they are refused rather than imported as different networks.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Iterator

from zoo.architectures import build_spec
from zoo.errors import InputError, MissingFileError
from zoo.weight_space import ACTIVATIONS

from .published import PublishedFile, existing, hparam_record, read_tensors
from .records import ImportSource, ImportedCheckpoint, ImportedRun

NAME = "model-zoos"
PARAMS, RESULTS, CHECKPOINT_FILE = "params.json", "result.json", "checkpoints"
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_SEED = 42
# def_net.py's nlin names -> ours (nn.LeakyReLU's default slope 0.01 is our leaky_relu's)
NONLINEARITIES = {"leakyrelu": "leaky_relu", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "gelu": "gelu"}
METRIC = re.compile(r"(train|val|test)_(loss|acc)")
NOT_MEASURED = -999  # def_NN_experiment.py's train metrics of the untrained network's report
EXPECTED = "a model-zoo checkpoint (a state_dict of module_list.<i>.weight / .bias)"


def _is_trial(p: Path) -> bool:
    return p.is_dir() and (p / PARAMS).is_file() and any(CHECKPOINT_DIR.fullmatch(c.name) for c in p.iterdir())


def _trials(sources: list[Path]) -> list[Path]:
    """Trial folders: the sources themselves, or the folders inside a zoo root, sorted by name."""
    out = []
    for s in sources:
        out += [s] if _is_trial(s) else sorted(p for p in s.iterdir() if _is_trial(p)) if s.is_dir() else []
    return out


def detect(sources: list[Path]) -> bool:
    """A zoo root of trial folders (or trial folders) with params.json and checkpoint_<epoch>/ folders."""
    try:
        return bool(_trials([Path(s) for s in sources]))
    except OSError:
        return False


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path}: not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None


def _checkpoints(trial: Path) -> list[tuple[int, Path]]:
    found = {}
    for c in trial.iterdir():
        m = CHECKPOINT_DIR.fullmatch(c.name)
        if m and (c / CHECKPOINT_FILE).is_file():
            found[int(m.group(1))] = c / CHECKPOINT_FILE
    return sorted(found.items())


def read_results(path: Path, epochs: list[int], offset: int | None) -> dict[int, dict[str, float]]:
    """Epoch -> metrics from ``result.json``'s lines: each line's ``training_iteration``, else
    (or with ``offset`` given) line j at epoch j + offset."""
    if not path.is_file():
        return {}
    lines = []
    for n, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {n + 1}: not JSON ({e})") from None
    default = 0 if epochs and len(lines) == max(epochs) + 1 else 1
    out = {}
    for j, line in enumerate(lines):
        if not isinstance(line, dict):
            raise InputError(f"{path}: line {j + 1}: expected a JSON object of metrics, found {type(line).__name__}")
        it = line.get("training_iteration")
        epoch = it if offset is None and isinstance(it, int) and not isinstance(it, bool) else \
            j + (default if offset is None else offset)
        out[epoch] = {k: float(v) for k, v in line.items() if METRIC.fullmatch(k)
                      and isinstance(v, (int, float)) and not isinstance(v, bool) and v != NOT_MEASURED}
    return out


def _architecture(first: Path) -> tuple[int, list[int], int]:
    """(inputs, hidden sizes, outputs) of an MLP checkpoint; other networks are refused."""
    tensors, _ = read_tensors(first, EXPECTED)
    shapes = [tuple(v.shape) for v in tensors.values()]
    weights = [s for k, s in zip(tensors, shapes) if k.endswith("weight")]
    if any(len(s) != 2 for s in shapes if len(s) > 1) or len(weights) * 2 != len(shapes):
        raise InputError(f"{first}: expected the linear layers (weight and bias each) of an MLP zoo, found "
                         f"{ {k: list(v.shape) for k, v in tensors.items()} }")
    return weights[0][1], [w[0] for w in weights[:-1]], weights[-1][0]


def splits(trials: list[Path], fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[Path, str]:
    """Trial -> split: shuffled with ``random.seed(42)`` and cut as the loader cuts its three splits."""
    order = list(trials)
    random.Random(SPLIT_SEED).shuffle(order)
    a = int(fractions[0] * len(order))
    b = a + int(fractions[1] * len(order))
    return {t: "train" if i < a else "val" if i < b else "test" for i, t in enumerate(order)}


def _hparams(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def open(sources: list[Path], result_offset: int | None = None) -> ImportSource:
    """The trials of a model zoo, one run each with every stored epoch, read lazily."""
    sources = existing(sources)
    trials = _trials(sources)
    if not trials:
        raise InputError(f"{', '.join(map(str, sources))}: expected a model zoo root of trial folders, each with "
                         f"{PARAMS} and checkpoint_<epoch>/{CHECKPOINT_FILE}")
    params = {t: _json(t / PARAMS) for t in trials}
    for t, p in params.items():
        if not isinstance(p, dict):
            raise InputError(f"{t / PARAMS}: expected a JSON object of hyperparameters, found {type(p).__name__}")
        kind = p.get("model::type", "MLP")
        if kind != "MLP":
            raise InputError(f"{t / PARAMS}: model::type {kind!r}: max pooling and a linear layer on the flattened "
                             f"feature map, which no weight space of zoo.architectures computes (convolutions, "
                             f"global average pooling, a linear head); only MLP zoos are imported")
        nlin = p.get("model::nlin", "leakyrelu")
        if NONLINEARITIES.get(nlin) not in ACTIVATIONS:
            raise InputError(f"{t / PARAMS}: model::nlin {nlin!r}: expected one of {sorted(NONLINEARITIES)}")
    epochs = {t: _checkpoints(t) for t in trials}
    empty = [t for t, es in epochs.items() if not es]
    if empty:
        raise InputError(f"{empty[0]}: no checkpoint_<epoch>/{CHECKPOINT_FILE} file in the trial folder")
    d_in, hidden, d_out = _architecture(epochs[trials[0]][0][1])
    activations = {NONLINEARITIES[p.get("model::nlin", "leakyrelu")] for p in params.values()}
    activation = next(iter(activations)) if len(activations) == 1 else None
    spec = build_spec("mlp", (d_in,), d_out, hidden=hidden, activation=activation)
    split = splits(trials)
    names = sorted({k for p in params.values() for k in _hparams(p)})
    config = {
        "name": f"model-zoo-{sources[0].name}",
        "task": {"name": str(params[trials[0]].get("dataset::dump", sources[0].name)), "kind": "classification",
                 "input_shape": [d_in], "output_dim": d_out, "source": "model zoo (Schürholt et al. 2022)"},
        "architecture": {"name": "mlp", "hidden": hidden, "activation": activation},
        "hparams": hparam_record(names),
        "checkpoints": sorted({e for es in epochs.values() for e, _ in es}),
        "splits": {"seed": SPLIT_SEED, "fractions": list(SPLIT_FRACTIONS)},
    }

    def stream() -> Iterator[ImportedRun]:
        for t in trials:
            stored = epochs[t]
            results = read_results(t / RESULTS, [e for e, _ in stored], result_offset)
            checkpoints = [ImportedCheckpoint(e, PublishedFile(f, EXPECTED), results.get(e, {}), str(f))
                           for e, f in stored]
            seed = params[t].get("seed")
            yield ImportedRun(run=t.name, checkpoints=checkpoints, hparams=_hparams(params[t]), split=split[t],
                              seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                              activation=NONLINEARITIES[params[t].get("model::nlin", "leakyrelu")], source=str(t))

    # the checkpoint files are hashed by their PublishedFile as the writer reads them
    files = [f for t in trials for f in (t / PARAMS, t / RESULTS) if f.is_file()]
    return ImportSource(format=NAME, runs=stream(), spec=spec, config=config, count=len(trials), files=files,
                        name=config["name"], task=config["task"],
                        options={"sources": [str(s) for s in sources], "result_offset": result_offset})
