"""Zoo generation over many processes (Lightning Fabric, ``--devices``): one part per rank, merged into the
zoo one process makes; a killed run resumed; what a run refuses; merging an aligned block of parts; and
the lock that keeps two runs off one output."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from test_store import assert_same_datasets
from wsl.cli import main
from zoo.config import parse_config
from zoo.distributed import check_start, check_world, generate_part, part_path, parts_dir, run
from zoo.generate import generate
from zoo.lock import hold, lock_path
from zoo.merge import merge
from zoo.store import STATUS_DONE, Zoo, ZooFileError

QUIET = dict(progress=False, log=lambda s: None)
CONFIG = {
    "name": "dist_zoo", "seed": 1, "num_models": 16, "epochs": 2, "checkpoints": [0, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]}},
    "training": {"chunk_size": 4},  # two chunks per part of a 2-process run
}
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def one_thread(fn, *args, **kw):
    """Run ``fn`` on one intra-op thread, as the subprocesses below (OMP_NUM_THREADS=1) do."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kw)
    finally:
        torch.set_num_threads(before)


def cli(cfg, out, *extra, timeout=240):
    """``wsl zoo generate`` in a subprocess, as a user runs it: (exit status, stdout + stderr)."""
    r = subprocess.run([sys.executable, "-m", "wsl.cli", "zoo", "generate", str(cfg), "--out", str(out), "--quiet",
                        *extra], capture_output=True, text=True, timeout=timeout, env=ENV)
    return r.returncode, r.stdout + r.stderr


TWO_CPUS = ("--devices", "2", "--accelerator", "cpu")


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "dist_zoo.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The zoo of one process."""
    return one_thread(generate, parse_config(CONFIG), tmp_path_factory.mktemp("ref") / "ref.h5", **QUIET)


def test_two_processes_make_the_zoo_of_one(cfg_file, reference, tmp_path):
    out = tmp_path / "zoos" / "two.h5"
    rc, text = cli(cfg_file, out, *TWO_CPUS)
    assert rc == 0, text
    assert "[rank 0/2]" in text and "[rank 1/2]" in text and f"merged 2 parts into {out}" in text
    assert_same_datasets(reference, out)  # every /params, /metrics, /hparams and /models dataset, bitwise
    with Zoo(out) as z, Zoo(reference) as r:
        assert z.shard == (0, 1) and (z.status == STATUS_DONE).all() and z.config_hash == r.config_hash
    assert not parts_dir(out).exists() and not lock_path(out).exists()
    logs = []
    assert check_start(parse_config(CONFIG), out, (0, 1), 2, logs.append) is False  # a rerun trains nothing
    assert logs == [f"{out}: a complete zoo of this config (16 models); nothing to train"]


def test_killed_run_resumes_each_part(cfg_file, reference, tmp_path):
    config, out = parse_config(CONFIG), tmp_path / "resumed.h5"
    for rank in range(2):  # what a run killed after each rank's first chunk leaves
        one_thread(generate_part, config, out, shard=(0, 1), rank=rank, world=2, max_chunks=1, **QUIET)
    with Zoo(part_path(out, (0, 1), 1, 2)) as z:
        assert z.shard == (1, 2) and z.index.tolist() == list(range(8, 16)) and z.done.sum() == 4
    rc, text = cli(cfg_file, out, *TWO_CPUS)
    assert rc == 0, text
    for rank, (done, todo) in enumerate([("0..3", "4..7"), ("8..11", "12..15")]):
        assert f"[rank {rank}/2] resuming {part_path(out, (0, 1), rank, 2)}: 4 of 8 models already finished" in text
        assert f"[rank {rank}/2] chunk 1/1 written: models {todo}" in text  # only the pending chunk is trained
        assert f"models {done}" not in text
    assert_same_datasets(reference, out)
    assert not parts_dir(out).exists()


def test_lock_stops_a_second_run_of_one_or_many_processes(cfg_file, tmp_path):
    out = tmp_path / "locked.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom zoo.lock import hold\nwith hold(sys.argv[1]):\n"
                               "    print('locked', flush=True)\n    sys.stdin.read()\n", str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ZooFileError, match=rf"locked.h5: another run is generating into this file \(pid "
                                               rf"{holder.pid} on .*Wait for it to finish, or choose another --out"):
            generate(parse_config(CONFIG), out, **QUIET)
        rc, text = cli(cfg_file, out, *TWO_CPUS, timeout=120)  # every rank stops, none waits for the others
        assert rc == 2, text
        assert f"wsl: error: {out}: another run is generating into this file (pid {holder.pid}" in text
        assert "Traceback" not in text and not out.exists() and not parts_dir(out).exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not lock_path(out).exists()  # the holder let go and removed it
    lock_path(out).write_text('{"pid": 999999, "host": "gone", "started": "yesterday"}')  # left by a killed run
    path = one_thread(generate, parse_config(dict(CONFIG, num_models=4)), out, **QUIET)
    with Zoo(path) as z:
        assert z.done.all()
    assert not lock_path(out).exists()


def test_lock_names_its_holder_and_lets_go(tmp_path):
    out = tmp_path / "z.h5"
    with hold(out) as lock:
        assert lock == lock_path(out) and f'"pid": {os.getpid()}' in lock.read_text()
        with pytest.raises(ZooFileError, match=f"pid {os.getpid()}"), hold(out):
            pass
    with hold(out):  # released: taken again
        pass


def test_merge_of_an_aligned_block_is_that_shard(reference, tmp_path):
    config = parse_config(CONFIG)
    parts = [generate(config, tmp_path / f"q{k}.h5", shard=(k, 4), **QUIET) for k in range(4)]
    half = generate(config, tmp_path / "half.h5", shard=(1, 2), **QUIET)
    merged = merge([parts[3], parts[2]], tmp_path / "m23.h5")
    assert_same_datasets(half, merged)
    with Zoo(merged) as z:
        assert z.shard == (1, 2) and z.index.tolist() == list(range(8, 16))
    logs = []
    generate(config, merged, shard=(1, 2), progress=False, log=logs.append)  # shard 1/2 of this config, finished
    assert logs == [f"resuming {merged}: 8 of 8 models already finished"]
    with pytest.raises(ZooFileError, match=r"found shards \[1, 2\], missing \[0, 3\] \(to make shards 0..3\)"):
        merge([parts[1], parts[2]], tmp_path / "m12.h5")
    with pytest.raises(ZooFileError, match=r"found shards \[0, 2\], missing \[1, 3\]"):
        merge([parts[0], parts[2]], tmp_path / "m02.h5")
    assert not any((tmp_path / f"m{s}.h5").exists() for s in ("12", "02"))
    whole = one_thread(merge, parts, tmp_path / "whole.h5")
    with Zoo(whole) as z:
        assert z.shard == (0, 1)


def test_refuses_what_many_processes_must_not_resume(reference, tmp_path):
    config, out = parse_config(CONFIG), tmp_path / "z.h5"
    generate_part(config, out, shard=(0, 1), rank=0, world=2, max_chunks=1, **QUIET)
    with pytest.raises(ZooFileError, match=r"z.h5.parts: holds 1 part file\(s\) \(shard-0-of-2.h5\) of an unfinished "
                                           r"run with 2 processes .*this run has 4 process\(es\).*delete the folder"):
        check_start(config, out, (0, 1), 4, print)
    with pytest.raises(ZooFileError, match=r"unfinished run with 2 processes .*this run has 1 process"):
        run(config, out, **QUIET)  # one process would start over beside them
    assert not out.exists()
    halves = tmp_path / "halves.h5"
    generate_part(config, halves, shard=(0, 2), rank=1, world=2, max_chunks=1, **QUIET)  # --shard 0/2, part 1 of 4
    with pytest.raises(ZooFileError, match=r"shard-1-of-4.h5: part 1 of 4, not one of this run's parts 2..3 "
                                           r"\(shard 1/2\): left by a run with another --shard"):
        check_start(config, halves, (1, 2), 2, print)
    other = tmp_path / "other.h5"
    generate_part(parse_config(dict(CONFIG, seed=2)), other, shard=(0, 1), rank=1, world=2, max_chunks=1, **QUIET)
    with pytest.raises(ZooFileError, match="shard-1-of-2.h5: made from a different config"):
        check_start(config, other, (0, 1), 2, print)

    single = tmp_path / "single.h5"
    generate(config, single, max_chunks=1, **QUIET)  # a killed run of one process
    with pytest.raises(ZooFileError, match=r"12 of 16 models pending.*resume it with --devices 1"):
        check_start(config, single, (0, 1), 2, print)
    with pytest.raises(ValueError, match=r"--devices: 17 processes .* at most 16 processes"):
        check_world(config, (0, 1), 17)
    with pytest.raises(ValueError, match=r"--devices: 5 processes .* shard 1/4 \(4 models of 16\).*at most 4"):
        check_world(config, (1, 4), 5)
    check_world(config, (1, 4), 4)


@pytest.mark.parametrize("args,flag", [(["--devices", "0"], "--devices"), (["--devices", "-2"], "--devices"),
                                       (["--num-nodes", "0"], "--num-nodes"),
                                       (["--devices", "2", "--device", "cuda:1"], "--device cuda:1")])
def test_bad_devices_exit_2(cfg_file, tmp_path, capsys, args, flag):
    out = tmp_path / "z.h5"
    assert main(["zoo", "generate", str(cfg_file), "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wsl: error: {flag}") and len(err.strip().splitlines()) == 1
    assert not out.exists() and not parts_dir(out).exists()


def test_one_device_is_a_plain_run(cfg_file, reference, tmp_path):
    out = tmp_path / "one.h5"
    assert one_thread(main, ["zoo", "generate", str(cfg_file), "--out", str(out), "--quiet", "--devices", "1",
                             "--accelerator", "cpu"]) == 0
    assert_same_datasets(reference, out)
    assert not parts_dir(out).exists() and not lock_path(out).exists()


def test_part_files_partition_the_shard():
    from zoo.generate import shard_indices
    for m, (i, n), w in [(16, (0, 1), 2), (17, (1, 3), 4), (1000, (5, 7), 8)]:
        parts = [shard_indices(m, (i * w + r, n * w)) for r in range(w)]
        np.testing.assert_array_equal(np.concatenate(parts), shard_indices(m, (i, n)))
