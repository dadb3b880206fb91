"""Check a zoo file for truncation and corruption, and say where: which model, which layer.

Every parameter chunk (16 models at one checkpoint) carries a Fletcher-32 checksum, so a flipped
byte is caught on read, and the models of a failing chunk are named one by one. A truncated file
cannot be opened by HDF5 at all; ``verify`` then reads a zero-padded copy to name the models whose
weights lay in the lost bytes.

An imported zoo (``wsl zoo import``) may hold checkpoints and metrics its source never recorded
(a run without one of the epochs, a metric logged at some epochs only): there a done model's whole
checkpoint, or a metric, is NaN by design, not by damage, and only inf or a checkpoint partly NaN
is a problem.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

from .store import FORMAT, FORMAT_VERSION, STATUS_DIVERGED, STATUS_DONE, STATUS_NAMES
from .weight_space import WeightSpaceSpec


def _check_file(f: h5py.File, where: str) -> list[str]:
    problems: list[str] = []
    if f.attrs.get("format") != FORMAT:
        return [f"{where}: not a wsl zoo file (attribute 'format' is {f.attrs.get('format')!r})"]
    if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
        return [f"{where}: format version {f.attrs.get('format_version')}, expected {FORMAT_VERSION}"]
    try:
        spec = WeightSpaceSpec.from_json(f.attrs["spec"])
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption of the attribute
        return [f"{where}: attribute 'spec' is unreadable ({e})"]
    C = len(f.attrs["checkpoint_epochs"])
    try:
        index = f["models/index"][()]
        status = f["models/status"][()]
        div = f["models/diverged_epoch"][()]
    except Exception as e:  # noqa: BLE001
        return [f"{where}: /models is unreadable ({e})"]
    M = len(index)
    for name, arr in (("status", status), ("diverged_epoch", div)):
        if len(arr) != M:
            problems.append(f"{where}: /models/{name} has {len(arr)} entries, expected {M}")
    bad_status = sorted(set(np.unique(status)) - set(STATUS_NAMES))
    if bad_status:
        problems.append(f"{where}: /models/status holds unknown codes {bad_status}; expected {STATUS_NAMES}")
    for i in np.flatnonzero((status == STATUS_DIVERGED) & (div < 0)):
        problems.append(f"{where}: model {index[i]} is marked diverged but has no diverged_epoch")
    done = status == STATUS_DONE
    imported = "imported" in f.attrs  # NaN where the source recorded nothing: see the module docstring
    for p in spec.params:
        if p.name not in f.get("params", {}):
            problems.append(f"{where}: layer {p.name}: dataset /params/{p.name} is missing")
            continue
        ds = f["params"][p.name]
        if ds.shape != (M, C, *p.shape):
            problems.append(f"{where}: layer {p.name}: shape {ds.shape}, expected {(M, C, *p.shape)}")
            continue
        block = ds.chunks[0] if ds.chunks else 1
        for start in range(0, M, block):  # a block of whole HDF5 chunks; row by row only if it fails
            rows = range(start, min(start + block, M))
            try:
                blocks = [(rows, ds[rows.start:rows.stop])]
            except Exception:  # noqa: BLE001 - a checksum or decompression error: find the models
                blocks = []
                for r in rows:
                    try:
                        blocks.append((range(r, r + 1), ds[r:r + 1]))
                    except Exception as e:  # noqa: BLE001
                        problems.append(f"{where}: model {index[r]} (row {r}), layer {p.name}: unreadable ({_short(e)})")
            for rs, w in blocks:
                w = w.reshape(len(rs), C, -1)
                finite = (np.isfinite(w).all(2) | (np.isnan(w).all(2) if imported else False)).all(1)
                for r in np.asarray(rs)[done[rs.start:rs.stop] & ~finite]:
                    problems.append(f"{where}: model {index[r]} (row {r}), layer {p.name}: marked done but holds NaN/inf")
    for m in json.loads(f.attrs.get("metric_names", "[]")):
        if m not in f.get("metrics", {}):
            problems.append(f"{where}: metric {m}: dataset /metrics/{m} is missing")
            continue
        try:
            vals = f["metrics"][m][()]
        except Exception as e:  # noqa: BLE001
            problems.append(f"{where}: metric {m}: unreadable ({_short(e)})")
            continue
        if vals.shape != (M, C):
            problems.append(f"{where}: metric {m}: shape {vals.shape}, expected {(M, C)}")
            continue
        for r in np.flatnonzero(done & ~(np.isfinite(vals) | (np.isnan(vals) if imported else False)).all(1)):
            problems.append(f"{where}: model {index[r]} (row {r}), metric {m}: marked done but NaN")
    if "signal_fields" in f.attrs:
        problems += _check_signals(f, where, M)
    return problems


def _check_signals(f: h5py.File, where: str, M: int) -> list[str]:
    """An INR zoo's signals: every dataset readable, one entry per model."""
    problems = []
    names = [f"signals/fields/{k}" for k in json.loads(f.attrs["signal_fields"])] + ["signals/coords", "signals/values"]
    for name in names:
        if name not in f:
            problems.append(f"{where}: dataset /{name} is missing")
            continue
        try:
            arr = f[name][()]
        except Exception as e:  # noqa: BLE001 - a checksum or decompression error
            problems.append(f"{where}: dataset /{name}: unreadable ({_short(e)})")
            continue
        if name != "signals/coords" and len(arr) != M:
            problems.append(f"{where}: dataset /{name} has {len(arr)} entries, expected {M}")
    return problems


def _lost_metadata(f: h5py.File, where: str, eof: int) -> list[str]:
    """The per-model metadata (metrics, status, hparams, ...) whose bytes lay beyond the end of a
    truncated file: a zero-filled chunk can pass its checksum, so look at where chunks lie."""
    lost: list[str] = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or name.startswith("params/"):
            return  # weights are checked model by model in _check_file
        try:
            if obj.chunks is None:
                spans = [(obj.id.get_offset(), obj.id.get_storage_size())]
            else:
                spans = [(c.byte_offset, c.size) for c in map(obj.id.get_chunk_info, range(obj.id.get_num_chunks()))]
        except Exception:  # noqa: BLE001 - the chunk index itself lay in the lost bytes
            lost.append(f"{where}: dataset /{name}: its chunk index lay in the lost bytes (unreadable)")
            return
        if any(off is not None and off + size > eof for off, size in spans):
            lost.append(f"{where}: dataset /{name} lay in the lost bytes (values there now read as zeros)")

    def walk(group: h5py.Group) -> None:  # visititems stops at the first unreadable group index
        try:
            names = list(group.keys())
        except Exception:  # noqa: BLE001
            lost.append(f"{where}: group {group.name}: its index lay in the lost bytes (unreadable)")
            return
        for key in names:
            try:
                obj = group[key]
            except Exception:  # noqa: BLE001
                lost.append(f"{where}: {group.name.rstrip('/')}/{key}: its header lay in the lost bytes (unreadable)")
                continue
            if isinstance(obj, h5py.Group):
                walk(obj)
            else:
                visit(obj.name.lstrip("/"), obj)

    walk(f)
    return lost


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160]


def verify(path: str | Path) -> list[str]:
    """Problems found in the zoo file (an empty list: the file is intact). Pending models are not
    problems: they are reported by ``wsl zoo info`` and finished by resuming."""
    path = Path(path)
    if not path.exists():
        return [f"{path}: file not found"]
    try:
        with h5py.File(path, "r") as f:
            return _check_file(f, str(path))
    except OSError as e:
        msg = str(e)
        m = re.search(r"eof = (\d+).*stored_eof = (\d+)", msg)
        if not m:
            return [f"{path}: cannot be opened as HDF5 ({_short(e)})"]
        found, expected = int(m.group(1)), int(m.group(2))
        head = f"{path}: truncated: {found} bytes, the file records {expected}"
        with tempfile.TemporaryDirectory() as tmp:
            padded = Path(tmp) / "padded.h5"
            shutil.copyfile(path, padded)
            with open(padded, "r+b") as fh:
                fh.truncate(expected)  # zero-fill the lost tail
            try:
                with h5py.File(padded, "r") as f:
                    found_problems = _lost_metadata(f, str(path), found) + _check_file(f, str(path))
            except OSError as e2:
                return [head + f"; the file's metadata lay in the lost bytes ({_short(e2)})"]
        return [head] + found_problems
