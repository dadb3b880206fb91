"""The C allocator's settings for tensor work on a CPU.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its mmap
threshold (128 KiB at first, raised only as far as the largest block freed so far) from fresh pages
that it unmaps again on ``free``, and hands the free top of its heap back to the kernel beyond
128 KiB. So an out-of-place operation on a tensor of a few MiB pays a page fault for every 4 KiB
page it writes, every time it runs. Raising the threshold to glibc's maximum (32 MiB on 64-bit)
and keeping up to 1 GiB of freed heap lets those blocks be reused, as PyTorch's GPU caching
allocator reuses device memory. On the 2-core development machine this made one training step of
the MNIST-INR encoders 1.6x faster for HNP and 1.2x for the dense neural graphs
(``scripts/bench_encoders.py``, docs/benchmarks.md); the numbers computed do not change.

``tune_allocator`` runs once when ``zoo`` is imported (and so ``wsl``), on glibc only.
``WSL_TUNE_MALLOC=0`` leaves the allocator alone, and a ``MALLOC_*_`` environment variable of
glibc's, which it read at start, is never overridden.
"""
from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (malloc.h) -> (glibc's environment variable for it, the value set)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 32 << 20),
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 1 << 30),
    M_TOP_PAD: ("MALLOC_TOP_PAD_", 64 << 20),
}

_applied: dict[str, int] | None = None


def tune_allocator() -> dict[str, int]:
    """Apply ``SETTINGS`` through glibc's ``mallopt`` (once per process); what was set, by glibc's
    variable name (empty: nothing, e.g. off, or not glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = {}
    if os.environ.get("WSL_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return _applied
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, (env, value) in SETTINGS.items():
        if env not in os.environ and mallopt(param, value) == 1:
            _applied[env] = value
    return _applied
