"""A population split across two workers that share the process's cores without waiting for each other.

Why: a step of a population is hundreds of small operations, and with intra-op threads every one
of them forks onto the cores and joins again. Two workers (Python threads; the operations release
the GIL) that each train half of the population (alternate blocks of 64 models) on one thread of
a 2-core machine never wait for each other. Alone they train about as fast as two intra-op
threads; beside another 2-thread job they keep their fair share of the cores, where a thread that
the other job's threads deschedule stalls its partner at every join (``scripts/bench_contention.py``,
docs/benchmarks.md).

A model's numbers depend only on its own seed and hyperparameters (``zoo.rng``), and the trainers
make every decision that could change rounding (compiling, evaluation batch) for the whole
population before they split it; the split models agree with the whole population's to float32
rounding, and most often bit for bit (tests/test_workers.py). Not always: MKL's batched matmul
picks its kernel by the number of matrices, so a model's outputs can differ in the last bit
between populations of different sizes. That is why the number of workers is fixed (2, for an
eager step on a population of ``2 * MIN_MODELS_PER_WORKER`` models on the CPU; whether a step
compiles is itself decided from the config) rather than taken from the machine:
the same config gives the same zoo on a 2-core laptop and a 64-core server, where each worker
runs half of the intra-op threads.
"""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch

from .checkpoints import PopulationResult

#: Workers of a population on the CPU.
WORKERS = 2
#: Populations smaller than this many models per worker are not split: their steps are too small
#: for two threads to gain.
MIN_MODELS_PER_WORKER = 64
#: Workers take rows in blocks of this many (``worker_rows``).
ALIGN_ROWS = 64

Progress = Callable[[float], None]


def population_workers(models: int, device: str | torch.device, compiled: bool = False) -> int:
    """How many workers train a population of ``models`` on ``device``: ``WORKERS`` for an eager step
    on the CPU when each gets ``MIN_MODELS_PER_WORKER`` models, else 1. A compiled step runs few,
    large fused loops that two intra-op threads share well, while two workers' calls into it contend
    for the GIL: 1,000 benchmark MLPs trained 1.15-1.24 s on one worker, 1.28-1.45 s on two
    (eager: 1.38-1.57 s on one, 1.31-1.38 s on two). It depends on nothing else (see above)."""
    if torch.device(device).type != "cpu" or compiled or models < WORKERS * MIN_MODELS_PER_WORKER:
        return 1
    return WORKERS


def worker_rows(groups: list[tuple[int, int]], workers: int) -> list[np.ndarray]:
    """The rows of each worker: every row range of ``groups`` (a population's optimizer groups,
    which its trainer updates as contiguous slices) cut into blocks of ``ALIGN_ROWS`` rows counted
    from the group's start, dealt to the workers in turn (populations sorted by work split evenly).

    Why blocks: ATen's vectorized loops compute the last few elements of a tensor with scalar
    code, which may round differently (fused multiply-add). Blocks of ``ALIGN_ROWS`` rows keep
    every element of a worker's slices at the same position modulo the vector width as in the
    whole population, and put a slice's scalar tail only where the whole population has it."""
    rows: list[list[np.ndarray]] = [[] for _ in range(workers)]
    n = 0
    for start, end in groups:
        for block in range(start, end, ALIGN_ROWS):
            rows[n % workers].append(np.arange(block, min(block + ALIGN_ROWS, end)))
            n += 1
    return [np.concatenate(r) if r else np.zeros(0, dtype=np.int64) for r in rows]


def train_in_workers(train_rows: Callable[[np.ndarray, Progress | None], PopulationResult],
                     groups: list[tuple[int, int]], workers: int, progress: Progress | None = None,
                     ) -> PopulationResult:
    """``train_rows(rows, progress)`` for each worker's rows (``worker_rows`` of the population's
    optimizer ``groups``), each worker on its own Python thread; the results
    joined back in row order. Each worker runs an equal share of the process's intra-op threads
    (at least one). ``progress`` receives the workers' mean fraction done."""
    blocks = [r for r in worker_rows(groups, workers) if len(r)]
    workers = len(blocks)
    results: list[PopulationResult | None] = [None] * workers
    errors: list[BaseException] = []
    done = [0.0] * workers
    lock = threading.Lock()

    def reporter(j: int) -> Progress | None:
        if progress is None:
            return None

        def report(fraction: float) -> None:
            with lock:
                done[j] = fraction
                progress(sum(done) / workers)
        return report

    def work(j: int) -> None:
        torch.set_num_threads(share)  # OpenMP's thread count is per calling thread
        try:
            results[j] = train_rows(blocks[j], reporter(j))
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    before = torch.get_num_threads()
    share = max(1, before // workers)
    torch.set_num_threads(share)
    try:
        threads = [threading.Thread(target=work, args=(j,), name=f"wsl-population-worker-{j}")
                   for j in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    if errors:
        raise errors[0]
    return PopulationResult.concatenate(results).rows_in_order(np.concatenate(blocks).tolist())
