"""Reader of the folder ``wsl zoo export`` writes (``--format wsl-export``): back into the same zoo.

The layout is ``zoo.export``'s: ``zoo.json`` (name, config, config_hash, spec, checkpoint epochs,
metric and hyperparameter names, task, provenance), ``runs.csv`` (run, index, split, status, seed,
hyperparameters, signal fields), ``metrics.csv`` (run, epoch, metrics), one state_dict per run and
epoch (``run_<index>/epoch_<epoch>.safetensors`` or ``.pt``, under the spec's own names) and, for
INR zoos, ``signals.safetensors``; the per-run annotations are the runs.csv columns that
zoo.json's ``annotations`` names, and ``pairs.csv`` (where present) holds ``/annotations/pairs``.
Everything the export kept comes back as it was: the numbers are written by ``repr`` and parsed
back to the same double; a column's type is that of all its cells (integers, else numbers, else
strings), as the zoo stored it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

from wsl.interchange.records import ImportedCheckpoint, ImportedRun, ImportSource, StateDictFile
from zoo.errors import InputError, MissingFileError
from zoo.weight_space import WeightSpaceSpec

NAME = "wsl-export"
FORMAT = "wsl-export"
VERSION = 1
FIXED = ("run", "index", "split", "status", "seed")


def _info(source: Path) -> dict | None:
    f = source / "zoo.json"
    if not f.is_file():
        return None
    try:
        info = json.loads(f.read_text())
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def detect(sources: list[Path]) -> bool:
    return len(sources) == 1 and Path(sources[0]).is_dir() and _info(Path(sources[0])) is not None


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingFileError(f"{path}: not found (a wsl zoo export holds zoo.json, runs.csv and metrics.csv)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def typed_column(cells: list[str]) -> list[Any]:
    """A CSV column as the zoo stored it: integers, else floats, else strings; empty cells None."""
    present = [c for c in cells if c != ""]
    for kind in (int, float):
        try:
            [kind(c) for c in present]
        except ValueError:
            continue
        return [kind(c) if c != "" else None for c in cells]
    return [c if c != "" else None for c in cells]


def open(sources: list[Path]) -> ImportSource:
    """The runs of an exported zoo folder, with what its zoo file recorded."""
    if len(sources) != 1:
        raise InputError(f"--format {NAME}: expected one exported folder, found {len(sources)} sources")
    root = Path(sources[0])
    info = _info(root)
    if info is None:
        raise InputError(f"{root}: expected a folder written by wsl zoo export (zoo.json with format {FORMAT!r})")
    if int(info.get("version", -1)) != VERSION:
        raise InputError(f"{root / 'zoo.json'}: export version {info.get('version')}, this wsl reads {VERSION}")
    runs = _rows(root / "runs.csv")
    metric_rows = _rows(root / "metrics.csv")
    hparam_names = list(info.get("hparam_names", []))
    metric_names = list(info.get("metric_names", []))
    columns = list(runs[0]) if runs else []
    annotation_info = dict(info.get("annotations") or {})
    signal_names = [c for c in columns if c not in FIXED and c not in hparam_names and c not in annotation_info]
    typed = {c: typed_column([r[c] for r in runs]) for c in hparam_names + signal_names}
    pairs = None
    if (root / "pairs.csv").is_file():
        rows = _rows(root / "pairs.csv")
        names = list(rows[0]) if rows else ["run_a", "run_b", "kind"]
        pairs = {c: [int(r[c]) if c in ("run_a", "run_b") else r[c] if c == "kind" else float(r[c]) for r in rows]
                 for c in names}
    per_run: dict[str, dict[int, dict[str, float]]] = {}
    for row in metric_rows:
        per_run.setdefault(row["run"], {})[int(row["epoch"])] = {m: float(row[m]) for m in metric_names if m in row}
    epochs = [int(e) for e in info["checkpoint_epochs"]]
    signals = None
    if info.get("is_inr"):
        from safetensors.torch import load_file

        arrays = load_file(str(root / "signals.safetensors"))
        signals = {"coords": arrays["coords"].numpy(), "values": arrays["values"].numpy()}

    def records() -> Iterator[ImportedRun]:
        for j, row in enumerate(runs):
            folder = root / row["run"]
            checkpoints = []
            for e in epochs:
                f = next((folder / f"epoch_{e}{s}" for s in (".safetensors", ".pt") if (folder / f"epoch_{e}{s}").is_file()), None)
                if f is not None:
                    checkpoints.append(ImportedCheckpoint(e, StateDictFile(f), per_run.get(row["run"], {}).get(e, {}), str(f)))
            yield ImportedRun(run=row["run"], checkpoints=checkpoints, source=str(folder),
                              hparams={h: typed[h][j] for h in hparam_names},
                              signals={s: typed[s][j] for s in signal_names},
                              split=row.get("split") or None, seed=int(row["seed"]), index=int(row["index"]),
                              status=row.get("status") or None,
                              annotations={a: float(row[a]) for a in annotation_info})

    return ImportSource(format=NAME, runs=records(), spec=WeightSpaceSpec.from_json(info["spec"]),
                        config=info.get("config") or {}, count=len(runs),
                        files=[root / "zoo.json", root / "runs.csv", root / "metrics.csv"]
                        + ([root / "signals.safetensors"] if info.get("is_inr") else [])
                        + ([root / "pairs.csv"] if pairs is not None else []),
                        annotation_info=annotation_info or None, pairs=pairs, pairs_info=info.get("pairs_info"),
                        signals=signals, name=info.get("name"), task=info.get("task"),
                        config_hash=info.get("config_hash"), checkpoint_epochs=epochs, metric_names=metric_names,
                        generated=info.get("generated"), options={"sources": [str(root)]})
