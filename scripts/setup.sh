#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install this repository (the distribution
# weight-space-learning: the import packages wsl and zoo, the wsl command) into it, editable, with
# the CPU build of PyTorch. Users with a GPU override the pin, e.g. WSL_TORCH="torch==2.13.0"
# from their CUDA index, or WSL_TORCH=torch for the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${WSL_TORCH:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Skip the install when nothing changed since the last one (same pyproject and torch pin).
stamp=".venv/.wsl-setup-$(cat pyproject.toml <(echo "$TORCH_SPEC") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
  # The distribution was called "wsl" before it became weight-space-learning: drop that old install
  # (stale metadata, a second owner of the wsl command and of the wsl and zoo imports).
  if .venv/bin/python -m pip show --quiet --disable-pip-version-check wsl >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall --quiet --disable-pip-version-check -y wsl
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  rm -f .venv/.wsl-setup-*
  touch "$stamp"
fi
