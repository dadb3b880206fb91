"""The allocator settings ``zoo`` applies at import (``zoo.allocator``): on glibc, set once; off
with WSL_TUNE_MALLOC=0; never over a glibc variable the user set."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.allocator import SETTINGS, tune_allocator

ROOT = Path(__file__).resolve().parents[1]
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _applied_in_fresh_process(**env) -> dict:
    # what importing the library did, before anyone calls tune_allocator
    code = "import json, wsl.weights, zoo.allocator as a; print(json.dumps(a._applied))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "WSL_TUNE_MALLOC"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_importing_wsl_tunes_glibc_malloc_once():
    assert _applied_in_fresh_process() == {env: value for env, value in SETTINGS.values()}
    assert tune_allocator() is tune_allocator()  # once per process


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_allocator_left_alone_when_asked_and_user_settings_win():
    assert _applied_in_fresh_process(WSL_TUNE_MALLOC="0") == {}
    mine = _applied_in_fresh_process(MALLOC_MMAP_THRESHOLD_="1048576")
    assert "MALLOC_MMAP_THRESHOLD_" not in mine and "MALLOC_TRIM_THRESHOLD_" in mine
