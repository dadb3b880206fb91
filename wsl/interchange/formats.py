"""The formats ``wsl zoo import`` reads, found by name or by looking at the sources, and ``import_zoo``.

A format is a module with ``NAME``, ``detect(sources) -> bool`` and ``open(sources, **options) ->
ImportSource``. The readers of the field's public zoos are imported by module name only when
needed, so a module that is missing or broken costs its own format and says so, never the others.
Detection tries the export layout and the public formats first, and the folder of checkpoints last
(it takes any folder holding one).
"""
from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from wsl.interchange.records import ImportSource
from zoo.errors import InputError, MissingFileError, warn

#: Modules of formats, in the order detection tries them; the folder of checkpoints last.
FORMAT_MODULES = ("wsl.interchange.exported", "wsl.interchange.small_cnn_zoo", "wsl.interchange.dwsnets_inr",
                  "wsl.interchange.nfn_siren", "wsl.interchange.model_zoos", "wsl.interchange.folder")
DEFAULT_FORMAT = "folder"


@functools.lru_cache(maxsize=None)  # one warning per broken module, however often formats are looked up
def _load(module: str) -> ModuleType | None:
    """A format's module, or None (said once) where it cannot be imported."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        what = "is not installed" if getattr(e, "name", None) == module else f"cannot be imported ({e})"
        warn(f"format module {module} {what}; its format is unavailable, the others are not affected")
        return None
    if not all(hasattr(mod, a) for a in ("NAME", "detect", "open")):
        warn(f"format module {module} lacks NAME, detect or open; its format is unavailable")
        return None
    return mod


def available() -> dict[str, ModuleType]:
    """Format name -> module, for every module that imports."""
    return {m.NAME: m for m in filter(None, map(_load, FORMAT_MODULES))}


def format_module(name: str) -> ModuleType:
    formats = available()
    if name not in formats:
        raise InputError(f"--format {name!r}: expected one of {sorted(formats)}")
    return formats[name]


def detect_format(sources: list[Path]) -> str:
    """The first format whose ``detect`` takes the sources; the folder of checkpoints otherwise."""
    for module in FORMAT_MODULES:
        mod = _load(module)
        if mod is None or mod.NAME == DEFAULT_FORMAT:
            continue
        if mod.detect(sources):
            return mod.NAME
    return DEFAULT_FORMAT


def open_source(sources: list[str | Path], format: str | None = None, **options: Any) -> ImportSource:
    """The ``ImportSource`` of ``sources`` in ``format`` (detected when None); options the format's
    reader does not take are refused, naming the format."""
    paths = [Path(s) for s in sources]
    if not paths:
        raise InputError("no sources given; give the folders or files to import")
    for p in paths:
        if not p.exists():
            raise MissingFileError(f"{p}: not found")
    name = format or detect_format(paths)
    mod = format_module(name)
    accepted = inspect.signature(mod.open).parameters
    given = {k: v for k, v in options.items() if v is not None}
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        wrong = sorted(set(given) - set(accepted))
        if wrong:
            raise InputError(f"--{wrong[0]}: not an option of format {name!r} (it takes "
                             f"{', '.join('--' + k for k in list(accepted)[1:]) or 'none'})")
    return mod.open(paths, **given)


def resolve_architecture(name: str | Path) -> tuple[Any, dict, dict]:
    """(spec, config, task record) of ``--architecture``: a zoo config (a YAML file or a shipped
    config's name: its task and architecture), or a YAML holding ``architecture`` (name and
    options), ``input_shape`` and ``output_dim``."""
    import yaml

    from zoo.architectures import build_spec
    from zoo.config import load_config, resolve_config

    path = Path(name)
    if path.is_file():
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"{path}: not valid YAML ({e})") from None
        if isinstance(raw, dict) and "task" not in raw:
            arch = raw.get("architecture")
            if not isinstance(arch, dict) or "name" not in arch or "input_shape" not in raw or "output_dim" not in raw:
                raise InputError(f"{path}: expected a zoo config, or architecture (a mapping with a name), "
                                 f"input_shape and output_dim; found {sorted(raw)}")
            opts = {k: v for k, v in arch.items() if k != "name"}
            spec = build_spec(arch["name"], tuple(raw["input_shape"]), int(raw["output_dim"]), **opts)
            task = {"name": "unknown", "kind": "unknown", "input_shape": list(raw["input_shape"]),
                    "output_dim": int(raw["output_dim"])}
            return spec, {"name": path.stem, "architecture": dict(arch), "task": {"name": "unknown"}}, task
    from zoo.generate import build_task_and_spec

    config = load_config(resolve_config(name))
    task, spec = build_task_and_spec(config)
    if hasattr(task, "coords"):
        info = task.info | {"kind": "inr", "input_shape": [task.in_dim], "output_dim": task.out_dim}
    else:
        info = task.info | {"name": task.name, "kind": task.kind, "input_shape": list(task.input_shape),
                            "output_dim": task.output_dim}
    return spec, dict(config.raw), info


def import_zoo(sources: list[str | Path], out: str | Path, format: str | None = None, *,
               architecture: str | Path | None = None, activation: str | None = None, strict: bool = False,
               workers: int = 1, progress: bool = True, **options: Any) -> Path:
    """``wsl zoo import``: read ``sources`` in ``format`` (detected when None) and write the zoo ``out``."""
    from wsl.interchange.writer import write_imported_zoo

    source = open_source(sources, format, **options)
    if architecture is not None:
        spec, config, task = resolve_architecture(architecture)
        source.spec, source.config, source.task = spec, config, task
        source.options = dict(source.options) | {"architecture": str(architecture)}
    if workers < 1:
        raise InputError(f"--workers: expected at least 1, found {workers}")
    return write_imported_zoo(source, out, activation=activation, strict=strict, workers=workers, progress=progress)
