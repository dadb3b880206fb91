"""Reader of a folder of anyone's checkpoints (``--format folder``): one file per run, or one folder per run.

A checkpoint is a ``.pt`` / ``.pth`` / ``.bin`` state_dict, a ``.safetensors`` file, a Lightning
``.ckpt`` or a Hugging Face-style folder (``model.safetensors`` + ``config.json``), read
tensors-only when the writer first looks at it (``StateDictFile``). Its run and epoch come from
``--pattern`` (``'{run}/epoch_{epoch}.pt'``, ``*`` any name part), else from its name: a name with
an epoch (``epoch=12``, ``epoch_12``, ``checkpoint_000050``, ``step_500``; in the file's or its
folder's name) is a checkpoint of the run its folder holds (Lightning's ``checkpoints/`` folder
stands for the run above it); any other file is a run of one checkpoint whose epoch is not known
(``UNKNOWN_EPOCH``). Beside the checkpoints of a run, epochless files (``last.ckpt``) are copies:
skipped, and said so. The number in a name is taken as written (Lightning's ``epoch=0`` is the
state after one epoch, as its ``metrics.csv`` counts; a zoo's epoch 0 is the initialisation).

What a run is: ``--table`` (CSV, JSON list or JSONL of rows keyed by ``file``, ``run`` or
``run`` + ``epoch``), and Lightning's ``hparams.yaml`` / ``metrics.csv`` in the run's folder or the
two above it. Rows with an epoch give that checkpoint's metrics (numbers not already a
hyperparameter of the run, and, unless named as a measurement, not one value at every epoch of
the run: such a column, e.g. a learning rate repeated on each row, is a hyperparameter); otherwise measurements (names with acc, loss, error, ...:
``writer.is_metric``) are the metrics of the run's last checkpoint (or of the file's checkpoint),
and other values its hyperparameters (``seed``, ``activation`` and ``split`` also set the run's
own fields).
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from wsl.core.checkpoint import HF_WEIGHTS, STATE_DICT_SUFFIXES, hf_weights
from wsl.interchange.records import ImportedCheckpoint, ImportedRun, ImportSource, StateDictFile
from wsl.interchange.writer import is_metric
from zoo.errors import InputError, MissingFileError, warn

NAME = "folder"
UNKNOWN_EPOCH = -1  # a checkpoint whose name and table say nothing of its epoch (a final model, most often)
EPOCH_IN_NAME = re.compile(r"(?:^|[^a-z])(?:epoch|checkpoint|ckpt|step|iter|iteration)[=_-]?(\d+)", re.I)
TABLE_SUFFIXES = (".csv", ".json", ".jsonl")
RUN_FIELDS = ("seed", "activation", "split")


def detect(sources: list[Path]) -> bool:
    """A file of a checkpoint, or a folder holding one anywhere below."""
    for s in sources:
        s = Path(s)
        if s.is_file() and s.suffix in STATE_DICT_SUFFIXES or hf_weights(s) is not None:
            return True
        if s.is_dir() and any(f.endswith(STATE_DICT_SUFFIXES) for _, _, fs in os.walk(s) for f in fs):
            return True
    return False


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _units(root: Path) -> Iterator[Path]:
    """Every checkpoint below ``root`` (files, and HF-style folders as one), in name order."""
    if root.is_file() or hf_weights(root) is not None:
        yield root
        return
    for d, dirs, files in os.walk(root):
        dirs.sort(key=_natural)
        here = Path(d)
        keep = []
        for sub in dirs:
            if hf_weights(here / sub) is not None:
                yield here / sub
            else:
                keep.append(sub)
        dirs[:] = keep
        for f in sorted(files, key=_natural):
            if f.endswith(STATE_DICT_SUFFIXES) and not (f in HF_WEIGHTS and (here / "config.json").exists()):
                yield here / f


def _epoch(name: str) -> int | None:
    m = EPOCH_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def _pattern_regex(pattern: str) -> re.Pattern:
    if "{run}" not in pattern or "{epoch}" not in pattern:
        raise InputError(f"--pattern {pattern!r}: expected both {{run}} and {{epoch}}, e.g. '{{run}}/epoch_{{epoch}}.pt'")
    parts = re.split(r"(\{run\}|\{epoch\}|\*)", pattern)
    rx = "".join({"{run}": "(?P<run>.+?)", "{epoch}": r"(?P<epoch>\d+)", "*": "[^/]*"}.get(p, re.escape(p)) for p in parts)
    return re.compile(rx + "$")


def _place(unit: Path, root: Path, rx: re.Pattern | None, base: str) -> tuple[str, int | None, str] | None:
    """(run, epoch, the run its folder holds) of a checkpoint below ``root``, runs named after
    ``base`` (the source's name where several are given); None where ``--pattern`` does not match."""
    def named(folder: Path) -> str:
        if folder.name == "checkpoints" and folder != root:
            folder = folder.parent  # Lightning: <run>/checkpoints/epoch=3-step=100.ckpt
        run = folder.relative_to(root).as_posix() if root in folder.parents else "."
        return base if run == "." else f"{base}/{run}" if base else run

    rel = unit.relative_to(root).as_posix() if unit != root else unit.name
    if rx is not None:
        m = rx.search(rel)
        return None if m is None else (f"{base}/{m['run']}" if base else m["run"], int(m["epoch"]), "")
    epoch = _epoch(unit.stem if unit.suffix in STATE_DICT_SUFFIXES else unit.name)
    if unit == root:  # a file given by itself: a run of its own
        return (unit.stem if unit.suffix in STATE_DICT_SUFFIXES else unit.name), epoch, ""
    folder = unit.parent
    if epoch is None and root in folder.parents:
        epoch = _epoch(folder.name)  # checkpoint_000050/model.pt
        if epoch is not None:
            folder = folder.parent
    if epoch is not None:
        return named(folder), epoch, named(folder)
    run = unit.relative_to(root).as_posix() if unit != root else unit.name
    run = run[:-len(unit.suffix)] if unit.suffix in STATE_DICT_SUFFIXES else run
    return (f"{base}/{run}" if base else run), None, named(unit.parent) if unit != root else ""


def _typed(v: Any) -> Any:
    """A table cell as a number where it is one."""
    if not isinstance(v, str):
        return v
    t = v.strip()
    if t == "":
        return None
    try:
        return int(t)
    except ValueError:
        try:
            return float(t)
        except ValueError:
            return t


def read_table(path: Path, keyed: bool = True) -> list[dict[str, Any]]:
    """The rows of a CSV, JSON (a list of objects) or JSONL table (``keyed``: by file, path or run)."""
    if not path.exists():
        raise MissingFileError(f"{path}: table not found")
    if path.suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path}: expected a table ending in {', '.join(TABLE_SUFFIXES)}, found {path.suffix!r}")
    text = path.read_text()
    try:
        if path.suffix == ".csv":
            rows = [{k: _typed(v) for k, v in r.items() if k} for r in csv.DictReader(text.splitlines())]
        elif path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, csv.Error) as e:
        raise InputError(f"{path}: not a readable {path.suffix[1:].upper()} table ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: expected a list of rows (objects), found {type(rows).__name__}")
    if keyed and rows and not any(k in rows[0] for k in ("file", "path", "run")):
        raise InputError(f"{path}: expected a column file, path or run to key its rows by, found {sorted(rows[0])}")
    return rows


def _lightning_files(unit: Path, root: Path, listing: dict) -> tuple[Path | None, Path | None]:
    """Lightning's hparams.yaml and metrics.csv in the checkpoint's folder or the two above, within
    ``root`` (``listing``: each folder's Lightning files, looked up once)."""
    found: dict[str, Path] = {}
    d = unit.parent
    for _ in range(3):
        if d not in listing:
            listing[d] = {n for n in ("hparams.yaml", "metrics.csv") if (d / n).is_file()}
        for name in listing[d]:
            found.setdefault(name, d / name)
        if d == root or root not in d.parents:
            break
        d = d.parent
    return found.get("hparams.yaml"), found.get("metrics.csv")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, bool):
            out[f"{prefix}{k}"] = int(v)
    return out


def _read_hparams_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:  # Lightning may write Python tags: plain YAML only
        warn(f"{path}: not plain YAML ({str(e).splitlines()[0]}); its hyperparameters are not read")
        return {}
    return _flat(d) if isinstance(d, dict) else {}


def _read_metrics_csv(path: Path) -> dict[int, dict[str, float]]:
    """Lightning's metrics.csv: per epoch, the last value logged of each metric (rows hold some each)."""
    out: dict[int, dict[str, float]] = {}
    for row in read_table(path, keyed=False):
        epoch = row.get("epoch")
        if not isinstance(epoch, int):
            continue
        out.setdefault(epoch, {}).update({k: float(v) for k, v in row.items()
                                          if k not in ("epoch", "step") and isinstance(v, (int, float))})
    return out


def open(sources: list[Path], pattern: str | None = None, table: str | Path | None = None) -> ImportSource:
    """The runs of the checkpoints below ``sources`` (see the module docstring)."""
    sources = [Path(s) for s in sources]
    for s in sources:
        if not s.exists():
            raise MissingFileError(f"{s}: not found")
    rx = _pattern_regex(pattern) if pattern else None
    runs: dict[str, dict[int | None, Path]] = {}
    roots: dict[str, Path] = {}
    folder_run: dict[str, str] = {}  # an epochless file's run -> the run of its folder's epoch-named checkpoints
    unmatched, copies = 0, []
    for root in sources:
        for unit in _units(root):
            placed = _place(unit, root, rx, root.name if len(sources) > 1 and unit != root else "")
            if placed is None:
                unmatched += 1
                continue
            run, epoch, folder_run[run] = placed
            if epoch in runs.setdefault(run, {}):
                raise InputError(f"{unit} and {runs[run][epoch]}: two checkpoints of run {run!r} at epoch {epoch}")
            runs[run][epoch] = unit
            roots[run] = root
    for run, ckpts in list(runs.items()):
        beside = runs.get(folder_run[run], {})
        if None in ckpts and (len(ckpts) > 1 or folder_run[run] != run and any(e is not None for e in beside)):
            copies.append(ckpts.pop(None))  # last.ckpt beside epoch=3.ckpt: a copy of one of them
            if not ckpts:
                del runs[run]
    if unmatched:
        warn(f"{unmatched} checkpoint files do not match --pattern {pattern!r}: not imported")
    if copies:
        warn(f"{len(copies)} files without an epoch in their names beside checkpoints that have one, skipped as "
             f"copies (e.g. {copies[0]}); name them with --pattern to import them")
    if not runs:
        raise InputError(f"{', '.join(map(str, sources))}: no checkpoints found (files ending in "
                         f"{', '.join(STATE_DICT_SUFFIXES)}, or folders holding {' or '.join(HF_WEIGHTS)})")
    table_path = Path(table) if table else None
    rows = read_table(table_path) if table_path else []
    order = sorted(runs, key=_natural)
    listing: dict[Path, set] = {}
    lightning = {run: _lightning_files(next(iter(runs[run].values())), roots[run], listing) for run in order}
    files = ([table_path] if table_path else []) + sorted({f for pair in lightning.values() for f in pair if f})
    by_file, by_run, by_epoch = _index_rows(rows, runs, roots)
    used = set()

    def run_records() -> Iterator[ImportedRun]:
        for run in order:
            ckpts = runs[run]
            epochs = sorted(ckpts, key=lambda e: UNKNOWN_EPOCH if e is None else e)
            metrics = {e: {} for e in epochs}
            hparams: dict[str, Any] = {}
            hp_file, metrics_file = lightning[run]
            if hp_file:
                hparams |= _read_hparams_yaml(hp_file)
            if metrics_file:
                logged = _read_metrics_csv(metrics_file)
                for e in epochs:
                    metrics[e] |= logged.get(e, {})
            for row_set, per_ckpt in ((by_run.get(run, []), None),
                                      *(((by_file.get(ckpts[e], [])), e) for e in epochs)):
                for row in row_set:
                    used.add(id(row))
                    target = epochs[-1] if per_ckpt is None else per_ckpt
                    for k, v in row.items():
                        if k in ("file", "path", "run", "epoch") or v is None:
                            continue
                        if is_metric(k) and isinstance(v, (int, float)):
                            metrics[target][k] = float(v)
                        else:
                            hparams[k] = v
            epoch_rows = [(e, row) for e in epochs for row in by_epoch.get((run, e), [])]
            # a column that is not named as a measurement and holds one value at every epoch of the
            # run is a property of the run (a hyperparameter), not of its checkpoints
            values: dict[str, set] = {}
            for _, row in epoch_rows:
                for k, v in row.items():
                    values.setdefault(k, set()).add(v)
            for e, row in epoch_rows:
                used.add(id(row))
                for k, v in row.items():
                    if k in ("file", "path", "run", "epoch") or v is None:
                        continue
                    per_run = not is_metric(k) and len(values[k]) == 1
                    if isinstance(v, (int, float)) and not per_run and (is_metric(k) or k not in hparams):
                        metrics[e][k] = float(v)
                    else:
                        hparams[k] = v
            own = {k: hparams.get(k) for k in RUN_FIELDS}
            yield ImportedRun(
                run=run, source=str(ckpts[epochs[0]] if len(epochs) == 1 else ckpts[epochs[0]].parent),
                checkpoints=[ImportedCheckpoint(UNKNOWN_EPOCH if e is None else e, StateDictFile(ckpts[e]),
                                                metrics[e], str(ckpts[e])) for e in epochs],
                hparams={k: v for k, v in hparams.items() if k != "seed"},
                seed=own["seed"] if isinstance(own["seed"], int) else None,
                activation=own["activation"] if isinstance(own["activation"], str) else None,
                split=own["split"] if isinstance(own["split"], str) else None)
        if rows and len(used) < len(rows):
            warn(f"{table_path}: {len(rows) - len(used)} of {len(rows)} rows name no imported checkpoint or run")

    return ImportSource(format=NAME, runs=run_records(), count=len(order), files=files,
                        options={"sources": [str(s) for s in sources], "pattern": pattern,
                                 "table": str(table_path) if table_path else None})


def _index_rows(rows: list[dict], runs: dict[str, dict], roots: dict[str, Path]):
    """Table rows by checkpoint file, by run, and by (run, epoch)."""
    files: dict[str, Path] = {}
    for run, ckpts in runs.items() if any("file" in r or "path" in r for r in rows) else ():
        for path in ckpts.values():
            for key in (str(path), path.relative_to(roots[run]).as_posix() if path != roots[run] else path.name,
                        path.name, path.stem):
                files.setdefault(key, path)
    by_file: dict[Path, list] = {}
    by_run: dict[str, list] = {}
    by_epoch: dict[tuple, list] = {}
    for row in rows:
        key = row.get("file", row.get("path"))
        if key is not None:
            path = files.get(str(key))
            if path is not None:
                by_file.setdefault(path, []).append(row)
            continue
        run = str(row.get("run"))
        names = [run] + [r for r in runs if r.endswith("/" + run)]
        run = next((r for r in names if r in runs), run)
        if row.get("epoch") is not None:
            by_epoch.setdefault((run, int(row["epoch"])), []).append(row)
        else:
            by_run.setdefault(run, []).append(row)
    return by_file, by_run, by_epoch
