"""Where a DataModule's weights live: in memory, or streamed from the zoo files through a bounded cache.

A DataModule's items are checkpoints (file, row, checkpoint position; ``ZooRuns.items``). Both
stores below answer one question, ``gather(items) -> per-parameter tensors``, so the loaders, the
normalizer fit and the augmentations do not care where the weights are:

- ``InMemoryWeights``: every selected checkpoint read once into float32 tensors; a batch is one
  gather per tensor. Used whenever the selection fits the DataModule's ``cache_mb``.
- ``StreamedWeights``: zoos larger than the cache. Weights are read in *blocks* of
  ``BLOCK_ROWS`` consecutive file rows at one checkpoint (one HDF5 chunk of the zoo file each, see
  ``zoo.store``) into a fixed slab of block slots, least recently used first out. The slab is what
  the cache size bounds; each loader worker process has its own (``cache_mb / workers``) and opens
  its own HDF5 handles.

Random access to single rows of an HDF5 file costs a chunk read per row, so streamed training
does not shuffle items freely: ``ItemSampler`` shuffles the order of blocks, takes a *window* of
blocks that fits the cache, shuffles the items inside the window and cuts it into batches. Every
block is read once per epoch; batches mix the items of a whole window (a cache's worth of
checkpoints: about 1,700 with the 26 MB cache of scripts/bench_scale.py). This is the
block-shuffle that streaming loaders use, and the price of reading at disk speed.

``ItemSampler`` is also the distributed sampler: under DDP each rank gets its share (training:
``ceil(n / world)`` items per rank, so every rank takes the same number of steps; evaluation: a
contiguous part with every item exactly once over the ranks, so metrics gathered over ranks equal
the single-process ones). Streamed, a rank reads only the blocks of its share.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor
from torch.utils.data.distributed import DistributedSampler

from zoo.store import MODELS_PER_CHUNK, Zoo
from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError

#: Rows per streamed block: the zoo file's models per HDF5 chunk, so a block is one chunk read.
BLOCK_ROWS = MODELS_PER_CHUNK


class InMemoryWeights:
    """Per-parameter tensors ``[N, *shape]`` of every item."""

    streamed = False

    def __init__(self, params: list[Tensor]):
        self.params = params

    def __len__(self) -> int:
        return len(self.params[0])

    def gather(self, idx: Tensor) -> list[Tensor]:
        return [p[idx] for p in self.params]

    def replace(self, params: list[Tensor]) -> None:
        """Swap in transformed weights (aligned networks), item for item."""
        self.params = params


class StreamedWeights:
    """Items read from their zoo files on demand, through a least-recently-used slab of blocks.

    Args:
        paths: the zoo files (``ZooRuns.paths``); ``items``: ``ZooRuns.items`` of the selection.
        cache_bytes: the slab's size in this process (at least ``min_blocks`` blocks).
        transform: applied to every block's weights as they are read (per-parameter tensors ->
            per-parameter tensors), e.g. alignment onto a reference network.
    """

    streamed = True

    def __init__(self, spec: WeightSpaceSpec, paths: list[str], items: dict[str, np.ndarray], cache_bytes: float,
                 min_blocks: int = 1, transform=None):
        self.spec, self.paths = spec, list(paths)
        self.file, self.row, self.pos = items["file"], items["row"], items["pos"]
        self.block = block_ids(items)
        block_bytes = 4 * spec.num_params * BLOCK_ROWS
        self.capacity = int(max(min_blocks, cache_bytes // block_bytes))
        self.transform = transform
        self.reads = 0  # blocks read from disk by this process (tests and benchmarks)
        self._pid = None

    def __len__(self) -> int:
        return len(self.row)

    def __getstate__(self) -> dict:
        """Loader workers start without the parent's file handles and slab (h5py handles do not
        survive a fork or pickling)."""
        state = dict(self.__dict__)
        state["_pid"] = None
        for k in ("_zoos", "_slab", "_slots"):
            state.pop(k, None)
        return state

    def _open(self) -> None:
        """Per process: HDF5 handles and an empty slab, made on first use."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._zoos: dict[int, Zoo] = {}
        self._slab = [torch.empty((self.capacity, BLOCK_ROWS, *p.shape)) for p in self.spec.params]
        self._slots: OrderedDict[int, int] = OrderedDict()  # block id -> slot, least recent first

    def close(self) -> None:
        """Close the files and free the slab; the next ``gather`` opens and reads again."""
        for z in getattr(self, "_zoos", {}).values():
            z.close()
        for k in ("_zoos", "_slab", "_slots"):
            self.__dict__.pop(k, None)
        self._pid = None

    def _slot(self, block: int, first_item: int) -> int:
        """The slab slot holding ``block`` (read into the least recently used slot if absent)."""
        if block in self._slots:
            self._slots.move_to_end(block)
            return self._slots[block]
        if len(self._slots) < self.capacity:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
        fi, c = int(self.file[first_item]), int(self.pos[first_item])
        start = int(self.row[first_item]) // BLOCK_ROWS * BLOCK_ROWS
        if fi not in self._zoos:
            self._zoos[fi] = Zoo(self.paths[fi], cache_mb=0)
        z = self._zoos[fi]
        arrays = z.read_slice(start, min(start + BLOCK_ROWS, len(z)), c)
        params = [torch.from_numpy(arrays[p.name]) for p in self.spec.params]
        if self.transform is not None:
            params = self.transform(params)
        for dst, src in zip(self._slab, params):
            dst[slot, :len(src)] = src
        self._slots[block] = slot
        self.reads += 1
        return slot

    def gather(self, idx: Tensor) -> list[Tensor]:
        self._open()
        idx = torch.as_tensor(idx, dtype=torch.long)
        blocks = self.block[idx.numpy()]
        uniq, first = np.unique(blocks, return_index=True)
        if len(uniq) > self.capacity:
            raise InputError(f"a batch spans {len(uniq)} blocks of {BLOCK_ROWS} rows, more than the cache holds "
                             f"({self.capacity}); raise cache_mb or lower batch_size")
        slot_of = np.asarray([self._slot(int(b), int(idx[f])) for b, f in zip(uniq, first)])
        slots = torch.from_numpy(slot_of[np.searchsorted(uniq, blocks)])
        offsets = torch.as_tensor(self.row[idx.numpy()] % BLOCK_ROWS, dtype=torch.long)
        return [s[slots, offsets] for s in self._slab]


def block_ids(items: dict[str, np.ndarray]) -> np.ndarray:
    """Per item, the id of its block (file, checkpoint position, row // ``BLOCK_ROWS``): consecutive
    integers in item order (``ZooRuns.items`` orders items by file, checkpoint, row)."""
    key = np.stack([items["file"], items["pos"], items["row"] // BLOCK_ROWS], 1)
    new = np.ones(len(key), dtype=bool)
    new[1:] = (key[1:] != key[:-1]).any(1)
    return np.cumsum(new) - 1


class ItemSampler(DistributedSampler):
    """Batches of item positions (LongTensors) of one split, for this rank of ``world``.

    ``blocks`` (streamed data): each item's block id; shuffling is then by block and window
    (``window`` blocks), see the module docstring. ``workers``: loader workers; streamed batches
    are handed out so that each worker gets a contiguous run of them and reads each block once.
    Shuffled with a generator seeded by (seed, epoch), so every epoch is reproducible whether or not
    Lightning calls ``set_epoch``. A ``DistributedSampler`` so that Lightning keeps it under DDP
    instead of wrapping it in its own.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 blocks: np.ndarray | None = None, window: int = 1, workers: int = 0):
        if not 0 <= rank < world:
            raise InputError(f"rank {rank} of a world of {world}")
        # no super().__init__: it would ask torch.distributed for what is given here
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.num_replicas = world
        self.blocks = None if blocks is None else torch.as_tensor(blocks, dtype=torch.long)
        self.window, self.workers = max(1, int(window)), int(workers)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def share(self) -> int:
        """Items this rank serves per epoch."""
        if self.shuffle and self.world > 1:
            return math.ceil(self.n / self.world)
        return (self.rank + 1) * self.n // self.world - self.rank * self.n // self.world

    def __len__(self) -> int:
        return math.ceil(self.share() / self.batch_size)

    def order(self) -> Tensor:
        """This rank's items for the current epoch, in serving order."""
        if not self.shuffle:
            return torch.arange(self.rank * self.n // self.world, (self.rank + 1) * self.n // self.world)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.blocks is None:
            order = torch.randperm(self.n, generator=g)
            if self.world > 1:
                order = _wrap(order, self.share() * self.world)[self.rank::self.world]
            return order
        # streamed: the items block by block, blocks in random order; this rank's contiguous share
        # of that sequence; cut into windows of ``window`` blocks, each shuffled inside
        starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(torch.diff(self.blocks)).flatten() + 1])
        sizes = torch.diff(torch.cat([starts, torch.tensor([self.n])]))
        perm = torch.randperm(len(starts), generator=g)
        lens = sizes[perm]
        first = (torch.cumsum(lens, 0) - lens).repeat_interleave(lens)
        seq = starts[perm].repeat_interleave(lens) + torch.arange(self.n) - first
        if self.world > 1:
            share = self.share()
            seq = _wrap(seq, share * self.world)[self.rank * share:(self.rank + 1) * share]
        block = self.blocks[seq]
        new = torch.ones(len(seq), dtype=torch.long)
        new[1:] = (block[1:] != block[:-1]).long()
        window = (torch.cumsum(new, 0) - 1) // self.window
        return seq[torch.argsort(window + torch.rand(len(seq), generator=g, dtype=torch.float64))]

    def __iter__(self):
        """A generator: the order is drawn at the first batch asked for, because a multi-process
        DataLoader makes an iterator it never uses before the one it serves from."""
        batches = list(self.order().split(self.batch_size))
        if self.shuffle:
            self.epoch += 1
        if self.blocks is not None and self.workers > 1:
            batches = _per_worker(batches, self.workers)
        yield from batches


def _wrap(order: Tensor, size: int) -> Tensor:
    """``order`` cut or repeated from its start to ``size`` items (every rank the same number of steps)."""
    if len(order) >= size or not len(order):
        return order[:size]
    return order.repeat(math.ceil(size / len(order)))[:size]


def _per_worker(batches: list[Tensor], workers: int) -> list[Tensor]:
    """Reorder batches so that loader worker w (which gets every ``workers``-th batch) serves a
    contiguous run of them: neighbouring batches share their window's blocks."""
    runs = [list(r) for r in np.array_split(np.arange(len(batches)), workers)]
    out = []
    for k in range(len(batches)):
        run = runs[k % workers] or next(r for r in runs if r)
        out.append(batches[run.pop(0)])
    return out
