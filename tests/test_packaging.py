"""Packaging as users install it: the wheel ships every config as package data, and the shipped
configs resolve from any folder, in a source checkout and from an installed wheel alike."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from zoo.config import resolve_config, shipped_configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {kind: sorted(p.name for p in (ROOT / "configs" / kind).glob("*.yaml")) for kind in ("zoo", "predict", "diffusion", "hyper")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the project (the build writes build/ and *.egg-info beside its sources,
    so the working tree is left alone), built offline with the installed setuptools."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for d in ("wsl", "zoo", "configs"):
        shutil.copytree(ROOT / d, src / d, ignore=skip)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", "--disable-pip-version-check", "-w", str(out)],
                   check=True, cwd=tmp, env=dict(os.environ, PIP_NO_INPUT="1"))
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_holds_every_config_and_module(wheel):
    assert wheel.name.startswith("weight_space_learning-")  # the distribution name (not "wsl": taken on PyPI)
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind, files in CONFIGS.items():
        assert files, kind
        missing = [f for f in files if f"zoo/configs/{kind}/{f}" not in names]
        assert not missing, f"configs/{kind}/ files missing from the wheel: {missing}"
    modules = sorted(p.relative_to(ROOT).as_posix() for d in ("wsl", "zoo") for p in (ROOT / d).rglob("*.py")
                     if "__pycache__" not in p.parts)
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules missing from the wheel (list their package in pyproject's packages): {missing}"


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("digits_mlp", "digits_mlp.yaml"):
        p = resolve_config(name)
        assert p.is_absolute() and p.is_file() and p.name == "digits_mlp.yaml"
    assert sorted(p.name for p in shipped_configs("predict").glob("*.yaml")) == CONFIGS["predict"]
    for kind in ("diffusion", "hyper"):
        assert sorted(p.name for p in shipped_configs(kind).glob("*.yaml")) == CONFIGS[kind]
    with pytest.raises(FileNotFoundError, match=r"shipped configs \[.*'digits_mlp'"):
        resolve_config("nope")
    local = tmp_path / "mine.yaml"  # a config file in the working folder wins over the shipped ones
    local.write_text("name: mine\n")
    assert resolve_config("mine.yaml") == Path("mine.yaml")


def test_installed_wheel_reads_its_own_configs(wheel, tmp_path):
    """Unpack the wheel (what pip install does with it) and resolve configs from another folder with
    the source tree off sys.path: they must come from the installed package."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import wsl, zoo, inspect; from zoo.config import resolve_config, shipped_configs; "
            "from zoo.config import load_config; "
            "print(wsl.__file__); print(zoo.__file__); print(resolve_config('digits_mlp')); "
            "print(load_config(resolve_config('digits_mlp')).name); "
            "print(sorted(p.name for p in shipped_configs('predict').glob('*.yaml')))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, PYTHONPATH=str(site)),
                         capture_output=True, text=True, check=True)
    wsl_file, zoo_file, config, name, predict = run.stdout.splitlines()
    for f in (wsl_file, zoo_file, config):
        assert Path(f).resolve().is_relative_to(site.resolve()), f
    assert Path(config) == site / "zoo" / "configs" / "zoo" / "digits_mlp.yaml" and name == "digits_mlp"
    assert predict == str(CONFIGS["predict"])
