"""Join the shard files of one zoo (``wsl zoo generate --shard i/n``) into one zoo file.

The parts must come from the same config and cover every shard exactly once, or exactly once an
aligned block of them: parts ``j*W .. j*W+W-1`` of ``n*W`` shards hold the models of shard ``j`` of
``n`` (``floor(j*W*M / (n*W)) = floor(j*M / n)``), so they merge into a file of shard ``j/n``, which
is how the processes of ``wsl zoo generate --shard j/n --devices W`` join their parts. The result
is an ordinary zoo file (a copy, so it stands alone), written beside and renamed into place when
complete; models still pending in a part stay pending and ``wsl zoo generate`` on the merged file
finishes them.

Annotations (``/annotations``) join when every part carries the same ones computed alike (equal
``info``): each run's value is its own, so the merged file holds what annotating it would give.
Annotations whose values depend on partners chosen among a part's runs (``"population": true``
in their info: ``cka_mean``, the ``lmc_*`` means and ``/annotations/pairs``) are refused: a run's
partners in its part are not those it would have in the merged zoo. Merge the parts without them
and annotate the merged file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .store import PAIRS, STATUS_PENDING, Zoo, ZooFileError, create_zoo, write_annotations, write_models
from .errors import InputError


def _signals(zoos: list[Zoo]) -> dict:
    """The parts' INR signals, concatenated (every part of an INR zoo samples the same coordinates)."""
    return {"coords": zoos[0].signal_coords().numpy(),
            "values": np.concatenate([z.signal_values().numpy() for z in zoos]),
            "fields": {k: np.concatenate([z.signal(k) for z in zoos]).tolist() for k in zoos[0].signal_names}}


def merged_shard(have: list[int], count: int) -> tuple[int, int] | None:
    """The shard that parts ``have`` (sorted, distinct) of ``count`` shards make up: all of them,
    (0, 1); an aligned block of W >= 2 parts ``j*W .. j*W+W-1`` with W dividing ``count``,
    (j, count // W); None for any other set."""
    w = len(have)
    if have == list(range(count)):
        return (0, 1)
    if w >= 2 and count % w == 0 and have[0] % w == 0 and have == list(range(have[0], have[0] + w)):
        return (have[0] // w, count // w)
    return None


def _nearest_block(have: list[int], count: int) -> range:
    """The smallest aligned block of W >= 2 parts holding every part of ``have``: what a merge of
    ``have`` most plausibly meant, so its error can name the parts missing from it."""
    for w in range(2, count + 1):
        if count % w == 0 and have[0] // w == have[-1] // w:
            j = have[0] // w
            return range(j * w, (j + 1) * w)
    return range(count)


def _population_annotations(z: Zoo) -> list[str]:
    """The annotations of ``z`` whose values depend on partners among its runs (files annotated
    before the ``population`` key existed: ``cka_mean``)."""
    names = [n for n in z.annotation_names if z.annotation_info(n).get("population", n == "cka_mean")]
    return names + ([PAIRS] if z.annotation_pairs is not None else [])


def _check_annotations(zoos: list[Zoo]) -> None:
    """Refuse parts annotated differently, or with annotations that depend on the part's runs."""
    first = zoos[0]
    for z in zoos:
        population = _population_annotations(z)
        if population:
            raise ZooFileError(f"{z.path}: annotations {population} compare each run with partners chosen among "
                               f"this part's runs, so joined they would differ from annotating the merged zoo: "
                               f"merge parts without them, then run wsl zoo annotate on the merged file")
        if z.annotation_names != first.annotation_names:
            raise ZooFileError(f"{z.path}: annotations {z.annotation_names}, {first.path}'s {first.annotation_names}: "
                               f"annotate every part alike (or none) before merging")
        for name in z.annotation_names:
            if z.annotation_info(name) != first.annotation_info(name):
                raise ZooFileError(f"{z.path}: annotation {name} computed as {z.annotation_info(name)}, "
                                   f"{first.path}'s as {first.annotation_info(name)}: annotate every part alike")


def merge(parts: list[str | Path], out: str | Path, block: int = 1024) -> Path:
    """Join ``parts`` (shard files of one config) into the new zoo file ``out``; return its path."""
    out = Path(out)
    if out.exists():
        raise ZooFileError(f"{out}: exists already; merge writes a new file")
    if not parts:
        raise InputError("merge needs at least one part")
    zoos = [Zoo(p) for p in parts]
    tmp = out.with_name(out.name + ".merging")
    try:
        first = zoos[0]
        n = first.shard[1]
        for z in zoos:
            if z.config_hash != first.config_hash:
                raise ZooFileError(f"{z.path}: config hash {z.config_hash} differs from {first.path} "
                                   f"({first.config_hash}): the parts belong to different zoos")
            if z.shard[1] != n:
                raise ZooFileError(f"{z.path}: part of {z.shard[1]} shards, {first.path} of {n}")
            if z.random_streams != first.random_streams:
                raise ZooFileError(f"{z.path}: random numbers drawn as {z.random_streams!r}, {first.path}'s as "
                                   f"{first.random_streams!r}: the parts were made by different wsl versions")
        have = sorted(z.shard[0] for z in zoos)
        distinct = sorted(set(have))
        dupes = sorted({s for s in have if have.count(s) > 1})
        shard = None if dupes else merged_shard(distinct, n)
        if shard is None:
            near = _nearest_block(distinct, n)
            missing = sorted(set(near) - set(distinct))
            raise ZooFileError(f"parts of {n} shards must cover shards 0..{n - 1} exactly once, or exactly once an "
                               f"aligned block of them (shards j*W .. j*W+W-1, W >= 2 dividing {n}: shard j of n/W): "
                               f"found shards {distinct}, missing {missing} (to make shards {near.start}.."
                               f"{near.stop - 1}), duplicated {dupes}")
        _check_annotations(zoos)
        zoos.sort(key=lambda z: z.shard[0])
        indices = np.concatenate([z.index for z in zoos])
        if not (np.diff(indices) > 0).all():
            raise ZooFileError("the parts' model indices overlap or are out of order")
        hparams = {name: np.concatenate([z.hparam(name) for z in zoos]).tolist() for name in first.hparam_names}
        create_zoo(tmp, name=first.name, config_json=json.dumps(first.config, sort_keys=True),
                   config_hash=first.config_hash, spec=first.spec, task_info=first.task,
                   checkpoint_epochs=first.checkpoint_epochs, metric_names=first.metric_names, indices=indices,
                   seeds=np.concatenate([z.seed for z in zoos]), hparams=hparams, chunk_size=first.chunk_size,
                   shard=shard, signals=_signals(zoos) if first.is_inr else None,
                   random_streams=first.random_streams, generated=first.generated, merged=first.merged)
        offset = 0
        for z in zoos:
            status, div = z.status, z.diverged_epoch
            finished = np.flatnonzero(status != STATUS_PENDING)
            for s in range(0, len(finished), block):
                rows = finished[s:s + block]
                write_models(tmp, offset + rows, z.read_params(rows), z.read_metrics(rows), status[rows], div[rows])
            offset += len(z)
        for name in first.annotation_names:
            write_annotations(tmp, {name: np.concatenate([z.annotation(name) for z in zoos])},
                              first.annotation_info(name))
        os.replace(tmp, out)  # a merge cut short leaves no file that looks like a zoo with pending models
    finally:
        for z in zoos:
            z.close()
        tmp.unlink(missing_ok=True)
    return out
