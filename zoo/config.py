"""Zoo configs: a task, an architecture, a hyperparameter space, a seed. Same config => same zoo.

A config is YAML (see ``configs/zoo/``)::

    name: digits_mlp
    seed: 0
    num_models: 1000
    epochs: 30
    checkpoints: [0, 1, 5, 30]          # epochs whose weights are kept (0 = initialisation)
    task: {name: digits}                # plus task options (layout, split_seed, data_dir, ...)
    architecture: {name: mlp, hidden: [32, 32], activation: relu}
    hparams:                            # per-model hyperparameters, each one of:
      lr: {log_uniform: [0.001, 0.5]}   #   a fixed value, {choice: [...]}, {uniform: [a, b]},
      optimizer: {choice: [sgd, adam]}  #   {log_uniform: [a, b]}, {int_uniform: [a, b]}, {grid: [...]}
    training: {chunk_size: auto}        # models trained at once (auto: sized to memory)
    init: {seeds: independent, scheme: standard}   # the defaults (see ``INIT``)

INR zoos (``task`` one of ``zoo.signals.SIGNAL_TASKS``, e.g. ``mnist-inr``) fit one network per
signal: model i fits signal ``i // inrs_per_signal`` (a task option, default 1), so
``num_models`` must equal signals x ``inrs_per_signal``; an epoch is one full-batch step, and only
the hyperparameters in ``INR_HPARAMS`` apply. The INR task option ``stop_psnr`` stops fitting an
INR once its PSNR reaches that many dB (its later checkpoints keep the stopped weights).

``init`` says how networks start: ``seeds: independent`` (each model draws its own initialisation)
or ``shared`` (every model starts from model 0's: networks whose neurons stay aligned), and the
scheme of ``zoo.architectures.init_bounds`` (``standard``, or ``dwsnets`` for SIRENs). Fine-tuning
zoos start every model from one stored network instead: ``init: {from: zoos/pre.h5, run: 0,
checkpoint: -1}`` (run and checkpoint position default to 0 and -1), read through ``zoo.store.Zoo``
when the zoo is generated; its architecture must be the config's.

Task zoos train different models on different variants of one task: the hyperparameter
``task_variant`` (``zoo.tasks.VARIANTS``: ``full``, ``classes:0-4``, ``relabel:1``, ``permute:1``,
``flip``, ``invert``, steps joined by ``+``), e.g. ``task_variant: {grid: [classes:0-4, flip]}``. It is
stored per model like any hyperparameter, and a model's metrics are on its own variant's examples.

Hyperparameters are sampled per model from a generator seeded with (seed, model index), so model i
is the same model whatever the sharding, chunking or resumption. Grid parameters are crossed: model
i takes grid point ``i mod G``.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .architectures import INIT_SCHEMES
from .optim import OPTIMIZERS
from .signals import SIGNAL_TASKS
from .tasks import VARIANTS, parse_variant
from .weight_space import ACTIVATIONS
from .errors import InputError, MissingFileError

# name -> (default, kind, validity check, description of the valid values)
HPARAMS: dict[str, tuple[Any, str, Any, str]] = {
    "lr": (0.01, "float", lambda v: v > 0, "a learning rate > 0"),
    "optimizer": ("sgd", "str", lambda v: v in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
    "momentum": (0.0, "float", lambda v: 0 <= v < 1, "SGD momentum / Adam beta1 in [0, 1)"),
    "weight_decay": (0.0, "float", lambda v: v >= 0, "a weight decay >= 0"),
    "init_scale": (1.0, "float", lambda v: v > 0, "a multiplier of the default init > 0"),
    "dropout": (0.0, "float", lambda v: 0 <= v < 1, "a dropout rate in [0, 1)"),
    "data_fraction": (1.0, "float", lambda v: 0 < v <= 1, "a fraction of the training set in (0, 1]"),
    "label_noise": (0.0, "float", lambda v: 0 <= v <= 1, "a fraction of noisy training labels in [0, 1]"),
    "batch_size": (32, "int", lambda v: v >= 1, "a batch size >= 1"),
    "activation": (None, "str", lambda v: v in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
}
# Hyperparameters (in HPARAMS' form) that a normalised config holds only where the config names
# them, so zoos made before they existed keep their config and its hash.
OPTIONAL_HPARAMS: dict[str, tuple[Any, str, Any, str]] = {
    "task_variant": ("full", "str", lambda v: _is_variant(v), f"a task variant: {', '.join(VARIANTS)} "
                     f"(e.g. classes:0-4, relabel:1, permute:1; zoo.tasks.VARIANTS)"),
}
SAMPLERS = ("choice", "uniform", "log_uniform", "int_uniform", "grid")
TOP_LEVEL = {"name", "seed", "num_models", "epochs", "checkpoints", "task", "architecture", "hparams",
             "training", "description", "init"}
# how networks are initialised: field -> (default, allowed values)
INIT = {"seeds": ("independent", ("independent", "shared")), "scheme": ("standard", INIT_SCHEMES)}
# init from a stored network (fine-tuning): field -> default; present only when ``from`` is given
INIT_FROM = {"from": None, "run": 0, "checkpoint": -1}
STRUCTURAL = ("activation", "batch_size")  # models in one chunk share these
# INR tasks (zoo.signals): one network per signal, full-batch steps; these hyperparameters apply
INR_HPARAMS = ("lr", "optimizer", "momentum", "weight_decay", "init_scale", "activation")


class ConfigError(InputError):
    """A zoo config is malformed; the message names the field, the expected and the found value."""


@dataclass
class ZooConfig:
    raw: dict[str, Any]  # normalised config, defaults filled in
    source: str = "<config>"

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def seed(self) -> int:
        return self.raw["seed"]

    @property
    def num_models(self) -> int:
        return self.raw["num_models"]

    @property
    def epochs(self) -> int:
        return self.raw["epochs"]

    @property
    def checkpoints(self) -> list[int]:
        return self.raw["checkpoints"]

    @property
    def task(self) -> dict[str, Any]:
        return self.raw["task"]

    @property
    def architecture(self) -> dict[str, Any]:
        return self.raw["architecture"]

    @property
    def hparams(self) -> dict[str, Any]:
        return self.raw["hparams"]

    @property
    def training(self) -> dict[str, Any]:
        return self.raw["training"]

    @property
    def init(self) -> dict[str, Any]:
        return self.raw["init"]

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)

    def hash(self) -> str:
        """Identity of the zoo this config makes. Options that change only how it is computed
        (chunk size, evaluation batch) are left out, so they may differ on resume."""
        ident = {k: v for k, v in self.raw.items() if k not in ("training", "description")}
        if ident.get("init") == {k: d for k, (d, _) in INIT.items()}:
            del ident["init"]  # the default: zoos made before the field existed keep their identity
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _err(source: str, field: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {field}: {msg}")


def _check_space(source: str, name: str, spec: Any) -> Any:
    """Validate one hyperparameter's space; return it normalised."""
    field = f"hparams.{name}"
    known = HPARAMS | OPTIONAL_HPARAMS
    if name not in known:
        raise _err(source, field, f"unknown hyperparameter; expected one of {sorted(known)}")
    _, kind, ok, desc = known[name]

    def check_value(v):
        if kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _err(source, field, f"expected a number ({desc}), found {v!r}")
        if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise _err(source, field, f"expected an integer ({desc}), found {v!r}")
        if kind == "str" and not isinstance(v, str):
            raise _err(source, field, f"expected {desc}, found {v!r}")
        if not ok(v):
            raise _err(source, field, f"expected {desc}, found {v!r}")
        return float(v) if kind == "float" else v

    if not isinstance(spec, dict):
        return check_value(spec)
    if len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise _err(source, field, f"expected a fixed value or one of {{{', '.join(SAMPLERS)}: ...}}, found {spec!r}")
    sampler, args = next(iter(spec.items()))
    if sampler in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise _err(source, field, f"{sampler} needs a non-empty list of values, found {args!r}")
        return {sampler: [check_value(v) for v in args]}
    if kind == "str":
        raise _err(source, field, f"{sampler} needs numbers; use choice or grid for {name}")
    if not isinstance(args, list) or len(args) != 2:
        raise _err(source, field, f"{sampler} needs [low, high], found {args!r}")
    lo, hi = (check_value(v) for v in args)
    if lo > hi:
        raise _err(source, field, f"{sampler} range is empty: low {lo} > high {hi}")
    if sampler == "log_uniform" and lo <= 0:
        raise _err(source, field, f"log_uniform needs low > 0, found {lo}")
    if sampler == "int_uniform" and kind != "int":
        raise _err(source, field, f"int_uniform is for integer hyperparameters; {name} is a {kind}")
    return {sampler: [lo, hi]}


def _positive_int(source: str, field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _err(source, field, f"expected a positive integer, found {v!r}")
    return v


def parse_config(raw: dict[str, Any], source: str = "<config>") -> ZooConfig:
    """Validate and normalise a config dict (defaults filled in)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise _err(source, unknown[0], f"unknown field; expected some of {sorted(TOP_LEVEL)}")
    for req in ("task", "architecture", "num_models", "epochs"):
        if req not in raw:
            raise _err(source, req, "missing required field")
    out: dict[str, Any] = {"name": str(raw.get("name", Path(source).stem)),
                           "description": str(raw.get("description", ""))}
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(source, "seed", f"expected an integer >= 0, found {seed!r}")
    out["seed"] = seed
    out["num_models"] = _positive_int(source, "num_models", raw["num_models"])
    out["epochs"] = _positive_int(source, "epochs", raw["epochs"])
    ckpts = raw.get("checkpoints", [out["epochs"]])
    if not isinstance(ckpts, list) or not ckpts or not all(isinstance(c, int) and not isinstance(c, bool) for c in ckpts):
        raise _err(source, "checkpoints", f"expected a non-empty list of epochs, found {ckpts!r}")
    if any(c < 0 or c > out["epochs"] for c in ckpts):
        raise _err(source, "checkpoints", f"epochs must lie in [0, {out['epochs']}], found {ckpts}")
    out["checkpoints"] = sorted(set(ckpts))
    for key in ("task", "architecture"):
        v = raw[key]
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict) or "name" not in v:
            raise _err(source, key, f"expected a mapping with a 'name', found {v!r}")
        out[key] = dict(v)
    hp = raw.get("hparams", {}) or {}
    if not isinstance(hp, dict):
        raise _err(source, "hparams", f"expected a mapping, found {hp!r}")
    inr = out["task"]["name"] in SIGNAL_TASKS
    if inr:
        unused = sorted(set(hp) - set(INR_HPARAMS))
        if unused:
            raise _err(source, f"hparams.{unused[0]}", f"not used by INR task {out['task']['name']!r} (each network "
                       f"fits its own signal, full batch); expected some of {list(INR_HPARAMS)}")
        k = out["task"].get("inrs_per_signal", 1)
        _positive_int(source, "task.inrs_per_signal", k)
        stop = out["task"].get("stop_psnr")
        if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, float)) or stop <= 0):
            raise _err(source, "task.stop_psnr", f"expected a PSNR in dB > 0, found {stop!r}")
    hparams = {}
    for name in sorted(INR_HPARAMS if inr else HPARAMS | {n: s for n, s in OPTIONAL_HPARAMS.items() if n in hp}):
        if name in hp:
            hparams[name] = _check_space(source, name, hp[name])
        elif name == "activation":
            hparams[name] = out["architecture"].get("activation", "relu" if out["architecture"]["name"] != "siren" else "sine")
        else:
            hparams[name] = HPARAMS[name][0]
    for name in hp:
        if name not in HPARAMS and name not in OPTIONAL_HPARAMS:
            _check_space(source, name, hp[name])
    if "activation" in hp and "activation" in out["architecture"] and hp["activation"] != out["architecture"]["activation"]:
        # the same value in both is what a normalised config holds (it is parsed again when a
        # stored zoo's task is rebuilt); two different values are a contradiction
        raise _err(source, "hparams.activation", f"set the activation either in architecture or in hparams, not both "
                   f"(architecture says {out['architecture']['activation']!r}, hparams {hp['activation']!r})")
    out["hparams"] = hparams
    training = dict(raw.get("training", {}) or {})
    known_training = {"chunk_size", "eval_batch", "memory_budget_gb"}
    for k in training:
        if k not in known_training:
            raise _err(source, f"training.{k}", f"unknown field; expected some of {sorted(known_training)}")
    cs = training.get("chunk_size", "auto")
    if cs != "auto":
        _positive_int(source, "training.chunk_size", cs)
    training.setdefault("chunk_size", "auto")
    out["training"] = training
    out["init"] = _parse_init(source, raw.get("init", {}))
    if out["init"]["scheme"] == "dwsnets" and out["architecture"]["name"] != "siren":
        raise _err(source, "init.scheme", f"'dwsnets' initialises SIRENs; the architecture is "
                   f"{out['architecture']['name']!r}")
    if "from" in out["init"]:
        _check_init_from(source, out, inr)
    return ZooConfig(out, source)


def _check_init_from(source: str, out: dict[str, Any], inr: bool) -> None:
    """``init.from`` starts every model from a stored network: nothing random about the start."""
    if inr:
        raise _err(source, "init.from", f"INR task {out['task']['name']!r}: each network fits its own signal from "
                   f"a random initialisation; init.from applies to classification and regression tasks")
    if out["init"]["seeds"] != "independent" or out["init"]["scheme"] != "standard":
        raise _err(source, "init", f"init.from copies a stored network; seeds and scheme describe random "
                   f"initialisations and must be left out, found seeds {out['init']['seeds']!r}, "
                   f"scheme {out['init']['scheme']!r}")
    if out["hparams"]["init_scale"] != HPARAMS["init_scale"][0]:
        raise _err(source, "hparams.init_scale", f"init.from copies a stored network, which init_scale would not "
                   f"scale; leave it out, found {out['hparams']['init_scale']!r}")


def _parse_init(source: str, init: Any) -> dict[str, Any]:
    """``init``: a mapping of ``INIT``'s fields (defaults filled in), or a bare ``shared`` / ``independent``;
    or ``{from: PATH.h5, run: 0, checkpoint: -1}`` (``INIT_FROM``): every model starts from the
    weights of that run of that zoo at that checkpoint position (``zoo.generate.stored_network``);
    ``run: each``: model i starts from the i-th finished run of that zoo (cycling through them), e.g.
    the networks of a generated zoo as initialisations."""
    if isinstance(init, str):
        init = {"seeds": init}
    if not isinstance(init, dict):
        raise _err(source, "init", f"expected a mapping with some of {sorted(INIT) + sorted(INIT_FROM)}, "
                   f"found {init!r}")
    out: dict[str, Any] = {}
    for k in init:
        if k not in INIT and k not in INIT_FROM:
            raise _err(source, f"init.{k}", f"unknown field; expected some of {sorted(INIT) + sorted(INIT_FROM)}")
    for k, (default, allowed) in INIT.items():
        v = init.get(k, default)
        if v not in allowed:
            raise _err(source, f"init.{k}", f"expected one of {list(allowed)}, found {v!r}")
        out[k] = v
    if "from" in init:
        path = init["from"]
        if not isinstance(path, str) or not path.strip():
            raise _err(source, "init.from", f"expected the path of a zoo file (.h5), found {path!r}")
        run, ckpt = init.get("run", INIT_FROM["run"]), init.get("checkpoint", INIT_FROM["checkpoint"])
        if run != "each" and (isinstance(run, bool) or not isinstance(run, int) or run < 0):
            raise _err(source, "init.run", f"expected a run id (an integer >= 0) or 'each', found {run!r}")
        if isinstance(ckpt, bool) or not isinstance(ckpt, int):
            raise _err(source, "init.checkpoint", f"expected a checkpoint position (an integer, -1 the last), "
                       f"found {ckpt!r}")
        out |= {"from": path, "run": run, "checkpoint": ckpt}
    else:
        for k in ("run", "checkpoint"):
            if k in init:
                raise _err(source, f"init.{k}", "applies to a stored network: give init.from too")
    return out


def _is_variant(value: str) -> bool:
    try:
        parse_variant(value)
    except InputError:
        return False
    return True


def load_config(path: str | Path) -> ZooConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, str(path))


def model_seed(zoo_seed: int, index: int) -> int:
    """The seed of model ``index``: everything random about that model derives from it."""
    return int(np.random.SeedSequence([zoo_seed, index]).generate_state(1, dtype=np.uint32)[0])


def sample_hparams(config: ZooConfig, indices: np.ndarray | list[int]) -> dict[str, list]:
    """Per-model hyperparameters of the models ``indices`` (global model indices)."""
    space = config.hparams
    grid_names = [n for n, s in space.items() if isinstance(s, dict) and "grid" in s]
    grid = list(itertools.product(*[space[n]["grid"] for n in grid_names])) or [()]
    out: dict[str, list] = {n: [] for n in space}
    for i in indices:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, int(i), 1]))
        point = dict(zip(grid_names, grid[int(i) % len(grid)]))
        for name in sorted(space):  # fixed order: a model's draws do not depend on dict order
            s = space[name]
            if name in point:
                v = point[name]
            elif not isinstance(s, dict):
                v = s
            elif "choice" in s:
                v = s["choice"][int(rng.integers(len(s["choice"])))]
            elif "uniform" in s:
                v = float(rng.uniform(*s["uniform"]))
            elif "log_uniform" in s:
                lo, hi = s["log_uniform"]
                v = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:  # int_uniform, inclusive
                lo, hi = s["int_uniform"]
                v = int(rng.integers(lo, hi + 1))
            out[name].append(v)
    return out


def varying_hparams(config: ZooConfig) -> list[str]:
    """Names of the hyperparameters that differ between models."""
    return [n for n, s in config.hparams.items()
            if isinstance(s, dict) and (len(next(iter(s.values()))) > 1 or "choice" not in s and "grid" not in s)]


# Kinds of shipped config, one folder each under configs/: zoos, then the Lightning runs of each family.
CONFIG_KINDS = ("zoo", "predict", "diffusion", "hyper")


def shipped_configs(kind: str = "zoo") -> Path:
    """The folder of the configs shipped with the library, one of ``CONFIG_KINDS``.

    An installed wheel holds them as package data, ``zoo/configs/<kind>/`` (pyproject.toml maps the
    top-level ``configs/`` folder there); a source checkout, the editable install of
    scripts/setup.sh included, reads the repository's ``configs/<kind>/``."""
    if kind not in CONFIG_KINDS:
        raise InputError(f"unknown kind of config {kind!r}; expected one of {list(CONFIG_KINDS)}")
    installed = resources.files(__package__) / "configs" / kind
    if installed.is_dir():
        return Path(str(installed))
    return Path(__file__).resolve().parents[1] / "configs" / kind


def resolve_config(name: str | Path, kinds: tuple[str, ...] = ("zoo",)) -> Path:
    """A config path, or the name of a config shipped in one of ``kinds`` (``digits_mlp``,
    ``digits_hnp``); a name found in none of them is a FileNotFoundError listing those that are."""
    p = Path(name)
    if p.exists():
        return p
    name = str(name)
    file = name if name.endswith(".yaml") else f"{name}.yaml"
    for kind in kinds:
        shipped = shipped_configs(kind) / file
        if shipped.exists():
            return shipped
    available = sorted(q.stem for kind in kinds for q in shipped_configs(kind).glob("*.yaml"))
    raise MissingFileError(f"config {name!r} not found (not a file, nor one of the shipped configs {available})")
