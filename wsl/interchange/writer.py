"""The one writer of imported zoos: an ``ImportSource``'s runs into a zoo file, streamed, atomic, resumable.

Every reader's runs take the same path. Each run's checkpoints are matched onto the weight space
(the source's, or the one the first checkpoint's structure describes: ``wsl.weights.matching``);
a run that does not match is skipped with the reason (``strict``: refused). Runs are decoded a
chunk at a time (``workers`` processes read the files) and each finished chunk is staged in
``<out>.importing/`` beside the zoo: its weights (``chunk_<k>.npz``), then what the run is
(``chunk_<k>.json``, whose presence marks the chunk done). A killed import rerun with the same
command reads the staged runs' names and skips those runs unread (a ``StateDictFile`` reads its
file only when looked at). When every run is staged, the zoo file is made (its size, checkpoint
epochs, metric and hyperparameter names are known only then), filled chunk by chunk and renamed
onto ``out``; the staging folder goes. Memory holds one chunk of weights, plus a few numbers per run.

What a run becomes:

- epochs: the zoo's checkpoint epochs are the union over runs; a run without one of them has NaN
  weights and metrics there and stays ``done`` (``NaN where never written``, as the store marks
  unwritten data): a researcher selects runs complete at an epoch by its finite metrics;
- metrics: per-checkpoint numbers; common names are mapped onto the zoo's (``test_accuracy`` ->
  ``test_acc``, ``val_loss``, a lone ``acc`` -> ``test_acc``: ``metric_name``), others kept as named;
- hyperparameters: per-run values (numbers or strings); a value missing from a run is NaN, or an
  empty string in a column of strings;
- status: as the source records it, else ``diverged`` (at the first epoch holding NaN or inf) or ``done``;
- activation: ``activation`` where given, else each run's (its format's, or its ``activation``
  hyperparameter); one for all is the spec's, several make it per run (the ``activation``
  hyperparameter);
- annotations: where the source carries them (a zoo's export), the per-run ones (NaN for a run
  without) and the pairs whose two runs are imported under their own run ids, each with its info.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from wsl.interchange.records import ImportedRun, ImportSource, StateDictFile
from wsl.weights.matching import infer_spec, match_state_dict
from zoo.errors import InputError, warn
from zoo.lock import hold
from zoo.store import (STATUS_DIVERGED, STATUS_DONE, STATUS_NAMES, STATUS_PENDING, ZooFileError, create_zoo,
                       json_value, write_annotation_pairs, write_annotations, write_models)
from zoo.weight_space import ACTIVATIONS, WeightSpaceSpec

CHUNK_RUNS = 256  # runs decoded and staged at once, fewer where their weights pass CHUNK_BYTES
CHUNK_BYTES = 256 * 2 ** 20
IMPORTED_STREAMS = "imported"  # random_streams of an imported zoo: its networks were trained elsewhere
MAX_LISTED = 100  # skipped runs and file digests named one by one in the provenance; beyond, counted
DEFAULT_ACTIVATION = "relu"

# metric names of other tools -> the zoo's: <split>_<acc|loss>
_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "eval": "test"}
_KIND_WORDS = {"acc": "acc", "accuracy": "acc", "loss": "loss"}


def metric_name(name: str, names: Iterable[str] = ()) -> str:
    """The zoo's name of a metric another tool named: ``test_accuracy`` / ``test/acc`` / ``val_accuracy``
    -> ``test_acc`` / ``val_acc``; a lone ``acc`` or ``loss`` -> the test one, where ``names`` (all
    names of the source) hold no other of its kind; any other name as it is."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if len(words) == 2 and words[0] in _SPLIT_WORDS and words[1] in _KIND_WORDS:
        return f"{_SPLIT_WORDS[words[0]]}_{_KIND_WORDS[words[1]]}"
    if len(words) == 1 and words[0] in _KIND_WORDS:
        kind = _KIND_WORDS[words[0]]
        others = [n for n in names if n != name and metric_name(n).endswith("_" + kind)]
        return name if others else f"test_{kind}"
    return name


def is_metric(name: str) -> bool:
    """Whether a per-run value named so is a measurement (a metric), not a hyperparameter."""
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    return bool(words & {"acc", "accuracy", "loss", "error", "psnr", "f1", "auc"})


def staging_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".importing")


def write_imported_zoo(source: ImportSource, out: str | Path, *, activation: str | None = None,
                       strict: bool = False, workers: int = 1, progress: bool = True,
                       chunk_runs: int = CHUNK_RUNS, max_chunks: int | None = None,
                       log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> Path:
    """Write the runs of ``source`` into the new zoo file ``out`` (see the module docstring); return it.
    ``max_chunks`` stops after staging that many chunks (a resumable state, as after a kill)."""
    out = Path(out)
    if activation is not None and activation not in ACTIVATIONS:
        raise InputError(f"--activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    if out.exists():
        raise ZooFileError(f"{out}: exists already; an import writes a new zoo file (delete it or choose another --out)")
    with hold(out):
        stage = _Staging(out, {"format": source.format, "options": source.options, "activation": activation,
                               "strict": strict})
        try:
            finished = _stage_runs(source, stage, activation=activation, strict=strict, workers=workers,
                                   progress=progress, chunk_runs=chunk_runs, max_chunks=max_chunks, log=log)
        except BaseException:
            stage.discard_if_empty()
            raise
        if not finished:
            return out
        _assemble(source, stage, out, activation=activation, log=log)
        shutil.rmtree(stage.dir)
    return out


class _Staging:
    """``<out>.importing/``: the identity of the import, the spec, and the finished chunks."""

    def __init__(self, out: Path, identity: dict[str, Any]):
        self.dir = staging_dir(out)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        ident_file = self.dir / "identity.json"
        if self.dir.exists() and ident_file.exists():
            found = json.loads(ident_file.read_text())
            if found != self.identity:
                raise ZooFileError(f"{self.dir}: an import of other sources or options is under way here "
                                   f"({json.dumps(found, sort_keys=True)[:300]}); rerun that command to finish it, "
                                   f"or delete the folder to start this one")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            ident_file.write_text(json.dumps(self.identity, sort_keys=True))
        self.created = not any(self.dir.glob("chunk_*.json"))
        (self.dir / "zoo.h5").unlink(missing_ok=True)  # an assembly cut short: made again

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk_*.json"))

    def records(self) -> Iterator[tuple[Path, dict]]:
        for path in self.chunks():
            yield path, json.loads(path.read_text())

    def seen(self) -> set[str]:
        """Runs staged (imported or skipped) by earlier attempts: not read again."""
        return {r["run"] for _, rec in self.records() for r in rec["runs"] + rec["skipped"]}

    @property
    def spec(self) -> WeightSpaceSpec | None:
        f = self.dir / "spec.json"
        return WeightSpaceSpec.from_json(f.read_text()) if f.exists() else None

    def save_spec(self, spec: WeightSpaceSpec) -> None:
        _atomic_write(self.dir / "spec.json", spec.to_json().encode())

    def write_chunk(self, runs: list[dict], arrays: dict[str, np.ndarray], skipped: list[dict]) -> None:
        k = len(self.chunks())
        npz = self.dir / f"chunk_{k:06d}.npz"
        tmp = npz.with_name(npz.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, npz)
        _atomic_write(self.dir / f"chunk_{k:06d}.json",
                      json.dumps({"runs": runs, "skipped": skipped}, default=json_value).encode())

    def discard_if_empty(self) -> None:
        """An import refused before any run was staged leaves nothing behind."""
        if self.created and not self.chunks():
            shutil.rmtree(self.dir, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _load(tensors) -> tuple[dict, bool, str | None, str | None]:
    """A checkpoint's state_dict, whether its order is the module's, its file and the file's sha256
    (a ``StateDictFile``, or any mapping that says so with ``ordered`` / ``path`` / ``sha256``)."""
    sd = tensors.load() if isinstance(tensors, StateDictFile) else dict(tensors)
    path = getattr(tensors, "path", None)
    return sd, getattr(tensors, "ordered", True), None if path is None else str(path), getattr(tensors, "sha256", None)


def decode_run(run: ImportedRun, spec: WeightSpaceSpec) -> dict[str, Any]:
    """One run read and matched onto ``spec``: its weights [C_run, *shape] per parameter, its
    epochs, metrics and file digests; or ``{"skipped": reason}`` where its tensors do not match.
    A file that cannot be read (a pickle, a damaged file) raises: that is not a mismatch."""
    params: list[list[np.ndarray]] = [[] for _ in spec.params]
    files: dict[str, str] = {}
    for ck in run.checkpoints:
        sd, ordered, path, digest = _load(ck.tensors)
        if path is not None and digest is not None:
            files[path] = digest
        try:
            tensors, _ = match_state_dict(spec, sd, ck.source or path or run.source or run.run, ordered=ordered)
        except InputError as e:
            return {"skipped": str(e)}
        for k, t in enumerate(tensors):
            params[k].append(t.detach().to("cpu").float().numpy())
    return {"params": [np.stack(p) if p else np.zeros((0, *q.shape), np.float32) for p, q in zip(params, spec.params)],
            "files": files}


def _decode_one(args: tuple[ImportedRun, str]) -> dict[str, Any]:
    run, spec_json = args
    return decode_run(run, WeightSpaceSpec.from_json(spec_json))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _decoder(workers: int):
    """``map(function, items)`` over ``workers`` processes (forked: the runs need not be rebuilt), or in this one."""
    if workers <= 1:
        return None, map
    import concurrent.futures as cf
    import multiprocessing as mp

    try:
        ctx = mp.get_context("fork")
        pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    except ValueError:  # no fork on this system: threads (safetensors and torch.load release the GIL for I/O)
        pool = cf.ThreadPoolExecutor(workers)
    return pool, lambda f, items: pool.map(f, items, chunksize=max(1, len(items) // (4 * workers)))


def _batches(runs: Iterable[ImportedRun], seen: set[str], size: Callable[[], int]) -> Iterator[list[ImportedRun]]:
    batch: list[ImportedRun] = []
    for run in runs:
        if run.run in seen:
            continue
        batch.append(run)
        if len(batch) >= size():
            yield batch
            batch = []
    if batch:
        yield batch


def _stage_runs(source: ImportSource, stage: _Staging, *, activation, strict, workers, progress, chunk_runs,
                max_chunks, log) -> bool:
    """Stage every run not yet staged; True when all are (False: stopped by ``max_chunks``)."""
    seen = stage.seen()
    if seen:
        log(f"resuming {stage.dir}: {len(seen)} runs already staged are not read again")
    spec = source.spec or stage.spec
    per_chunk = [chunk_runs]
    pool, mapper = _decoder(workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.count, initial=len(seen) if source.count else 0, unit="run", desc="import",
                   dynamic_ncols=True, file=sys.stderr)
    files_read, t0, staged = 0, time.perf_counter(), 0
    try:
        for batch in _batches(source.runs, seen, lambda: per_chunk[0]):
            if max_chunks is not None and staged >= max_chunks:
                return False
            if spec is None:
                spec = _infer(batch)
                stage.save_spec(spec)
            per_chunk[0] = max(1, min(chunk_runs, CHUNK_BYTES // max(
                1, 4 * spec.num_params * max(1, len(batch[0].checkpoints)))))
            if pool is None:
                results = [decode_run(r, spec) for r in batch]
            else:
                results = list(mapper(_decode_one, [(r, spec.to_json()) for r in batch]))
            _stage_chunk(stage, spec, batch, results, strict)
            staged += 1
            files_read += sum(len(r.checkpoints) for r in batch)
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix_str(f"{files_read / max(time.perf_counter() - t0, 1e-9):.0f} files/s")
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if spec is None:
        raise InputError(f"{', '.join(map(str, source.options.get('sources', []))) or 'the source'}: no runs to import")
    return True


def _infer(batch: list[ImportedRun]) -> WeightSpaceSpec:
    """The weight space of the first checkpoint's structure (activation left per run until the end)."""
    for run in batch:
        for ck in run.checkpoints:
            sd, ordered, path, _ = _load(ck.tensors)
            return infer_spec(sd, ck.source or path or run.source or run.run, ordered=ordered)
    raise InputError(f"{batch[0].source or batch[0].run}: no checkpoints to infer a weight space from")


def _stage_chunk(stage: _Staging, spec: WeightSpaceSpec, batch: list[ImportedRun], results: list[dict],
                 strict: bool) -> None:
    runs, kept, skipped = [], [], []
    for run, res in zip(batch, results):
        if "skipped" in res:
            if strict:
                raise InputError(f"{res['skipped']} (--strict: every run must match the weight space)")
            skipped.append({"run": run.run, "reason": res["skipped"]})
            continue
        kept.append(res["params"])
        runs.append({"run": run.run, "epochs": [ck.epoch for ck in run.checkpoints],
                     "metrics": [ck.metrics for ck in run.checkpoints], "hparams": run.hparams,
                     "signals": run.signals, "split": run.split, "seed": run.seed, "activation": run.activation,
                     "index": run.index, "status": run.status, "diverged_epoch": run.diverged_epoch,
                     "files": res["files"], "source": run.source, "annotations": run.annotations})
    for s in skipped:
        warn(f"skipped run {s['run']}: {s['reason']}")
    # one array per parameter: the runs' checkpoints one after another (few zip entries to write and read)
    params = spec.params
    arrays = {p.name: np.concatenate([k[i] for k in kept]) if kept else np.zeros((0, *p.shape), np.float32)
              for i, p in enumerate(params)}
    stage.write_chunk(runs, arrays, skipped)


def _column(values: list) -> list:
    """A hyperparameter column the store can keep: numbers (missing: NaN) or strings (missing: '')."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) for v in present):
        return ["" if v is None else v for v in values]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [math.nan if v is None else v for v in values]
    return ["" if v is None else str(v) for v in values]


def _assemble(source: ImportSource, stage: _Staging, out: Path, *, activation, log) -> None:
    """The zoo file from the staged chunks: made beside, filled chunk by chunk, renamed onto ``out``."""
    runs: list[dict] = []
    skipped: list[dict] = []
    spans: list[tuple[Path, int, int]] = []  # chunk, first row, runs
    digests = _Digests(source.files)
    for path, rec in stage.records():
        spans.append((path, len(runs), len(rec["runs"])))
        for r in rec["runs"]:  # a few numbers per run stay in memory; file names only in the digest
            digests.add(r.pop("files"))
            del r["source"]
        runs += rec["runs"]
        skipped += rec["skipped"]
    if not runs:
        raise InputError(f"no run matched the weight space: all {len(skipped)} were skipped "
                         f"(first: {skipped[0]['run']}: {skipped[0]['reason']})" if skipped else "no runs to import")
    spec = source.spec or stage.spec
    epochs = list(source.checkpoint_epochs) if source.checkpoint_epochs is not None else \
        sorted({e for r in runs for e in r["epochs"]})
    pos = {e: c for c, e in enumerate(epochs)}
    stray = next((r for r in runs if set(r["epochs"]) - set(pos)), None)
    if stray is not None:
        raise InputError(f"run {stray['run']}: checkpoints at epochs {sorted(set(stray['epochs']) - set(pos))}, "
                         f"which the source's checkpoint epochs {epochs} do not hold")
    raw_metric_names = list(dict.fromkeys(m for r in runs for ms in r["metrics"] for m in ms))
    rename = {m: m if source.metric_names is not None else metric_name(m, raw_metric_names) for m in raw_metric_names}
    if len(set(rename.values())) < len(rename):  # two names of one metric: keep both as named
        rename = {m: m for m in raw_metric_names}
    metric_names = list(source.metric_names) if source.metric_names is not None else list(dict.fromkeys(rename.values()))
    hparam_names = sorted({h for r in runs for h in r["hparams"]})
    spec, per_run_act = _activation(spec, runs, activation, given=source.spec is not None)
    hparams = {h: _column([r["hparams"].get(h) for r in runs]) for h in hparam_names}
    if per_run_act is not None and "activation" not in hparams:
        hparams["activation"] = per_run_act
    M, C = len(runs), len(epochs)
    indices = np.array([r["index"] for r in runs]) if all(r["index"] is not None for r in runs) else None
    own_index = indices is not None and len(set(indices.tolist())) == M
    if not own_index:
        indices = np.arange(M, dtype=np.int64)
    seeds = np.array([int(r["seed"] or 0) % 2 ** 32 for r in runs], dtype=np.uint32)
    signals = _signals(source, spec, runs) if source.signals is not None else None
    if signals is None and any(r["split"] for r in runs) and "split" not in hparams:
        hparams["split"] = ["" if r["split"] is None else r["split"] for r in runs]
    missing = sum(1 for r in runs if r["status"] != "pending" and set(epochs) - set(r["epochs"]))
    if missing:
        warn(f"{missing} of {M} runs lack checkpoints at some of the epochs {epochs}: their weights and metrics "
             f"are NaN there")
    config = dict(source.config) if source.config else {
        "name": source.name or out.stem, "description": f"imported ({source.format})",
        "architecture": {"name": spec.architecture}, "task": {"name": "unknown"}}
    config_json = json.dumps(config, sort_keys=True, default=str)
    provenance = digests.provenance(source, len(runs), skipped, missing)
    config_hash = source.config_hash or "imported-" + hashlib.sha256(
        (config_json + provenance["manifest_sha256"] + spec.to_json()).encode()).hexdigest()[:16]
    task = source.task or {"name": config.get("task", {}).get("name", "unknown"), "kind": "unknown",
                           "input_shape": list(spec.input_shape), "output_dim": spec.output_dim}
    tmp = stage.dir / "zoo.h5"
    create_zoo(tmp, name=source.name or config.get("name") or out.stem, config_json=config_json,
               config_hash=config_hash, spec=spec, task_info=task, checkpoint_epochs=epochs,
               metric_names=metric_names, indices=indices, seeds=seeds, hparams=hparams,
               chunk_size=CHUNK_RUNS, signals=signals, random_streams=IMPORTED_STREAMS,
               generated=source.generated, imported=provenance)
    spec_params = spec.params
    percent: set[str] = set()  # accuracies above 1: given in percent?
    for path, first, n in spans:
        if not n:
            continue
        chunk = runs[first:first + n]
        run_of = np.repeat(np.arange(n), [len(r["epochs"]) for r in chunk])  # staged checkpoint -> run
        col_of = np.array([pos[e] for r in chunk for e in r["epochs"]], dtype=np.int64)
        params = {p.name: np.full((n, C, *p.shape), np.nan, np.float32) for p in spec_params}
        with np.load(path.with_suffix(".npz")) as z:
            for p in spec_params:
                params[p.name][run_of, col_of] = z[p.name]
        metrics = {m: np.full((n, C), np.nan, np.float32) for m in metric_names}
        for j, r in enumerate(chunk):
            for e, ms in zip(r["epochs"], r["metrics"]):
                for m, v in ms.items():
                    if rename.get(m, m) in metrics and v is not None:
                        metrics[rename.get(m, m)][j, pos[e]] = float(v)
        # a checkpoint holding NaN or inf (all NaN: one never written) marks its run diverged
        finite = np.ones((n, C), bool)
        for p in spec_params:
            w = params[p.name].reshape(n, C, -1)
            finite &= np.isfinite(w).all(2) | np.isnan(w).all(2)
        status, div = zip(*(_status(r, finite[j], epochs) for j, r in enumerate(chunk)))
        write_models(tmp, np.arange(first, first + n), params, metrics, np.array(status, np.uint8),
                     np.array(div, np.int32))
        percent |= {m for m, v in metrics.items() if m.endswith("_acc") and np.nanmax(v, initial=0) > 1}
    if percent:
        warn(f"metrics {sorted(percent)} exceed 1, but a zoo's accuracies are fractions in [0, 1]: were they given "
             f"in percent? (kept as given)")
    _write_annotations(source, tmp, runs, indices if own_index else None)
    os.replace(tmp, out)
    log(f"imported {M} runs ({len(skipped)} skipped) at epochs {epochs} into {out}")


def _write_annotations(source: ImportSource, path: Path, runs: list[dict], indices: np.ndarray | None) -> None:
    """The source's annotations into the zoo at ``path``: per run (NaN where a run has none) and
    the pairs whose two runs were imported under their own run ids (``indices``; None: none kept)."""
    for name, info in (source.annotation_info or {}).items():
        vals = np.array([r.get("annotations", {}).get(name, math.nan) for r in runs], dtype=np.float32)
        write_annotations(path, {name: vals}, info)
    if source.pairs is not None and indices is not None:
        kept = np.isin(source.pairs["run_a"], indices) & np.isin(source.pairs["run_b"], indices)
        write_annotation_pairs(path, {k: np.asarray(v, dtype=object if k == "kind" else None)[kept]
                                      for k, v in source.pairs.items()}, source.pairs_info or {})


def _status(r: dict, finite: np.ndarray, epochs: list[int]) -> tuple[int, int]:
    """(status code, diverged epoch) of a run, from what its source records or its finite checkpoints."""
    codes = {v: k for k, v in STATUS_NAMES.items()}
    bad = [epochs[c] for c in np.flatnonzero(~finite)]
    if r["status"] is not None:
        code = codes.get(r["status"])
        if code is None:
            raise InputError(f"run {r['run']}: status {r['status']!r}, expected one of {list(codes)}")
        de = r["diverged_epoch"] if r["diverged_epoch"] is not None else (bad[0] if bad else -1)
        return code, de if code == STATUS_DIVERGED else -1
    if not r["epochs"]:
        return STATUS_PENDING, -1
    return (STATUS_DIVERGED, bad[0]) if bad else (STATUS_DONE, -1)


def _activation(spec: WeightSpaceSpec, runs: list[dict], activation: str | None,
                given: bool) -> tuple[WeightSpaceSpec, list[str] | None]:
    """The spec with the zoo's activation, and the per-run activations where they differ."""
    def with_act(a):
        return WeightSpaceSpec.from_dict(spec.to_dict() | {"activation": a})

    if activation is not None:
        if given and spec.activation not in (None, activation):
            raise InputError(f"--activation {activation}: the source's weight space says {spec.activation!r}")
        return with_act(activation), None
    if given and (spec.activation is not None or all("activation" in r["hparams"] for r in runs)):
        return spec, None
    acts = [r["activation"] or r["hparams"].get("activation") for r in runs]
    if all(a is None for a in acts):
        if spec.activation is None:
            warn(f"no activation recorded (a state_dict does not hold one): {DEFAULT_ACTIVATION} assumed; pass "
                 f"--activation to name it")
            return with_act(DEFAULT_ACTIVATION), None
        return spec, None
    lacking = [r["run"] for r, a in zip(runs, acts) if a is None]
    if lacking:
        raise InputError(f"run {lacking[0]}: no activation recorded, while other runs record theirs; pass --activation")
    unknown = sorted({a for a in acts if a not in ACTIVATIONS})
    if unknown:
        raise InputError(f"run activations {unknown}: expected some of {list(ACTIVATIONS)}")
    if len(set(acts)) == 1:
        return with_act(acts[0]), None
    return with_act(None), acts


def _signals(source: ImportSource, spec: WeightSpaceSpec, runs: list[dict]) -> dict[str, Any]:
    coords = np.asarray(source.signals["coords"], np.float32)
    values = source.signals.get("values")
    if values is None:
        values = np.full((len(runs), coords.shape[0], spec.output_dim), np.nan, np.float32)
    values = np.asarray(values, np.float32)
    if len(values) != len(runs):
        raise InputError(f"signals: values for {len(values)} runs, but {len(runs)} runs are imported (were some skipped?)")
    names = sorted({k for r in runs for k in r["signals"]})
    fields = {k: _column([r["signals"].get(k) for r in runs]) for k in names}
    if "split" not in fields and any(r["split"] for r in runs):
        fields["split"] = ["" if r["split"] is None else r["split"] for r in runs]
    return {"coords": coords, "values": values, "fields": fields}


class _Digests:
    """The sha256 of every file read, streamed: the digest of their manifest (lines ``<sha256>  <file>``
    in the order read, the source's own files first), and the first ``MAX_LISTED`` by name."""

    def __init__(self, files: list[Path]):
        self.manifest = hashlib.sha256()
        self.listed: dict[str, str] = {}
        self.count = 0
        for f in files:
            with open(f, "rb") as fh:
                self.add({str(f): hashlib.file_digest(fh, "sha256").hexdigest()})

    def add(self, digests: dict[str, str]) -> None:
        for f, d in digests.items():
            self.manifest.update(f"{d}  {f}\n".encode())
            self.count += 1
            if len(self.listed) < MAX_LISTED:
                self.listed[f] = d

    def provenance(self, source: ImportSource, runs: int, skipped: list[dict], missing: int) -> dict[str, Any]:
        """Where the runs came from: the format, options, sources and the digests of the files read."""
        out = {"format": source.format, "options": source.options, "runs": runs, "files": self.count,
               "manifest_sha256": self.manifest.hexdigest(), "skipped": skipped[:MAX_LISTED],
               "skipped_count": len(skipped), "runs_missing_epochs": missing}
        if self.count <= MAX_LISTED:
            out["sha256"] = dict(sorted(self.listed.items()))
        return out
