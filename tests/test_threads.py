"""zoo.threads: the thread count follows the other processes' load, and the zoo numbers do not depend on it."""
import os

import numpy as np
import pytest
import torch

import zoo.threads
from zoo.architectures import build_spec
from zoo.inr import fit_population
from zoo.signals import load_signals
from zoo.tasks import load_task
from zoo.threads import CoreShare, busy_seconds, threads_for_free_cores
from zoo.train import train_population


def with_threads(n, fn):
    """``fn()`` run with ``n`` intra-op threads, the previous count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def mixed_population(M=40, seed=3, kinds=("adam", "sgd")):
    """Hyperparameters and seeds of M models with dropout, subsets and label noise, their optimizers
    alternating over ``kinds``: every per-model path of a step."""
    rng = np.random.default_rng(seed)
    kinds = [kinds[i % len(kinds)] for i in range(M)]
    return {
        "lr": [float(rng.uniform(1e-3, 5e-3)) if k == "adam" else float(rng.uniform(0.01, 0.1)) for k in kinds],
        "optimizer": kinds,
        "momentum": list(rng.uniform(0.5, 0.9, M)),
        "weight_decay": list(rng.uniform(0.0, 1e-2, M)),
        "init_scale": list(rng.uniform(0.5, 2.0, M)),
        "dropout": list(rng.uniform(0.05, 0.5, M)),
        "data_fraction": list(rng.uniform(0.2, 1.0, M)),
        "label_noise": list(rng.uniform(0.0, 0.3, M)),
        "batch_size": [16] * M,
        "activation": ["relu"] * M,
    }, list(range(900, 900 + M))


def assert_same_result(a, b):
    assert len(a.params) == len(b.params)
    for k, (pa, pb) in enumerate(zip(a.params, b.params)):
        assert np.array_equal(pa, pb, equal_nan=True), f"parameter {k} differs"
    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        assert np.array_equal(a.metrics[name], b.metrics[name], equal_nan=True), f"metric {name} differs"
    assert np.array_equal(a.status, b.status)
    assert np.array_equal(a.diverged_epoch, b.diverged_epoch)


# ----------------------------------------------------------------------------------------------
# the property the sizing relies on: the zoo's numbers do not depend on the thread count

def test_population_training_is_bitwise_independent_of_the_thread_count(monkeypatch):
    monkeypatch.setenv("WSL_ADAPT_THREADS", "0")  # the counts under test stay as set
    task = load_task("digits", n_train=300, n_val=97)
    spec = build_spec("mlp", task.input_shape, task.output_dim, hidden=[32, 32], activation="relu")
    hp, seeds = mixed_population(M=40, kinds=("sgd",))

    def run():
        return train_population(spec, task, hp, seeds, epochs=2, checkpoints=[0, 1, 2], compile=False)

    one, two = with_threads(1, run), with_threads(2, run)
    assert np.isfinite(one.metrics["test_acc"]).all()
    assert_same_result(one, two)


def test_inr_fitting_is_bitwise_independent_of_the_thread_count(monkeypatch):
    monkeypatch.setenv("WSL_ADAPT_THREADS", "0")
    signals = load_signals("digits-inr", n_train=12, n_val=0, n_test=0)
    spec = build_spec("siren", (2,), 1, hidden=[16, 16], omega_0=30)
    M = signals.values.shape[0]
    rng = np.random.default_rng(4)
    kinds = ["sgd", "adam"] * (M // 2)
    hp = {"optimizer": kinds,
          "lr": [float(rng.uniform(1e-3, 5e-3)) if k == "adam" else float(rng.uniform(0.002, 0.008)) for k in kinds],
          "momentum": [float(rng.uniform(0.8, 0.95)) if k == "adam" else 0.9 for k in kinds],
          "weight_decay": list(rng.uniform(0.0, 1e-3, M)),
          "init_scale": list(rng.uniform(0.8, 1.2, M)),
          "activation": ["sine"] * M}
    seeds = list(range(700, 700 + M))

    def run():
        return fit_population(spec, signals.coords, signals.values, hp, seeds, epochs=15, checkpoints=[0, 15],
                              peak=signals.peak)

    one, two = with_threads(1, run), with_threads(2, run)
    assert np.isfinite(one.metrics["psnr"]).all()
    assert_same_result(one, two)


# ----------------------------------------------------------------------------------------------
# the pieces of the decision

def test_threads_for_free_cores():
    assert threads_for_free_cores(0.0, 2, 2) == 2
    assert threads_for_free_cores(0.2, 2, 2) == 2  # a quarter core of slack for system noise
    assert threads_for_free_cores(0.5, 2, 2) == 1  # 1.5 free cores round down
    assert threads_for_free_cores(1.0, 2, 2) == 1
    assert threads_for_free_cores(1.9, 2, 2) == 1  # never below 1
    assert threads_for_free_cores(2.0, 2, 2) == 1
    assert threads_for_free_cores(7.5, 2, 2) == 1
    # never above the count the process started with
    assert threads_for_free_cores(0.0, 8, 2) == 2
    assert threads_for_free_cores(0.0, 2, 1) == 1
    assert threads_for_free_cores(2.0, 8, 4) == 4
    assert threads_for_free_cores(5.0, 8, 4) == 3
    for others in np.linspace(0, 10, 41):
        for cores in (1, 2, 4, 16):
            for most in (1, 2, 3, 16):
                assert 1 <= threads_for_free_cores(float(others), cores, most) <= most


def test_busy_seconds_reads_the_cpu_line(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 50 0 25 500 5 0 2 0 0 0\nintr 12345\n")
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
    assert busy_seconds(stat) == pytest.approx((100 + 0 + 50 + 0 + 5 + 0) / os.sysconf("SC_CLK_TCK"))
    stat.write_text("intr 12345\nctxt 6789\n")
    assert busy_seconds(stat) is None
    stat.write_text("")
    assert busy_seconds(stat) is None
    assert busy_seconds(tmp_path / "missing") is None


@pytest.mark.skipif(busy_seconds() is None, reason="no /proc/stat")
def test_busy_seconds_of_this_machine_grow():
    a = busy_seconds()
    sum(i * i for i in range(200_000))
    assert busy_seconds() >= a > 0


# ----------------------------------------------------------------------------------------------
# CoreShare

@pytest.fixture
def two_threads():
    """Two intra-op threads for the test, the previous count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    if torch.get_num_threads() != 2:
        torch.set_num_threads(before)
        pytest.skip("torch cannot run 2 intra-op threads here")
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """Wall clock, this process's CPU time and /proc/stat's busy seconds, advanced by hand: the other
    processes keep ``others`` cores busy, this one ``own`` cores."""

    def __init__(self):
        self.wall = 1000.0
        self.own_cpu = 10.0
        self.busy = 5000.0

    def advance(self, seconds: float, others: float, own: float = 1.0) -> None:
        self.wall += seconds
        self.own_cpu += own * seconds
        self.busy += (others + own) * seconds

    def share(self, monkeypatch, cores: int = 2, **kw) -> CoreShare:
        """A ``CoreShare`` that reads this machine, with ``cores`` usable cores."""
        monkeypatch.setattr(zoo.threads, "usable_cores", lambda: cores)
        return CoreShare(wall_clock=lambda: self.wall, cpu=lambda: (self.own_cpu, self.busy), **kw)


def test_core_share_is_off_with_wsl_adapt_threads_0(monkeypatch, two_threads):
    monkeypatch.setenv("WSL_ADAPT_THREADS", "0")
    machine = FakeMachine()
    share = machine.share(monkeypatch)
    assert not share.enabled
    machine.advance(2.0, others=2.0)
    assert share.adjust() == 2
    assert torch.get_num_threads() == 2
    assert share.history == []
    torch.set_num_threads(1)  # a count set by someone else is neither reported wrong nor undone
    assert share.adjust() == 1
    share.restore()
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["1", None])
def test_core_share_follows_the_other_processes_load(monkeypatch, two_threads, value):
    if value is None:
        monkeypatch.delenv("WSL_ADAPT_THREADS", raising=False)
    else:
        monkeypatch.setenv("WSL_ADAPT_THREADS", value)
    machine = FakeMachine()
    with machine.share(monkeypatch) as share:
        assert share.enabled and share.most == 2 and share.cores == 2
        # an idle machine: both threads stay
        machine.advance(1.0, others=0.0, own=2.0)
        assert share.adjust() == 2 and torch.get_num_threads() == 2
        # another job keeps both cores busy: one thread
        machine.advance(1.0, others=2.0)
        assert share.adjust() == 1 and torch.get_num_threads() == 1
        assert share.history[-1] == (pytest.approx(2.0), 1)
        # decisions wait for MIN_WINDOW_S of history: a short window changes nothing
        machine.advance(zoo.threads.MIN_WINDOW_S / 5, others=0.0)
        assert share.adjust() == 1 and torch.get_num_threads() == 1
        assert len(share.history) == 2
        # the other job ends: back to two
        machine.advance(1.0, others=0.0)
        assert share.adjust() == 2 and torch.get_num_threads() == 2
        # busy again, then leaving the block restores the starting count
        machine.advance(1.0, others=1.0)
        assert share.adjust() == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert share.threads == 2


def test_core_share_restore_brings_back_the_starting_count(monkeypatch, two_threads):
    monkeypatch.delenv("WSL_ADAPT_THREADS", raising=False)
    machine = FakeMachine()
    share = machine.share(monkeypatch)
    machine.advance(0.6, others=1.9, own=0.5)
    assert share.adjust() == 1 and torch.get_num_threads() == 1
    share.restore()
    assert torch.get_num_threads() == 2


def test_core_share_never_exceeds_its_starting_count(monkeypatch, two_threads):
    monkeypatch.delenv("WSL_ADAPT_THREADS", raising=False)
    machine = FakeMachine()
    with machine.share(monkeypatch, cores=16) as share:  # many free cores, but the process started with 2 threads
        machine.advance(1.0, others=0.0)
        assert share.adjust() == 2 and torch.get_num_threads() == 2
    one = machine.share(monkeypatch, most=1)  # one thread: nothing to size
    assert not one.enabled


def test_core_share_does_nothing_without_proc_stat(monkeypatch, two_threads):
    monkeypatch.delenv("WSL_ADAPT_THREADS", raising=False)
    share = CoreShare(cpu=lambda: (0.0, None))  # what cpu_seconds reads where /proc/stat is missing
    assert not share.enabled
    assert share.adjust() == 2 and torch.get_num_threads() == 2
