"""The documentation: the site builds with every link and API reference resolved, the README stays a
front page, and the pages name files that exist.

``mkdocs build --strict`` fails on a link to a missing page or anchor, on a page left out of the
navigation and on a ``::: module`` reference that griffe cannot read, so a rename that breaks the
docs fails here.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
HISTORY = DOCS / "history.md"  # the record of the work as it happened: the one page that may name its steps
OPENING_COMMANDS = (
    "bash scripts/setup.sh && .venv/bin/wsl demo",
    "bash scripts/setup.sh && .venv/bin/python -m pytest -q",  # .ci/run runs exactly this
)
README_MAX_LINES = 250
WORK_STEP = re.compile(r"\b[Ss]ession \d+|\b[Ii]ssue \d+")
# repository files named in the pages: `wsl/...py`, `configs/zoo/x.yaml`, `scripts/x.py`, ...
NAMED_FILE = re.compile(r"(?<![\w/.])((?:wsl|zoo|scripts|configs|tests)/[\w/.-]+\.(?:py|yaml|sh))\b")


def front_pages() -> list[Path]:
    """README and every docs page but the history."""
    return [README, *(p for p in sorted(DOCS.glob("*.md")) if p != HISTORY)]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (scripts/setup.sh installs it with the dev extra)")
def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("INFO")]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings[-60:])
    assert (site / "index.html").is_file() and (site / "api" / "index.html").is_file()


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
    first_heading = next(i for i, line in enumerate(lines) if line.startswith("## "))
    fence = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert fence < first_heading, "README.md must open with the setup commands, before its first section"
    opening = [line.strip() for line in lines[fence + 1:fence + 1 + len(OPENING_COMMANDS)]]
    for line, command in zip(opening, OPENING_COMMANDS):
        assert line.startswith(command), f"README.md's opening block: expected {command!r}, found {line!r}"


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target or target.startswith("#"):
            continue
        assert (ROOT / target.split("#")[0]).exists(), f"README.md links to {target}, which does not exist"


@pytest.mark.parametrize("page", front_pages(), ids=lambda p: p.name)
def test_no_page_but_the_history_names_work_steps(page):
    hits = [f"{page.name}:{n}: {line.strip()}" for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
            if WORK_STEP.search(line)]
    assert not hits, "only docs/history.md tells the work step by step:\n" + "\n".join(hits)


@pytest.mark.parametrize("page", front_pages(), ids=lambda p: p.name)
def test_named_files_exist(page):
    missing = sorted({name for name in NAMED_FILE.findall(page.read_text(encoding="utf-8"))
                      if not (ROOT / name).exists()})
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def layout_files() -> set[str]:
    """The .py files the README's layout tree names, as paths: the tree is a code block under
    ``## Layout`` indented two spaces a level; a line whose first word ends in ``/`` is a folder,
    and the ``.py`` names on a line belong to the folder the line is in (or is)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named, folders = set(), []  # folders: (indent, path)
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while folders and folders[-1][0] >= indent:
            folders.pop()
        first = line.split()[0]
        here = "/".join(path for _, path in folders[-1:])
        if first.endswith("/"):
            here = f"{here}/{first[:-1]}" if here else first[:-1]
            folders.append((indent, here))
        for name in re.findall(r"(?<![\w*])(\w+\.py)\b", line):
            named.add(f"{here}/{name}")
    return named


def test_readme_layout_is_the_tree():
    named = layout_files()
    assert not sorted(p for p in named if not (ROOT / p).is_file()), \
        f"README.md's layout names files that do not exist: {sorted(p for p in named if not (ROOT / p).is_file())}"
    modules = {p.relative_to(ROOT).as_posix() for package in ("wsl", "zoo") for p in (ROOT / package).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    unnamed = sorted(modules - named)
    assert not unnamed, f"README.md's layout leaves out modules: {unnamed}"
