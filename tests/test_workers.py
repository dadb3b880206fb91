"""zoo.workers: a population split across two workers trains the models of one worker (to float32
rounding: MKL's batched kernels depend on the number of matrices); progress, errors and the
thread count are handled."""
import numpy as np
import pytest
import torch

from zoo.architectures import build_spec
from zoo.inr import fit_population
from zoo.signals import load_signals
from zoo.tasks import load_task
from zoo.train import train_population
from zoo.workers import ALIGN_ROWS, MIN_MODELS_PER_WORKER, WORKERS, population_workers, train_in_workers, worker_rows
from test_threads import mixed_population, with_threads


def assert_close_result(a, b):
    for pa, pb in zip(a.params, b.params):
        np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        np.testing.assert_allclose(a.metrics[name], b.metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.array_equal(a.status, b.status) and np.array_equal(a.diverged_epoch, b.diverged_epoch)


@pytest.fixture(scope="module")
def digits():
    task = load_task("digits", n_train=300, n_val=97)
    return task, build_spec("mlp", task.input_shape, task.output_dim, hidden=[32, 32], activation="relu")


def test_split_population_trains_the_models_of_one_worker(digits):
    task, spec = digits
    hp, seeds = mixed_population(M=300)
    done = []

    def run(w, progress=None):
        return train_population(spec, task, hp, seeds, epochs=3, checkpoints=[0, 1, 3], compile=False,
                                workers=w, progress=progress)

    one = with_threads(2, lambda: run(1))
    split = with_threads(2, lambda: run(2, done.append))
    assert np.isfinite(one.metrics["test_acc"]).all()
    assert_close_result(one, split)
    assert done == sorted(done) and done[-1] == pytest.approx(1.0)  # the workers' mean fraction, rising to 1
    assert torch.get_num_threads() >= 1


def test_split_inr_population_fits_the_inrs_of_one_worker():
    signals = load_signals("digits-inr", n_train=10, n_val=0, n_test=0)
    spec = build_spec("siren", (2,), 1, hidden=[16, 16], omega_0=30)
    M = signals.values.shape[0]
    hp = {"optimizer": ["adam", "sgd"] * (M // 2), "lr": [2e-3, 5e-3] * (M // 2), "momentum": [0.9] * M,
          "weight_decay": [0.0] * M, "init_scale": list(np.linspace(0.8, 1.2, M)), "activation": ["sine"] * M}
    seeds = list(range(M))

    def run(w):
        return fit_population(spec, signals.coords, signals.values, hp, seeds, epochs=10, checkpoints=[0, 10],
                              peak=signals.peak, workers=w)

    assert_close_result(run(1), run(2))


def test_a_failing_worker_raises_in_the_caller_and_restores_the_threads():
    def train_rows(rows, progress):
        if 64 in rows:
            raise ValueError("worker broke")
        return None

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="worker broke"):
        train_in_workers(train_rows, [(0, 200)], 2)
    assert torch.get_num_threads() == before


def test_workers_take_aligned_blocks_of_each_optimizer_group():
    rows = worker_rows([(0, 150), (150, 170)], 2)  # two groups: 150 adam rows, 20 sgd rows
    assert sorted(np.concatenate(rows).tolist()) == list(range(170))
    assert rows[0].tolist() == list(range(0, 64)) + list(range(128, 150))  # blocks 0 and 2 of the first group
    assert rows[1].tolist() == list(range(64, 128)) + list(range(150, 170))  # block 1, then the second group
    assert all(len(r) % ALIGN_ROWS == 0 or r[-1] in (149, 169) for r in rows)


def test_population_workers_depend_on_the_population_alone():
    def workers(models, threads, device="cpu"):
        return with_threads(threads, lambda: population_workers(models, device))

    assert workers(1000, 2) == WORKERS
    assert workers(1000, 1) == WORKERS  # not on the machine: the same config, the same zoo everywhere
    assert workers(WORKERS * MIN_MODELS_PER_WORKER, 2) == WORKERS
    assert workers(WORKERS * MIN_MODELS_PER_WORKER - 1, 2) == 1  # too few models to split
    assert workers(1000, 2, "meta") == 1  # accelerators take the population whole
    # a compiled step's fused loops share intra-op threads well: one worker
    assert with_threads(2, lambda: population_workers(1000, "cpu", compiled=True)) == 1
