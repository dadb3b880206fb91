"""Intra-op thread counts sized to the CPU cores that other processes leave free.

Why: a training step is hundreds of small parallel loops (ATen's and Inductor's OpenMP regions),
each ending at a barrier that waits for every thread. When another job holds the cores, one
descheduled thread stalls the others at every loop: on 2 cores beside a 2-thread matmul job, a
2-thread zoo run kept 22% of its solo speed, a 1-thread run 56% (docs/benchmarks.md,
``scripts/bench_contention.py``). So the long loops (zoo training, INR fitting) ask ``CoreShare``
between steps how many threads the free cores carry, and it sets ``torch``'s count. It matters
where a population runs on intra-op threads (compiled steps, INR chunks, small populations);
eager populations of 128+ models split across ``zoo.workers`` instead, one thread each here.

The population trainers' numbers do not depend on the thread count (every reduction runs within
one model's rows; tests/test_threads.py checks it bit for bit), so following the load never
changes a zoo. ``WSL_ADAPT_THREADS=0`` turns the sizing off; it never goes above the count the
process started with (``OMP_NUM_THREADS``, ``torch.set_num_threads``), and does nothing where
``/proc/stat`` is missing (not Linux).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

#: Seconds of history a decision needs: /proc/stat counts in ticks of 10 ms.
MIN_WINDOW_S = 0.5


def adapt_enabled() -> bool:
    return os.environ.get("WSL_ADAPT_THREADS", "1").lower() not in ("0", "false", "no", "off")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds all cores have spent busy since boot (None where /proc/stat is missing)."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def threads_for_free_cores(others: float, cores: int, most: int) -> int:
    """Threads for the cores left when other processes use ``others`` cores on average: the free
    cores rounded down, with a quarter core of slack for the system's own noise, at least 1."""
    free = cores - others
    return max(1, min(most, int(free + 0.25)))


def cpu_seconds() -> tuple[float, float | None]:
    """This process's CPU seconds and all cores' busy seconds (None without /proc/stat)."""
    return time.process_time(), busy_seconds()


class CoreShare:
    """Follows the other processes' CPU load and sizes ``torch``'s intra-op threads to it.

    ``adjust()`` is cheap (one read of /proc/stat) and decides only once ``MIN_WINDOW_S`` has
    passed since the last decision: the other processes' load over that window is the busy time
    of all cores minus this process's own CPU time. ``wall_clock`` and ``cpu`` (``cpu_seconds``)
    are where it reads them; tests hand it a machine of their own.
    """

    def __init__(self, most: int | None = None, wall_clock: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], tuple[float, float | None]] = cpu_seconds):
        self.most = most or torch.get_num_threads()
        self.cores = usable_cores()
        self.wall_clock, self.cpu = wall_clock, cpu
        self._wall = wall_clock()
        self._own, self._busy = cpu()
        self.enabled = adapt_enabled() and self._busy is not None and self.most > 1
        self.threads = self.most
        self.history: list[tuple[float, int]] = []  # (others' load, threads chosen) per decision

    def adjust(self) -> int:
        """Re-size the threads to the load since the last decision; returns the count in use."""
        if not self.enabled:
            return torch.get_num_threads()
        now = self.wall_clock()
        if now - self._wall < MIN_WINDOW_S:
            return self.threads
        own, busy = self.cpu()
        others = max(0.0, (busy - self._busy) - (own - self._own)) / (now - self._wall)
        self._wall, self._own, self._busy = now, own, busy
        threads = threads_for_free_cores(others, self.cores, self.most)
        self.history.append((others, threads))
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads

    def __enter__(self) -> "CoreShare":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        """Give the process back the thread count it started with."""
        if self.enabled and self.threads != self.most:
            torch.set_num_threads(self.most)
            self.threads = self.most
