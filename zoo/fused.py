"""Training steps fused by ``torch.compile`` on the CPU, with an eager fallback.

Why: at zoo sizes the elementwise passes, not the matmuls, bound a training step. ATen's CPU
``torch.sin`` and ``torch.cos`` each cost as much as a SIREN's hidden-layer batched matmul, and
every elementwise op is one more pass over [models, points, width] activations. Inductor turns a
hand-written step into a few generated loops around the matmuls (sin and cos together in one
pass, about 4x faster than ATen's; see docs/benchmarks.md) that agree with the eager ops to
float32 rounding.

Compiling needs a C++ compiler and takes about a minute the first time per installation and step
function; Inductor keeps the compiled graphs and kernels on disk, and ``inductor_cache_dir`` puts
that cache in the user's cache folder (``$XDG_CACHE_HOME/wsl/inductor``, by default
``~/.cache/wsl/inductor``) instead of Inductor's default under ``/tmp``, which a reboot empties:
later processes load the kernels in seconds. ``TORCHINDUCTOR_CACHE_DIR`` set by the user wins.
Where it is unavailable or fails, or with ``WSL_COMPILE=0`` in the environment, the same function
runs eagerly, with one warning. Callers run small inputs eagerly: compiling them would cost more than it saves; and a
whole training run too small to earn its compilation back runs eagerly (``run_worth_compiling``),
unless ``WSL_COMPILE=1`` asks for compiling wherever the inputs are large enough.

Compiled and eager steps agree to float32 rounding, not bit for bit, so the decision is made from
the config alone (never from timings): the same config gives the same zoo on the same machine.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import torch

#: Steps whose largest activation has fewer elements run eagerly.
MIN_COMPILED_NUMEL = 1 << 20


#: Population training runs with less elementwise work than this run eagerly. Measured on 2 CPU
#: cores with a cold Inductor cache (docs/benchmarks.md, "A fast first run"): the demo zoo
#: (work 4.6e9) took 91.7 s compiled, 51.1 s eager; the same at 3x the epochs (1.4e10) 154.6 s
#: against 145.8 s: compiling costs ~60 s and saves ~38% of eager step time, even at ~1.5e10.
MIN_RUN_COMPILED_WORK = 1.5e10


def inductor_cache_dir() -> Path:
    """Where compiled steps are cached: ``TORCHINDUCTOR_CACHE_DIR`` if set, else the user's cache
    folder, which this sets for the process (Inductor reads the variable when it compiles)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "wsl" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compile_mode() -> str:
    """``off`` (``WSL_COMPILE=0``), ``on`` (``WSL_COMPILE=1``: wherever inputs are large enough) or
    ``auto`` (unset: also only runs large enough to earn the compilation back)."""
    value = os.environ.get("WSL_COMPILE", "auto").lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    return "on" if value in ("1", "true", "yes", "on") else "auto"


def compile_enabled() -> bool:
    """Whether fused steps may be compiled here (``WSL_COMPILE=0`` turns them off)."""
    return compile_mode() != "off"


def run_worth_compiling(work: float) -> bool:
    """Whether a training run of ``work`` elementwise operations (epochs x examples seen x
    activation elements per example, summed over its models) should compile its steps: the
    compilation, about a minute with a cold cache, must cost less than the ~40% of eager step
    time that compiled steps save (``MIN_RUN_COMPILED_WORK``)."""
    mode = compile_mode()
    return mode == "on" or (mode == "auto" and work >= MIN_RUN_COMPILED_WORK)


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
            inductor_cache_dir()
            # the generated loops ask OpenMP for the thread count at run time, so they follow
            # torch.set_num_threads (zoo.threads) instead of the count they were compiled under
            self._compiled = torch.compile(self.fn, dynamic=True, options={"cpp.dynamic_threads": True})
        try:
            return self._compiled(*args)
        except Exception as e:  # no C++ compiler, an unsupported platform, ...
            self._failed = True
            first = str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: {first}); running it "
                          f"eagerly, which is slower but gives the same results", RuntimeWarning, stacklevel=2)
            return self.fn(*args)
