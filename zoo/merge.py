"""Join the shard files of one zoo (``wsl zoo generate --shard i/n``) into one zoo file.

The parts must come from the same config and cover every shard exactly once. The result is an
ordinary zoo file (a copy, so it stands alone); models still pending in a part stay pending and
``wsl zoo generate`` on the merged file finishes them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .store import STATUS_PENDING, Zoo, ZooFileError, create_zoo, write_models


def _signals(zoos: list[Zoo]) -> dict:
    """The parts' INR signals, concatenated (every part of an INR zoo samples the same coordinates)."""
    return {"coords": zoos[0].signal_coords().numpy(),
            "values": np.concatenate([z.signal_values().numpy() for z in zoos]),
            "fields": {k: np.concatenate([z.signal(k) for z in zoos]).tolist() for k in zoos[0].signal_names}}


def merge(parts: list[str | Path], out: str | Path, block: int = 1024) -> Path:
    out = Path(out)
    if out.exists():
        raise ZooFileError(f"{out}: exists already; merge writes a new file")
    if not parts:
        raise ValueError("merge needs at least one part")
    zoos = [Zoo(p) for p in parts]
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
        missing = sorted(set(range(n)) - set(have))
        dupes = sorted({s for s in have if have.count(s) > 1})
        if missing or dupes:
            raise ZooFileError(f"shards must cover 0..{n - 1} exactly once: missing {missing}, duplicated {dupes}")
        zoos.sort(key=lambda z: z.shard[0])
        indices = np.concatenate([z.index for z in zoos])
        if not (np.diff(indices) > 0).all():
            raise ZooFileError("the parts' model indices overlap or are out of order")
        hparams = {name: np.concatenate([z.hparam(name) for z in zoos]).tolist() for name in first.hparam_names}
        create_zoo(out, name=first.name, config_json=json.dumps(first.config, sort_keys=True),
                   config_hash=first.config_hash, spec=first.spec, task_info=first.task,
                   checkpoint_epochs=first.checkpoint_epochs, metric_names=first.metric_names, indices=indices,
                   seeds=np.concatenate([z.seed for z in zoos]), hparams=hparams, chunk_size=first.chunk_size,
                   signals=_signals(zoos) if first.is_inr else None, random_streams=first.random_streams,
                   generated=first.generated)
        offset = 0
        for z in zoos:
            status, div = z.status, z.diverged_epoch
            finished = np.flatnonzero(status != STATUS_PENDING)
            for s in range(0, len(finished), block):
                rows = finished[s:s + block]
                write_models(out, offset + rows, z.read_params(rows), z.read_metrics(rows), status[rows], div[rows])
            offset += len(z)
    finally:
        for z in zoos:
            z.close()
    return out
