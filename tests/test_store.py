"""The zoo file: round trip, determinism, crash/resume, refusal, sharding + merge, verify, divergence."""
import os
import re
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import yaml

import zoo.generate as zgen
from wsl.cli import main
from zoo.architectures import TorchNet
from zoo.config import parse_config, sample_hparams
from zoo.generate import build_task_and_spec, generate
from zoo.merge import merge
from zoo.store import RANDOM_STREAMS, STATUS_DONE, STATUS_PENDING, Zoo, ZooFileError
from zoo.verify import verify

QUIET = dict(progress=False, log=lambda s: None)

# Two epochs, 24 models, three checkpoints; activation varies, so chunks are grouped by it and
# chunk_size 8 gives several chunks.
BASE = {
    "name": "tiny", "seed": 3, "num_models": 24, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]},
                "momentum": {"choice": [0.0, 0.9]}, "activation": {"choice": ["relu", "tanh"]},
                "init_scale": {"uniform": [0.5, 2.0]}},
    "training": {"chunk_size": 8},
}


def config(**over):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    raw.update(over)
    return parse_config(raw)


def read_all(path):
    """Every dataset of a zoo file: name -> numpy array (strings as a list)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj.asstr()[()].tolist() if h5py.check_string_dtype(obj.dtype) else obj[()]
        f.visititems(visit)
    return out


def assert_same_datasets(a, b, names=None):
    """Bit-identical datasets (NaN payloads included)."""
    da, db = read_all(a), read_all(b)
    assert sorted(da) == sorted(db)
    for name in names or da:
        x, y = da[name], db[name]
        if isinstance(x, list):
            assert x == y, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), f"{name} differs"


@pytest.fixture(scope="module")
def base_zoo(tmp_path_factory):
    return generate(config(), tmp_path_factory.mktemp("base") / "tiny.h5", **QUIET)


@pytest.fixture(scope="module")
def task_and_spec():
    return build_task_and_spec(config())


# ----------------------------------------------------------------------------------------------
# round trip

def test_round_trip_metadata(base_zoo, task_and_spec):
    cfg = config()
    task, spec = task_and_spec
    with Zoo(base_zoo) as z:
        assert len(z) == 24
        assert z.spec == spec and z.spec.activation is None  # activation varies per model
        assert z.checkpoint_epochs == [0, 1, 2]
        assert z.metric_names == ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
        assert z.config_hash == cfg.hash() and z.shard == (0, 1) and z.chunk_size == 8
        assert z.task["name"] == "digits" and z.task["sizes"] == {"train": 200, "val": 97, "test": 1500}
        np.testing.assert_array_equal(z.index, np.arange(24))
        assert (z.status == STATUS_DONE).all() and z.done.all() and (z.diverged_epoch == -1).all()
        expected = sample_hparams(cfg, range(24))
        assert sorted(z.hparam_names) == sorted(expected)
        for name, vals in expected.items():
            stored = z.hparam(name)
            assert stored.tolist() == vals, name
        assert set(z.hparam("activation")) == {"relu", "tanh"}  # both groups made it into the file
        for m in z.metric_names:
            assert np.isfinite(z.metric(m)).all()


def test_state_dict_reproduces_stored_test_accuracy(base_zoo, task_and_spec):
    task, spec = task_and_spec
    with Zoo(base_zoo) as z:
        acc, loss = z.metric("test_acc")[:, -1], z.metric("test_loss")[:, -1]
        init_acc = z.metric("test_acc")[:, 0]
        acts = z.hparam("activation")
        for i in range(len(z)):
            net = TorchNet(spec, activation=acts[i])
            net.load_state_dict(z.state_dict(i))
            with torch.no_grad():
                out = net(task.x_test)
            mine = (out.argmax(1) == task.y_test).double().mean().float().item()
            assert mine == acc[i], f"model {i}"
            mine_loss = torch.nn.functional.cross_entropy(out, task.y_test).item()
            assert abs(mine_loss - loss[i]) < 1e-4 * max(1.0, abs(loss[i]))
            net.load_state_dict(z.state_dict(i, checkpoint=0))  # the initialisation
            with torch.no_grad():
                assert (net(task.x_test).argmax(1) == task.y_test).double().mean().float().item() == init_acc[i]
        assert len(set(acc.tolist())) > 5  # the models differ


def test_batch_rows_in_given_order_and_load(base_zoo, task_and_spec):
    _, spec = task_and_spec
    rows = [7, 2, 7, 0, 23, 2]
    with Zoo(base_zoo) as z:
        for ck in (0, 1, -1):
            b = z.batch(rows, checkpoint=ck)
            assert list(b) == [p.name for p in spec.params]
            shapes = {p.name: p.shape for p in spec.params}
            for name, t in b.items():
                assert tuple(t.shape) == (len(rows), *shapes[name])
                for j, r in enumerate(rows):
                    np.testing.assert_array_equal(t[j].numpy(), z.file["params"][name][r, ck])
            assert not torch.equal(b["layers.0.weight"][0], b["layers.0.weight"][1])
        before = {ck: z.batch(rows, ck) for ck in (0, -1)}
        params = z.params(7)
        assert [p.shape for p in params] == [tuple(p.shape) for p in spec.params]
        torch.testing.assert_close(params[0], before[-1]["layers.0.weight"][0], rtol=0, atol=0)
        loaded = z.load(-1)
        assert loaded["layers.0.weight"].shape == (24, *spec.params[0].shape)
        for ck in (0, -1):
            after = z.batch(rows, ck)
            for name in after:
                assert torch.equal(after[name], before[ck][name])
        assert z.batch([], -1)["layers.0.bias"].shape[0] == 0
        assert z.batch(np.int64(3))["layers.0.bias"].shape == (1, 8)  # a scalar row is a batch of one
    with Zoo(base_zoo) as z:
        assert z.batch(np.int64(3))["layers.0.bias"].shape == (1, 8)
        rows_list = [r for r, _ in z.iter_batches(batch_size=10)]
        assert [len(r) for r in rows_list] == [10, 10, 4]


def test_cached_and_uncached_reads_agree(base_zoo):
    rows = [9, 3, 9, 17, 0]
    with Zoo(base_zoo) as cached, Zoo(base_zoo, cache_mb=0) as direct:
        for ck in (0, 1, -1):
            a, b = cached.batch(rows, ck), direct.batch(rows, ck)
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert len(cached._cache) == len(cached.checkpoint_epochs) and not direct._cache
        cached.clear_cache()
        assert not cached._cache
        a = cached.batch(rows, -1)  # loaded again
        assert len(cached._cache) == 1 and all(torch.equal(a[k], b[k]) for k in a)


def test_read_params_and_metrics_hold_every_checkpoint(base_zoo, task_and_spec):
    _, spec = task_and_spec
    rows = [7, 2, 7, 0, 23]
    with Zoo(base_zoo) as z:
        params, metrics = z.read_params(rows), z.read_metrics(rows)
        assert list(params) == spec.param_names and list(metrics) == z.metric_names
        for p in spec.params:
            assert params[p.name].shape == (len(rows), len(z.checkpoint_epochs), *p.shape)
            for c in range(len(z.checkpoint_epochs)):
                np.testing.assert_array_equal(params[p.name][:, c], z.batch(rows, c)[p.name].numpy())
        for m in z.metric_names:
            np.testing.assert_array_equal(metrics[m], z.metric(m)[rows])
        assert z.read_params([])["layers.0.bias"].shape == (0, len(z.checkpoint_epochs), 8)
        assert z.read_metrics([])["test_acc"].shape == (0, len(z.checkpoint_epochs))
        with pytest.raises(IndexError):
            z.read_params([24])


def test_select_matches_numpy_filter(base_zoo):
    with Zoo(base_zoo) as z:
        acc = z.metric("test_acc")[:, -1]
        opt = z.hparam("optimizer")
        expected = np.flatnonzero((acc >= 0.5) & (opt == "adam") & z.done)
        got = z.select(test_acc=(0.5, None), optimizer="adam")
        np.testing.assert_array_equal(got, expected)
        assert 0 < len(got) < 24 or len(np.flatnonzero(opt == "adam")) == 0
        np.testing.assert_array_equal(z.select(optimizer="adam"), np.flatnonzero(opt == "adam"))
        acc0 = z.metric("test_acc")[:, 0]
        np.testing.assert_array_equal(z.select(test_acc=(None, 0.2), checkpoint=0), np.flatnonzero(acc0 <= 0.2))
        lr = z.hparam("lr")
        np.testing.assert_array_equal(z.select(lr=(0.01, 0.1), activation={"tanh"}),
                                      np.flatnonzero((lr >= 0.01) & (lr <= 0.1) & (z.hparam("activation") == "tanh")))
        assert len(z.select(status="pending")) == 0 and len(z.select(status=None)) == 24


def test_bad_names_and_rows(base_zoo):
    with Zoo(base_zoo) as z:
        with pytest.raises(KeyError, match="test_acc"):
            z.metric("test_accuracy")
        with pytest.raises(KeyError, match="optimizer"):
            z.hparam("optimiser")
        with pytest.raises(KeyError, match="test_acc.*optimizer"):
            z.select(nope=1)
        with pytest.raises(IndexError, match=r"\[0, 24\)"):
            z.batch([3, 24])
        with pytest.raises(IndexError):
            z.batch([-1])
        with pytest.raises(IndexError):
            z.state_dict(100)
        with pytest.raises(IndexError, match="checkpoint"):
            z.batch([0], checkpoint=3)
        z.load(-1)  # reading from memory must validate rows the same way
        with pytest.raises(IndexError, match=r"\[0, 24\)"):
            z.batch([3, 24])
        with pytest.raises(IndexError):
            z.batch([-1])


# ----------------------------------------------------------------------------------------------
# determinism

def test_same_config_twice_is_bit_identical(base_zoo, tmp_path):
    again = generate(config(), tmp_path / "again.h5", **QUIET)
    assert_same_datasets(base_zoo, again)


def test_chunk_size_does_not_change_the_zoo(base_zoo, tmp_path):
    # A model's training depends only on its own seed and hyperparameters, so the models it shares
    # a chunk with do not matter.
    other = config(training={"chunk_size": 5})
    assert other.hash() == config().hash()
    path = generate(other, tmp_path / "cs5.h5", **QUIET)
    with Zoo(path) as z:
        assert z.chunk_size == 5
    assert_same_datasets(base_zoo, path)


def test_chunk_size_does_not_change_a_zoo_with_dropout(tmp_path):
    # every random number is a hash of the model's seed and the draw's position: no chunk dependence
    hp = dict(BASE["hparams"], dropout={"uniform": [0.1, 0.5]})
    paths = [generate(config(hparams=hp, num_models=12, training={"chunk_size": cs}), tmp_path / f"d{cs}.h5", **QUIET)
             for cs in (12, 5)]
    with Zoo(paths[0]) as z:
        assert z.random_streams == RANDOM_STREAMS
    assert_same_datasets(*paths)


def test_refuses_to_resume_a_zoo_whose_random_numbers_were_drawn_otherwise(tmp_path):
    path = generate(config(), tmp_path / "old.h5", max_chunks=1, **QUIET)
    # the attributes of a file whose models drew from torch generators, with hashed dropout masks:
    # resuming it with hashed keys would mix two kinds of random numbers in one zoo
    with h5py.File(path, "a") as f:
        del f.attrs["random_streams"]
        f.attrs["dropout_masks"] = "hash32-v1"
    with pytest.raises(ZooFileError, match=r"older wsl whose models drew their random numbers as "
                                           r"'torch-generators \(dropout masks: hash32-v1\)'"):
        generate(config(), path, **QUIET)
    with Zoo(path) as z:
        assert z.random_streams == "torch-generators (dropout masks: hash32-v1)" and (z.status == STATUS_PENDING).any()
    # a finished zoo of an older version is left alone: nothing to resume
    done = generate(config(num_models=8, training={"chunk_size": 8}), tmp_path / "done.h5", **QUIET)
    with h5py.File(done, "a") as f:
        del f.attrs["random_streams"]
    generate(config(num_models=8, training={"chunk_size": 8}), done, **QUIET)


# ----------------------------------------------------------------------------------------------
# resume after a crash

CRASH = {
    "name": "crash", "seed": 5, "num_models": 40, "epochs": 10, "checkpoints": [0, 5, 10],
    "task": {"name": "digits", "n_train": 1000, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.001, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]}},
    "training": {"chunk_size": 8},  # 5 chunks of ~0.5 s each
}


def _record_training(monkeypatch):
    """Wrap train_population to record the seeds of every model it trains."""
    trained = []
    real = zgen.train_population

    def spy(spec, task, hparams, seeds, **kw):
        trained.extend(seeds)
        return real(spec, task, hparams, seeds, **kw)

    monkeypatch.setattr(zgen, "train_population", spy)
    return trained


def test_resume_after_sigkill(tmp_path, monkeypatch):
    cfg_path = tmp_path / "crash.yaml"
    cfg_path.write_text(yaml.safe_dump(CRASH))
    killed = tmp_path / "killed.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wsl.cli", "zoo", "generate", str(cfg_path), "--out", str(killed),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("chunk 1/") and "written" in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            pytest.fail("no 'chunk 1/... written' line; output:\n" + "".join(seen))
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert seen[-1].startswith("chunk 1/5 written"), seen

    reference = generate(parse_config(CRASH), tmp_path / "reference.h5", **QUIET)
    ref = read_all(reference)
    with Zoo(killed) as z:
        status = z.status
        done = np.flatnonzero(status == STATUS_DONE)
        pending = np.flatnonzero(status == STATUS_PENDING)
        assert 0 < len(done) < 40 and len(done) + len(pending) == 40
        for p in z.spec.params:
            stored = z.file["params"][p.name][()]
            assert stored[done].tobytes() == ref[f"params/{p.name}"][done].tobytes()
            assert np.isnan(stored[pending]).all()  # never written
        for m in z.metric_names:
            assert z.metric(m)[done].tobytes() == ref[f"metrics/{m}"][done].tobytes()
    assert verify(killed) == []  # pending models are not problems

    trained = _record_training(monkeypatch)
    logs = []
    generate(parse_config(CRASH), killed, progress=False, log=logs.append)
    assert any(f"{len(done)} of 40 models already finished" in s for s in logs), logs
    seeds = ref["models/seed"]
    assert sorted(trained) == sorted(seeds[pending].tolist())  # each pending model trained once, no done one again
    assert_same_datasets(reference, killed)

    trained.clear()
    generate(parse_config(CRASH), killed, **QUIET)  # a finished zoo: nothing to do
    assert trained == []


def test_max_chunks_then_resume(base_zoo, tmp_path, monkeypatch):
    path = tmp_path / "partial.h5"
    trained = _record_training(monkeypatch)
    generate(config(), path, max_chunks=1, **QUIET)
    with Zoo(path) as z:
        done = np.flatnonzero(z.status == STATUS_DONE)
        assert 0 < len(done) <= 8
        assert sorted(trained) == sorted(z.seed[done].tolist())
    first = list(trained)
    generate(config(), path, max_chunks=1, **QUIET)
    with Zoo(path) as z:
        done2 = np.flatnonzero(z.status == STATUS_DONE)
        assert len(done) < len(done2) < 24
    generate(config(), path, **QUIET)
    assert sorted(trained) == sorted(read_all(base_zoo)["models/seed"].tolist())
    assert len(set(trained)) == len(trained) and set(first) <= set(trained)
    assert_same_datasets(base_zoo, path)


# ----------------------------------------------------------------------------------------------
# refusing a file of another config

def test_refuses_a_file_of_another_config(base_zoo, tmp_path):
    path = tmp_path / "zoo.h5"
    shutil.copyfile(base_zoo, path)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(ZooFileError, match="different config"):
        generate(config(seed=4), path, **QUIET)
    with pytest.raises(ZooFileError, match="different config"):
        generate(config(epochs=3, checkpoints=[0, 3]), path, **QUIET)
    with pytest.raises(ZooFileError, match="shard"):
        generate(config(), path, shard=(0, 2), **QUIET)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    not_a_zoo = tmp_path / "other.h5"
    not_a_zoo.write_bytes(b"hello, not HDF5\n" * 10)
    with pytest.raises(ZooFileError, match="not an HDF5 file"):
        generate(config(), not_a_zoo, **QUIET)
    assert not_a_zoo.read_bytes() == b"hello, not HDF5\n" * 10


# ----------------------------------------------------------------------------------------------
# sharding + merge

def test_shards_merge_to_the_unsharded_zoo(base_zoo, tmp_path):
    parts = [generate(config(), tmp_path / f"s{i}.h5", shard=(i, 3), **QUIET) for i in range(3)]
    with Zoo(parts[1]) as z:
        assert z.shard == (1, 3)
        np.testing.assert_array_equal(z.index, np.arange(8, 16))
    merged = merge([parts[2], parts[0], parts[1]], tmp_path / "merged.h5")  # any order
    assert_same_datasets(base_zoo, merged)
    with Zoo(merged) as m, Zoo(base_zoo) as b:
        assert m.shard == (0, 1) and m.config_hash == b.config_hash and m.config == b.config
        assert m.spec == b.spec and m.task == b.task and m.checkpoint_epochs == b.checkpoint_epochs
    # the merged file is a zoo of that config: generate sees it finished
    logs = []
    generate(config(), merged, progress=False, log=logs.append)
    assert logs == ["resuming " + str(merged) + ": 24 of 24 models already finished"]

    with pytest.raises(ZooFileError, match="exists"):
        merge(parts, tmp_path / "merged.h5")
    with pytest.raises(ZooFileError, match=r"missing \[1\]"):
        merge([parts[0], parts[2]], tmp_path / "m2.h5")
    with pytest.raises(ZooFileError, match=r"duplicated \[0\]"):
        merge([parts[0], parts[0], parts[1], parts[2]], tmp_path / "m3.h5")
    other = generate(config(seed=9), tmp_path / "other1.h5", shard=(1, 3), **QUIET)
    with pytest.raises(ZooFileError, match="different zoos"):
        merge([parts[0], other, parts[2]], tmp_path / "m4.h5")
    assert not any((tmp_path / f"m{k}.h5").exists() for k in (2, 3, 4))


def test_merge_keeps_pending_models_pending(base_zoo, tmp_path):
    parts = [tmp_path / "s0.h5", tmp_path / "s1.h5"]
    generate(config(), parts[0], shard=(0, 2), **QUIET)
    generate(config(), parts[1], shard=(1, 2), max_chunks=1, **QUIET)
    merged = merge(parts, tmp_path / "merged.h5")
    with Zoo(merged) as m:
        st = m.status
        assert (st[:12] == STATUS_DONE).all() and 0 < (st[12:] == STATUS_DONE).sum() < 12
    generate(config(), merged, **QUIET)
    assert_same_datasets(base_zoo, merged)


# ----------------------------------------------------------------------------------------------
# verify

def _corrupt_chunk(path, layer, row):
    """Flip bytes in the HDF5 chunk holding ``row`` at the first checkpoint; return that chunk's rows."""
    with h5py.File(path, "r") as f:
        ds = f["params"][layer]
        first = row - row % ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((first,) + (0,) * (ds.ndim - 1))
        rows = range(first, min(first + ds.chunks[0], ds.shape[0]))
    assert info.chunk_offset[0] == first
    start = info.byte_offset + info.size // 2 - 4
    with open(path, "r+b") as fh:
        fh.seek(start)
        data = fh.read(8)
        fh.seek(start)
        fh.write(bytes(b ^ 0xA5 for b in data))
    return rows


def test_verify_intact_and_corrupt(base_zoo, tmp_path, capsys):
    assert verify(base_zoo) == []
    bad = tmp_path / "corrupt.h5"
    shutil.copyfile(base_zoo, bad)
    lost = _corrupt_chunk(bad, "layers.1.weight", 5)
    assert 1 < len(lost) < 24  # a chunk holds several models, not all of them
    problems = verify(bad)
    assert len(problems) == len(lost), problems  # each model of the chunk, by name
    for r, problem in zip(lost, problems):
        assert f"model {r} (row {r})" in problem and "layers.1.weight" in problem and "unreadable" in problem
    intact = lost.stop
    with Zoo(bad, cache_mb=0) as z:  # the other models still read
        assert torch.equal(z.batch([intact], 0)["layers.1.weight"], Zoo(base_zoo).batch([intact], 0)["layers.1.weight"])
        assert torch.equal(z.batch([5])["layers.1.weight"], Zoo(base_zoo).batch([5])["layers.1.weight"])
        with pytest.raises(ZooFileError, match=r"model 5 \(row 5\), parameter layers.1.weight: unreadable"):
            z.batch([intact, 5], 0)  # the corrupt chunk is at the first checkpoint
    with Zoo(bad) as z, pytest.raises(ZooFileError, match=f"model {lost.start}"):
        z.load(0)

    assert main(["zoo", "verify", str(base_zoo)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["zoo", "verify", str(base_zoo), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{len(lost)} problem(s)" in out and "layers.1.weight" in out


def test_verify_truncated_missing_and_foreign_files(base_zoo, tmp_path):
    cut = tmp_path / "cut.h5"
    data = base_zoo.read_bytes()
    size = int(len(data) * 0.6)
    cut.write_bytes(data[:size])
    problems = verify(cut)
    assert "truncated" in problems[0] and f"{size} bytes" in problems[0], problems
    # the models named are exactly those with a weight chunk that reached into the lost bytes
    lost = set()
    with h5py.File(base_zoo, "r") as f:
        for name, ds in f["params"].items():
            for r in range(ds.shape[0]):
                for c in range(ds.shape[1]):
                    info = ds.id.get_chunk_info_by_coord((r - r % ds.chunks[0], c) + (0,) * (ds.ndim - 2))
                    if info.byte_offset + info.size > size:
                        lost.add((r, name))
        metrics_at = min(ds.id.get_chunk_info(0).byte_offset for ds in f["metrics"].values())
    with h5py.File(base_zoo, "r") as f:
        pairs = 24 * len(f["params"])
    assert lost and len(lost) < pairs  # some layers of some models lay in the lost bytes, not all
    named = {(int(m.group(1)), m.group(2)) for m in
             (re.search(r"model (\d+) \(row \d+\), layer (\S+): unreadable", p) for p in problems[1:]) if m}
    assert named == lost
    with pytest.raises(ZooFileError, match="truncated"):
        Zoo(cut)
    # a cut through the metrics names the datasets lost with it (a zero-filled chunk could pass its checksum)
    cut.write_bytes(data[:metrics_at + 10])
    problems = verify(cut)
    assert "truncated" in problems[0]
    assert any("/metrics/test_acc lay in the lost bytes" in p for p in problems), problems

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00garbage" * 100)
    problems = verify(junk)
    assert len(problems) == 1 and "cannot be opened as HDF5" in problems[0]
    missing = tmp_path / "nope.h5"
    assert verify(missing) == [f"{missing}: file not found"]
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    problems = verify(foreign)
    assert len(problems) == 1 and "not a wsl zoo file" in problems[0]


# ----------------------------------------------------------------------------------------------
# diverged models

def test_diverged_models_are_recorded(tmp_path):
    # A linear network (identity activation) at lr 1e4 overflows within the first epoch.
    cfg = config(name="div", seed=1, num_models=16, checkpoints=[0, 2],
                 architecture={"name": "mlp", "hidden": [8, 8], "activation": "identity"},
                 hparams={"lr": {"choice": [0.01, 10000.0]}, "init_scale": 10.0})
    path = generate(cfg, tmp_path / "div.h5", **QUIET)
    with Zoo(path) as z:
        big = z.hparam("lr") > 1
        assert 0 < big.sum() < 16
        np.testing.assert_array_equal(z.status, np.where(big, 2, 1))
        assert (z.diverged_epoch[big] >= 1).all() and (z.diverged_epoch[~big] == -1).all()
        w = z.file["params"]["layers.0.weight"][()]
        assert np.isfinite(w[:, 0]).all()  # the initialisation is kept
        assert np.isnan(w[big, -1]).all() and np.isfinite(w[~big, -1]).all()
        acc = z.metric("test_acc")
        assert np.isnan(acc[big, -1]).all() and np.isfinite(acc[~big]).all()
        np.testing.assert_array_equal(z.select(), np.flatnonzero(~big))
        np.testing.assert_array_equal(z.select(status="diverged"), np.flatnonzero(big))
        assert f"{int(big.sum())} diverged" in z.summary()
    assert verify(path) == []
