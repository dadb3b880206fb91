"""Export a zoo as plain files: one state_dict per run and checkpoint, and CSVs of what each run is.

Layout (format ``wsl-export``, version 1; ``wsl zoo import`` reads it back)::

    DIR/zoo.json           {"format": "wsl-export", "version": 1, "name", "config", "config_hash",
                            "spec" (the weight-space spec as a JSON string), "checkpoint_epochs"
                            (the exported epochs), "metric_names", "hparam_names", "task", "source"
                            (the zoo's path), "split", "is_inr", "generated" (provenance or null),
                            "annotations" ({name: info} of the per-run annotations), "pairs_info"
                            (the info of /annotations/pairs, or null)}
    DIR/runs.csv           run,index,split,status,seed,<each hparam>,<each signal field>,<each annotation>
    DIR/metrics.csv        run,epoch,<each metric>          (one row per exported checkpoint)
    DIR/run_<index:06d>/epoch_<epoch>.safetensors           (or .pt: a state_dict saved by torch.save)
    DIR/signals.safetensors  INR zoos only: coords [P, d], values [M, P, d_out] in runs.csv order
    DIR/pairs.csv          only where the zoo has /annotations/pairs: run_a,run_b,kind,<each measure>
                           (run ids as in runs.csv's index; the pairs whose two runs are exported)

Why these names: the tensors carry ``TorchNet(spec)``'s parameter names, so a file loads with
``load_state_dict`` into the plain ``torch.nn`` network with nothing of ours installed. Why
``repr(float(x))``: it is the shortest text that parses back to the same double, so every stored
number (float32 metrics included) survives the CSV bitwise; ``nan`` and ``inf`` too. The ``split``
column is the zoo's recorded split (INR zoos' ``split`` field), empty where it records none: the
split of other zoos is drawn by the DataModules, which this package does not import.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import InputError
from .store import SPLITS, STATUS_NAMES, Zoo

EXPORT_FORMAT = "wsl-export"
EXPORT_VERSION = 1
WEIGHT_FORMATS = ("safetensors", "pt")
STATUSES = (*STATUS_NAMES.values(), "all")
READ_ROWS = 256  # file rows read at once per checkpoint (16 HDF5 chunks): memory stays small


def run_name(index: int) -> str:
    """A run's folder name: its model index, zero-padded so that folders sort by index."""
    return f"run_{int(index):06d}"


def csv_cell(v: Any) -> str:
    """A stored value as CSV text that parses back to exactly it: ints as ints, floats by
    ``repr`` (NaN as ``nan``), strings as they are."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def export_positions(zoo: Zoo, checkpoint: str | int) -> list[int]:
    """Checkpoint positions for ``all`` (every stored one, the initialisation included), ``last``
    or an epoch."""
    if checkpoint == "all":
        return list(range(len(zoo.checkpoint_epochs)))
    if checkpoint == "last":
        return [len(zoo.checkpoint_epochs) - 1]
    try:
        epoch = int(checkpoint)
    except (TypeError, ValueError):
        raise InputError(f"--checkpoint: expected all, last or an epoch ({zoo.checkpoint_epochs}), "
                         f"found {checkpoint!r}") from None
    return [zoo.epoch_position(epoch)]


def export_rows(zoo: Zoo, split: str = "all", status: str = "done") -> np.ndarray:
    """File rows of the runs to export: of a status (``all``: every one) and a recorded split."""
    if status not in STATUSES:
        raise InputError(f"--status: expected one of {list(STATUSES)}, found {status!r}")
    if split not in (*SPLITS, "all"):
        raise InputError(f"--split: expected one of {[*SPLITS, 'all']}, found {split!r}")
    rows = zoo.select(status=None if status == "all" else status)
    if split != "all":
        if "split" not in zoo.signal_names:
            raise InputError(f"{zoo.path}: --split {split}: this zoo records no split of its runs (only INR zoos "
                             f"store one, as the 'split' signal field); the split of other zoos is drawn by the "
                             f"DataModules from seeded fractions. Use --split all")
        rows = rows[zoo.signal("split")[rows] == split]
    return rows


def _prepare_out(out: Path) -> Path:
    """The temporary folder beside ``out`` that becomes it when the export is complete."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise InputError(f"{out}: exists already and is not an empty folder; export writes a new folder")
    tmp = out.with_name(out.name + ".exporting")
    if tmp.exists():  # left by an export that was cut short
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for row in rows:
            w.writerow([csv_cell(v) for v in row])


def _save(tensors: dict[str, torch.Tensor], path: Path, fmt: str) -> None:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)


def export_zoo(path: str | Path, out: str | Path, *, split: str = "all", fmt: str = "safetensors",
               checkpoint: str | int = "last", status: str = "done",
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the runs of zoo ``path`` (of ``status``, in ``split``) at ``checkpoint`` (``all``,
    ``last`` or an epoch) to the new folder ``out``, written beside and renamed when complete.
    ``log`` receives progress lines. Returns what was written: runs, epochs, folder."""
    if fmt not in WEIGHT_FORMATS:
        raise InputError(f"--format: expected one of {list(WEIGHT_FORMATS)}, found {fmt!r}")
    out = Path(out)
    with Zoo(path, cache_mb=0) as z:
        positions = export_positions(z, checkpoint)
        rows = export_rows(z, split, status)
        if not len(rows):
            raise InputError(f"{z.path}: no {'' if status == 'all' else status + ' '}run"
                             f"{'' if split == 'all' else ' of split ' + split} to export")
        epochs = [z.checkpoint_epochs[c] for c in positions]
        index = z.index[rows]
        names = [run_name(i) for i in index]
        tmp = _prepare_out(out)
        try:
            _write_runs(z, tmp, rows, names)
            metrics = z.read_metrics(rows)
            _write_csv(tmp / "metrics.csv", ["run", "epoch", *z.metric_names],
                       ([name, e, *(metrics[m][k, c] for m in z.metric_names)]
                        for k, name in enumerate(names) for c, e in zip(positions, epochs)))
            if z.is_inr:
                from safetensors.torch import save_file

                save_file({"coords": z.signal_coords().contiguous(),
                           "values": z.signal_values(rows).contiguous()}, str(tmp / "signals.safetensors"))
            for name in names:
                (tmp / name).mkdir()
            # consecutive spans of at most READ_ROWS rows: one hyperslab per parameter and checkpoint
            spans = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows // READ_ROWS)) + 1)
            written = 0
            for span in spans:
                start, stop = int(rows[span[0]]), int(rows[span[-1]]) + 1
                for c, e in zip(positions, epochs):
                    weights = z.read_slice(start, stop, c)
                    for k in span:
                        r = int(rows[k]) - start
                        tensors = {p.name: torch.from_numpy(weights[p.name][r].copy()) for p in z.spec.params}
                        _save(tensors, tmp / names[k] / f"epoch_{e}.{fmt}", fmt)
                written += len(span)
                if log is not None and len(rows) > READ_ROWS:
                    log(f"export: {written}/{len(rows)} runs x {len(epochs)} checkpoint(s)")
            pairs = z.annotation_pairs
            if pairs is not None:
                kept = np.isin(pairs["run_a"], index) & np.isin(pairs["run_b"], index)
                _write_csv(tmp / "pairs.csv", list(pairs), zip(*(v[kept] for v in pairs.values())))
            info = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "name": z.name, "config": z.config,
                    "config_hash": z.config_hash, "spec": z.spec.to_json(), "checkpoint_epochs": epochs,
                    "metric_names": z.metric_names, "hparam_names": z.hparam_names, "task": z.task,
                    "source": str(z.path), "split": split, "is_inr": z.is_inr, "generated": z.generated,
                    "annotations": {a: z.annotation_info(a) for a in z.annotation_names},
                    "pairs_info": z.annotation_pairs_info}
            (tmp / "zoo.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
            if out.exists():
                out.rmdir()  # the empty folder the user named
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return {"out": out, "runs": len(rows), "epochs": epochs}


def _write_runs(z: Zoo, tmp: Path, rows: np.ndarray, names: list[str]) -> None:
    """runs.csv: one row per exported run, its hyperparameters, (INR zoos) signal fields and annotations."""
    fixed = ["run", "index", "split", "status", "seed"]
    signal_fields = [s for s in z.signal_names if s not in fixed and s not in z.hparam_names]
    clash = sorted(set(z.annotation_names) & {*fixed, *z.hparam_names, *signal_fields})
    if clash:
        raise InputError(f"{z.path}: annotations {clash} share their names with runs.csv columns; expected "
                         f"annotation names distinct from {[*fixed, *z.hparam_names, *signal_fields]}")
    split = z.signal("split")[rows] if "split" in z.signal_names else [""] * len(rows)
    status = z.status[rows]
    columns = ([z.hparam(h)[rows] for h in z.hparam_names] + [z.signal(s)[rows] for s in signal_fields]
               + [z.annotation(a)[rows] for a in z.annotation_names])
    _write_csv(tmp / "runs.csv", [*fixed, *z.hparam_names, *signal_fields, *z.annotation_names],
               ([names[k], z.index[r], split[k], STATUS_NAMES[int(status[k])], z.seed[r], *(col[k] for col in columns)]
                for k, r in enumerate(rows)))
