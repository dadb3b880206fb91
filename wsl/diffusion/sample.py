"""``wsl sample``: networks from a trained generator, run on their task and written as a zoo file.

The generator checkpoint is read tensors-only (``wsl.core.checkpoint``): a generator passed
around is as untrusted as any checkpoint.

The zoo file records the provenance (``generated`` attribute): the generator file and its sha256,
the requested conditions, guidance, steps and seed, the source zoo, its selection, and the runs
the generator trained on (from the split saved in the checkpoint), which is what the memorization
suite compares against.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from wsl.core.checkpoint import model_from_checkpoint, read_checkpoint
from wsl.data.task import source_task
from wsl.diffusion import model as generators
from wsl.diffusion.networks import write_generated_zoo
from zoo.errors import InputError, warn
from zoo.store import metric_bounds


def train_runs(ckpt: dict) -> list[int] | None:
    """Model indices of the source zoo's training runs, from the split saved with the DataModule."""
    for key, state in ckpt.items():
        if key.endswith("DataModule") and isinstance(state, dict) and "split_runs_by_zoo" in state:
            by_zoo = state["split_runs_by_zoo"]
            first = next(iter(by_zoo.values()), None)
            return None if first is None else [int(i) for i in first["train"]]
    return None


def parse_conditions(items: list[str], names: list[str], num: int) -> dict[str, np.ndarray]:
    """``["test_acc=0.9"]`` -> ``{"test_acc": [0.9] * num}``; ``test_acc=0.5:0.95`` asks for values
    evenly spaced from 0.5 to 0.95 over the ``num`` networks (requested against achieved, in one file);
    ``label=0,1,2`` cycles through the listed values (classes: each as often). Checked against the
    generator's conditions."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--condition {item!r}: expected NAME=VALUE, NAME=LOW:HIGH or NAME=A,B,..., "
                             f"e.g. test_acc=0.9")
        if name not in names:
            raise InputError(f"--condition {name!r}: the generator is conditioned on {names or 'nothing'}")
        listed = "," in value
        try:
            bounds = [float(v) for v in value.split("," if listed else ":")]
        except ValueError:
            raise InputError(f"--condition {item!r}: {value!r} is not a number, a LOW:HIGH range or a list "
                             f"A,B,...") from None
        if listed:
            out[name] = np.resize(np.asarray(bounds), num)
            continue
        if len(bounds) > 2:
            raise InputError(f"--condition {item!r}: expected one value or LOW:HIGH")
        out[name] = np.linspace(bounds[0], bounds[-1], num)
    missing = [n for n in names if n not in out]
    if out and missing:
        raise InputError(f"--condition: give every condition of the generator; missing {missing}")
    return out


def check_requests(requested: dict[str, np.ndarray], gen: generators.WeightGenerator) -> None:
    """Refuse a request its property cannot take (``metric_bounds``: an accuracy outside [0, 1]);
    warn about one outside the values of the generator's training runs (an extrapolation), where
    its condition normalizer records them (``TargetNormalizer.observed_range``)."""
    observed = gen.condition_normalizer.observed_range() if requested else None
    for k, name in enumerate(gen.conditions):
        if name not in requested:
            continue
        values = requested[name]
        lo, hi = float(values.min()), float(values.max())
        found = f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"
        bounds = metric_bounds(name)
        if not np.isfinite(values).all():
            raise InputError(f"--condition {name}: expected finite values, found {values.tolist()}")
        if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
            raise InputError(f"--condition {name}: expected values in [{bounds[0]:g}, {bounds[1]:g}] (the range "
                             f"of {name}), found {found}")
        if observed is not None:
            seen = float(observed[0][k]), float(observed[1][k])
            if lo < seen[0] or hi > seen[1]:
                warn(f"--condition {name}: {found} lies outside the range of the generator's training runs "
                     f"({seen[0]:.4g} to {seen[1]:.4g}); the networks are an extrapolation")


def run_sample(model_path: str | Path, num: int, out: str | Path, conditions: list[str] = (), guidance: float = 1.0,
               seed: int = 0, steps: int | None = None, eta: float = 0.0, data_dir: str | None = None,
               device: str = "cpu", overwrite: bool = False, log=lambda s: None) -> Path:
    """Sample ``num`` networks into the zoo file ``out`` (an existing one only with ``overwrite``,
    and never a trained zoo). A conditional generator asked for no condition samples its
    unconditional model (the one classifier-free guidance trains), with a warning; ``log``
    receives one line per stage."""
    if num < 1:
        raise InputError(f"--num must be >= 1, found {num}")
    if Path(out).exists() and not overwrite:
        raise InputError(f"--out {out}: the file exists; give --overwrite to replace it (a generated zoo only), "
                         f"or another path")
    ckpt = read_checkpoint(model_path, generators.WeightGenerator)
    gen = model_from_checkpoint(ckpt, model_path, generators.WeightGenerator).to(device)
    requested = parse_conditions(list(conditions), gen.conditions, num)
    check_requests(requested, gen)
    cond = torch.tensor(np.stack([requested[n] for n in gen.conditions], 1), dtype=torch.float32) if requested else None
    if gen.conditions and not requested:
        if not gen.hparams.get("condition_dropout"):
            raise InputError(f"--condition: the generator is conditioned on {gen.conditions} and was trained without "
                             f"condition dropout, so it has no unconditional model; give every condition")
        warn(f"no --condition given: the generator was trained on conditions {gen.conditions}; sampling "
             f"unconditionally (give --condition NAME=VALUE to condition)")
    source = gen.source
    if not source.get("config"):
        raise InputError(f"{model_path}: the generator does not record its source zoo's config; cannot rebuild its task")
    task = source_task(source["config"], data_dir)
    log(f"sampling {num} networks ({type(gen).__name__}, {steps or int(gen.hparams.sample_steps)} steps, "
        f"guidance {guidance:g}, seed {seed}) on {device}")
    wb = gen.sample(num, cond, guidance=guidance, seed=seed, steps=steps, eta=eta).to("cpu")
    sha = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    provenance = {"generator": str(model_path), "generator_sha256": sha, "generator_class": type(gen).__name__,
                  "conditions": list(conditions), "guidance": guidance, "seed": seed,
                  "steps": steps or int(gen.hparams.sample_steps), "eta": eta,
                  "source_zoo": source.get("zoo"), "select": source.get("select", {}),
                  "train_runs": train_runs(ckpt)}
    # the reference of quality and novelty: the training runs' final checkpoint (also when the
    # generator learned from earlier checkpoints too, recorded beside it)
    last_epoch = int(source["config"].get("epochs", 0))
    provenance["checkpoint_epoch"] = last_epoch
    provenance["trained_on_checkpoints"] = (ckpt.get("datamodule_hyper_parameters") or {}).get("checkpoints", "last")
    hparams = {f"requested_{k}": v.tolist() for k, v in requested.items()}
    path = write_generated_zoo(out, name=f"{source['config'].get('name', 'zoo')}-generated", source_config=source["config"],
                               spec=gen.spec, task=task, wb=wb, hparams=hparams, generated=provenance,
                               checkpoint_epoch=last_epoch, log=log)
    return path
