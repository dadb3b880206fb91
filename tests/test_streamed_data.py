"""Zoos larger than the cache: streamed DataModules serve the same items and weights as in-memory
ones, read each block once per epoch within a bounded cache, and split every split over DDP ranks."""
import numpy as np
import pytest
import torch

from conftest import generate_zoo
from wsl.data import PropertyDataModule, WeightDataModule
from wsl.data.stream import BLOCK_ROWS, ItemSampler

RAW = {
    "name": "streamed", "seed": 5, "num_models": 96, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]}},
    "training": {"chunk_size": 96},
}
SMALL_CACHE_MB = 0.2  # the zoo's selected checkpoints take ~0.5 MB


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return generate_zoo(RAW, tmp_path_factory.mktemp("streamed") / "zoo.h5")


def pair(zoo, cls=PropertyDataModule, **kw):
    """The same DataModule in memory and streamed through a cache smaller than its data."""
    kw = dict(checkpoints="all", batch_size=8, **kw)
    mem, st = cls([zoo], cache_mb=None, **kw), cls([zoo], cache_mb=SMALL_CACHE_MB, **kw)
    mem.setup("fit")
    st.setup("fit")
    assert not mem.streamed and st.streamed
    return mem, st


def blocks_of(dm, split):
    return np.unique(dm._store.block[dm._split_items[split].numpy()])


def test_streamed_batches_equal_the_in_memory_ones(zoo):
    mem, st = pair(zoo)
    assert torch.equal(mem.weight_normalizer.scale, st.weight_normalizer.scale)
    assert torch.equal(mem.target_normalizer.mean, st.target_normalizer.mean)
    # evaluation order is the same, batch for batch
    for (wa, ya), (wb, yb) in zip(mem.val_dataloader(), st.val_dataloader(), strict=True):
        assert torch.equal(ya, yb)
        for a, b in zip(wa.params(), wb.params()):
            assert torch.equal(a, b)
    # a shuffled training epoch: every training item once, with its own weights and target
    loader = st.train_dataloader()
    seen = []
    for pos in loader.sampler:
        wb, y = loader.dataset[pos]
        item = st._split_items["train"][pos]
        ref = mem._store.gather(item)
        assert all(torch.equal(a, b) for a, b in zip(wb.params(), ref))
        assert torch.equal(y, mem._targets[item])
        seen.append(pos)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(st._split_items["train"])))
    assert len(seen) == len(loader)
    for s in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(mem.weights(s).params(), st.weights(s).params()))


def test_an_epoch_reads_each_block_once_within_the_cache(zoo):
    _, st = pair(zoo)
    store = st._store
    block_bytes = BLOCK_ROWS * 4 * st.spec.num_params  # the slab: the cache's blocks, at least one batch's
    assert store.capacity == max(st.batch_size, int(SMALL_CACHE_MB * 2 ** 20 // block_bytes))
    blocks = len(blocks_of(st, "train"))
    assert blocks > store.capacity  # the split does not fit: blocks are evicted and must not be read twice
    before = store.reads
    for _ in st.train_dataloader():
        pass
    assert store.reads - before == blocks
    assert len(store._slots) <= store.capacity


def test_shuffling_mixes_blocks_and_is_reproducible(zoo):
    _, st = pair(zoo)
    a, b = st.train_dataloader().sampler, st.train_dataloader().sampler
    first, again = torch.cat(list(a)), torch.cat(list(b))
    assert torch.equal(first, again)  # same seed and epoch: same order
    second = torch.cat(list(a))  # the next epoch differs
    assert not torch.equal(first, second)
    # a batch mixes several blocks: not the file order cut into pieces
    block = st._store.block[st._split_items["train"].numpy()]
    batch = next(iter(st.train_dataloader().sampler))
    assert len(np.unique(block[batch.numpy()])) > 1


def test_loader_workers_stream_the_same_items(zoo):
    _, st = pair(zoo, num_workers=2)
    ref = st._store.gather
    loader = st.train_dataloader()
    order = list(loader.sampler)
    loader.sampler.set_epoch(0)
    items = st._split_items["train"]
    got = 0
    for (wb, y), pos in zip(loader, order, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(wb.params(), ref(items[pos])))
        got += len(pos)
    assert got == len(items)


def test_alignment_applies_to_streamed_blocks(zoo):
    mem, st = pair(zoo, cls=WeightDataModule, align=True, normalize=False)
    for s in ("train", "test"):
        for a, b in zip(mem.weights(s).params(), st.weights(s).params()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("streamed", [False, True])
def test_ranks_share_every_split(zoo, streamed):
    mem, st = pair(zoo)
    dm = st if streamed else mem
    for split, shuffle in (("train", True), ("val", False), ("test", False)):
        n = len(dm._split_items[split])
        blocks = dm._store.block[dm._split_items[split].numpy()] if streamed else None
        parts = [torch.cat(list(ItemSampler(n, 8, shuffle, seed=1, rank=r, world=2, blocks=blocks,
                                            window=dm._store.capacity if streamed else 1)))
                 for r in range(2)]
        lengths = [len(ItemSampler(n, 8, shuffle, 1, r, 2, blocks)) for r in range(2)]
        assert [len(p.split(8)) for p in parts] == lengths
        if shuffle:  # the same number of steps on every rank, every item served
            assert len(parts[0]) == len(parts[1]) == -(-n // 2)
            assert set(torch.cat(parts).tolist()) == set(range(n))
        else:  # every item exactly once over the ranks: gathered metrics equal one process's
            assert sorted(torch.cat(parts).tolist()) == list(range(n))
        if streamed and shuffle:  # a rank reads only its own blocks
            b0, b1 = (set(blocks[p.numpy()].tolist()) for p in parts)
            assert len(b0 & b1) <= 2  # the block cut at the boundary, one repeated to even out the shares


def test_bad_cache_size_is_refused(zoo):
    with pytest.raises(ValueError, match="cache_mb must be > 0"):
        PropertyDataModule([zoo], cache_mb=0)
