"""Training steps fused by ``torch.compile`` on the CPU, with an eager fallback.

Why: at zoo sizes the elementwise passes, not the matmuls, bound a training step. ATen's CPU
``torch.sin`` and ``torch.cos`` each cost as much as a SIREN's hidden-layer batched matmul, and
every elementwise op is one more pass over [models, points, width] activations. Inductor turns a
hand-written step into a few generated loops around the matmuls (sin and cos together in one
pass, about 4x faster than ATen's; see docs/benchmarks.md) that agree with the eager ops to
float32 rounding.

Compiling needs a C++ compiler and takes seconds once per process and step function (Inductor
keeps the kernels in its on-disk cache, so later processes start faster). Where it is unavailable
or fails, or with ``WSL_COMPILE=0`` in the environment, the same function runs eagerly, with one
warning. Callers run small inputs eagerly: compiling them would cost more than it saves.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

#: Steps whose largest activation has fewer elements run eagerly.
MIN_COMPILED_NUMEL = 1 << 20


def compile_enabled() -> bool:
    """Whether fused steps may be compiled here (``WSL_COMPILE=0`` turns them off)."""
    return os.environ.get("WSL_COMPILE", "1").lower() not in ("0", "false", "no", "off")


class FusedStep:
    """``fn``, run through ``torch.compile(fn, dynamic=True)`` when asked, enabled and working.

    ``fn`` must be a pure tensor function (no data-dependent Python branches) so that one
    compilation serves every population size. A failed compilation is reported once and the
    eager function serves every later call.
    """

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        self._compiled: Callable | None = None
        self._failed = False

    def __call__(self, *args, compile: bool = True):
        if not compile or self._failed or not compile_enabled():
            return self.fn(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True)
        try:
            return self._compiled(*args)
        except Exception as e:  # no C++ compiler, an unsupported platform, ...
            self._failed = True
            first = str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: {first}); running it "
                          f"eagerly, which is slower but gives the same results", RuntimeWarning, stacklevel=2)
            return self.fn(*args)
