"""Per-model random streams: keys hashed from each seed, drawn for a whole population at once.

Everything random about a model (its initialisation, training subset, label noise, data order
and dropout masks) is a pure function of its 32-bit seed, a purpose, and the position of the
draw. Keys and uniform draws are hashes of those, not a generator's state, so a population draws
all its models' numbers in a few tensor operations; permutations are ``torch.randperm`` seeded
with a key. A model's numbers do not depend on the rest of its population or chunk, and the same
functions with one seed give what the model trained alone uses: model i of a population equals
model i alone by construction.

The hash is Wellons' lowbias32 on int32 tensors, applied twice per draw.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

STREAMS_VERSION = "hash32-v2"  # recorded in zoo files: files drawn otherwise are not resumed
PURPOSES = {"init": 1, "subset": 2, "noise": 3, "order": 4, "dropout": 5}
_GOLDEN = 0x9E3779B9


def int32(value: int) -> int:
    """``value`` modulo 2^32 as a signed 32-bit integer."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def mix(x: Tensor) -> Tensor:
    """lowbias32 on int32 tensors: multiplications wrap, and the masks after the arithmetic
    shifts make them logical shifts."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * -0x7B935975  # 0x846CA68B as a signed 32-bit integer
    return x ^ ((x >> 16) & 0xFFFF)


def stream_keys(seeds: Sequence[int] | Tensor, purpose: str, *extra: int) -> Tensor:
    """The int32 keys [M] of one purpose of M models (``extra``: e.g. the epoch)."""
    if torch.is_tensor(seeds):
        k = seeds.to(torch.int64)
    else:
        k = torch.tensor([int(s) for s in seeds], dtype=torch.int64)
    k = torch.where(k >= 1 << 31, k - (1 << 32), k).to(torch.int32)  # uint32 seeds as int32
    k = mix(mix(k ^ int32(PURPOSES[purpose] * _GOLDEN)))
    for e in extra:
        k = mix(mix(k ^ int32((int(e) + 1) * 0x85EBCA6B)))
    return k


def hash_bits(keys: Tensor, width: int, stream: int = 0) -> Tensor:
    """int32 hashes [M, width]: draw j of stream ``stream`` of each key."""
    round_key = mix(mix(keys ^ int32((stream + 1) * _GOLDEN))).unsqueeze(1)
    ctr = torch.arange(width, dtype=torch.int32, device=keys.device).unsqueeze(0)
    return mix(mix(ctr ^ keys.unsqueeze(1)) ^ round_key)


def uniform(keys: Tensor, width: int, stream: int = 0) -> Tensor:
    """Uniform float32 draws in [0, 1) [M, width] (24 random bits each)."""
    return ((hash_bits(keys, width, stream) >> 8) & 0xFFFFFF).to(torch.float32) * 2.0 ** -24


def permutations(keys: Tensor, lengths: Sequence[int], width: int, take: Sequence[int] | None = None) -> Tensor:
    """Row m: the first ``take[m]`` (default all) entries of a random permutation of
    ``range(lengths[m])`` seeded by ``keys[m]``, then -1 up to ``width`` [M, width] (int64).

    Permutations come from ``torch.randperm`` on one generator reseeded with each key: a hash sort
    would be vectorized but costs O(n log n) per row (6x slower than randperm at 2,000 x 9,500)."""
    take = lengths if take is None else take
    out = torch.full((len(keys), width), -1, dtype=torch.int64)
    g = torch.Generator()
    for m, (key, n, k) in enumerate(zip(keys.tolist(), lengths, take)):
        g.manual_seed(key & 0xFFFFFFFF)
        if k == n:  # straight into the row
            torch.randperm(int(n), generator=g, out=out[m, :int(n)])
        else:
            out[m, :int(k)] = torch.randperm(int(n), generator=g)[:int(k)]
    return out
