"""Cut a zoo down to the runs that meet conditions on what they achieved and how they were made.

``wsl zoo subset ZOO.h5 --where 'test_acc>=0.9' --where activation=relu --out good.h5`` writes the
selected runs as a zoo of its own: every dataset's selected rows (weights at every checkpoint,
metrics, hyperparameters, signals, status, seeds, indices) copied as stored, so the subset is a
valid zoo that ``wsl zoo verify`` accepts and the DataModules read. Its ``subset`` attribute records
where it came from (the source's path, sha256 and config hash, the conditions and the epoch its
metrics were compared at), and its config_hash starts with "subset-" so that generation never
resumes into a file that holds only some of a config's models. Annotations (``/annotations``)
travel: each per-run one's selected rows, with its ``info``, as computed in the source (an
``lmc_*`` mean stays the mean over the run's pairs there), and the pairs whose two runs are both
kept, under the same run ids.

A condition is ``name>=x``, ``name<=x``, ``name>x``, ``name<x`` (numbers), ``name=v`` or
``name!=v`` (``v`` one value or several separated by commas), on a metric (at one checkpoint: the
last unless an epoch is given), a hyperparameter or a signal field. ``>=``, ``<=`` and ``=`` mean
exactly what ``Zoo.select`` means by a range and a set of values.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, UnknownNameError
from .store import (STATUS_NAMES, STATUS_PENDING, Zoo, ZooFileError, create_zoo, write_annotation_pairs,
                    write_annotations, write_models)

WHERE_FORMS = "NAME>=X, NAME<=X, NAME>X, NAME<X, NAME=V[,V...] or NAME!=V[,V...]"
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|==|=|>|<)\s*(.*?)\s*$")
ORDERED = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}
STATUSES = (*STATUS_NAMES.values(), "all")


@dataclass(frozen=True)
class Condition:
    """One ``--where``: a stored name, a comparison and its value(s) as given."""

    name: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}{self.op}{','.join(self.values)}"

    def mask(self, vals: np.ndarray) -> np.ndarray:
        """True for the stored values ``vals`` [M] that meet the condition (NaN meets no comparison)."""
        strings = vals.dtype.kind in "OUS"
        if self.op in ORDERED:
            if strings:
                raise InputError(f"--where {self}: {self.name!r} holds strings (e.g. {vals[0]!r}); compare it "
                                 f"with = or !=")
            return ORDERED[self.op](vals, self._number(self.values[0]))
        wanted = list(self.values) if strings else [self._number(v) for v in self.values]
        hit = np.isin(vals.astype(str) if strings else vals, wanted)
        return hit if self.op == "=" else ~hit

    def _number(self, text: str) -> int | float:
        """A Python number, as ``Zoo.select`` compares: float32 metrics against it in float32."""
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise InputError(f"--where {self}: {self.name!r} holds numbers, found {text!r}") from None


def parse_where(text: str) -> Condition:
    """``"test_acc>=0.9"`` -> Condition; a malformed one is an error naming the forms."""
    m = _WHERE.match(text)
    if not m or not m.group(3):
        raise InputError(f"--where {text!r}: expected {WHERE_FORMS}")
    name, op, value = m.groups()
    op = "=" if op == "==" else op
    values = tuple(v.strip() for v in value.split(",")) if op in ("=", "!=") else (value,)
    if (op in ORDERED and "," in value) or any(not v for v in values):
        raise InputError(f"--where {text!r}: expected {WHERE_FORMS}")
    return Condition(name, op, values)


def where_rows(zoo: Zoo, conditions: Sequence[Condition | str], checkpoint: int | None = None,
               status: str = "done") -> np.ndarray:
    """File rows of the runs of ``status`` (``all``: any) that meet every condition; metrics are
    read at epoch ``checkpoint`` (default: the last stored)."""
    if status not in STATUSES:
        raise InputError(f"--status: expected one of {list(STATUSES)}, found {status!r}")
    conditions = [parse_where(c) if isinstance(c, str) else c for c in conditions]
    position = -1 if checkpoint is None else zoo.epoch_position(int(checkpoint))
    keep = np.zeros(len(zoo), dtype=bool)
    keep[zoo.select(status=None if status == "all" else status)] = True
    for cond in conditions:
        try:
            vals = zoo.column(cond.name, position)
        except UnknownNameError as e:
            raise UnknownNameError(f"--where {cond}: {e}") from None
        keep &= cond.mask(vals)
    return np.flatnonzero(keep)


def file_sha256(path: str | Path, block: int = 2 ** 24) -> str:
    """The sha256 of a file, read in blocks (a zoo can be larger than memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def copy_annotations(z: Zoo, out: str | Path, rows: np.ndarray) -> None:
    """Write ``z``'s annotations of file rows ``rows`` into the zoo ``out`` (whose runs are those
    rows, in that order): per-run ones row by row, pairs where both runs are among them."""
    for name in z.annotation_names:
        write_annotations(out, {name: z.annotation(name)[rows]}, z.annotation_info(name))
    pairs = z.annotation_pairs
    if pairs is not None:
        kept = np.isin(pairs["run_a"], z.index[rows]) & np.isin(pairs["run_b"], z.index[rows])
        write_annotation_pairs(out, {k: v[kept] for k, v in pairs.items()}, z.annotation_pairs_info)


def subset_zoo(path: str | Path, out: str | Path, where: Sequence[str] = (), *, checkpoint: int | None = None,
               status: str = "done", block: int = 1024, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the runs of zoo ``path`` that meet ``where`` (``--where`` strings) as the new zoo file
    ``out``, written beside and renamed when complete. Returns the provenance it records."""
    path, out = Path(path), Path(out)
    if out.exists():
        raise ZooFileError(f"{out}: exists already; subset writes a new file")
    conditions = [parse_where(w) for w in where]
    with Zoo(path, cache_mb=0) as z:
        rows = where_rows(z, conditions, checkpoint, status)
        said = " and ".join(map(str, conditions)) or "no condition"
        if not len(rows):
            raise InputError(f"{path}: no {'' if status == 'all' else status + ' '}run meets {said} (metrics at "
                             f"epoch {z.checkpoint_epochs[-1] if checkpoint is None else checkpoint}; "
                             f"{int(z.done.sum())} of {len(z)} runs are done)")
        provenance = {"source": str(path), "source_sha256": file_sha256(path), "source_config_hash": z.config_hash,
                      "where": [str(c) for c in conditions], "status": status, "models": int(len(rows)),
                      "checkpoint_epoch": z.checkpoint_epochs[-1] if checkpoint is None else int(checkpoint)}
        if z.subset is not None:
            provenance["source_subset"] = z.subset
        identity = {k: v for k, v in provenance.items() if k != "source"}  # a moved source is the same source
        config_hash = "subset-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        signals = None
        if z.is_inr:
            signals = {"coords": z.signal_coords().numpy(), "values": z.signal_values(rows).numpy(),
                       "fields": {k: z.signal(k)[rows].tolist() for k in z.signal_names}}
        tmp = out.with_name(out.name + ".subsetting")
        try:
            create_zoo(tmp, name=z.name, config_json=json.dumps(z.config, sort_keys=True), config_hash=config_hash,
                       spec=z.spec, task_info=z.task, checkpoint_epochs=z.checkpoint_epochs,
                       metric_names=z.metric_names, indices=z.index[rows], seeds=z.seed[rows],
                       hparams={h: z.hparam(h)[rows].tolist() for h in z.hparam_names}, chunk_size=z.chunk_size,
                       signals=signals, random_streams=z.random_streams, generated=z.generated, subset=provenance,
                       merged=z.merged)
            source_status, diverged = z.status[rows], z.diverged_epoch[rows]
            finished = np.flatnonzero(source_status != STATUS_PENDING)  # pending ones stay as created
            for s in range(0, len(finished), block):
                new = finished[s:s + block]
                src = rows[new]
                write_models(tmp, new, z.read_params(src), z.read_metrics(src), source_status[new], diverged[new])
                if log is not None and len(finished) > block:
                    log(f"subset: {min(s + block, len(finished))}/{len(finished)} runs copied")
            copy_annotations(z, tmp, rows)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return provenance
