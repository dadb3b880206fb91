"""``wsl sample``: networks from a trained generator, run on their task and written as a zoo file.

The generator checkpoint is read tensors-only (``wsl.prediction.checkpoint.load_torch_file``): a
generator passed around is as untrusted as any checkpoint. Its class is recorded in the file by
``WeightGenerator.on_save_checkpoint`` and rebuilt from its hyperparameters here.

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

from wsl.diffusion import model as generators
from wsl.data.task import source_task
from wsl.diffusion.networks import write_generated_zoo
from wsl.prediction.checkpoint import NOT_OURS, PREDICTOR_GLOBALS, load_torch_file, model_from_checkpoint
from zoo.errors import InputError

GENERATOR_FILE = "a generator checkpoint (.ckpt) written by wsl fit with a configs/diffusion/ config"
GENERATOR_CLASSES = {c.__name__: c for c in (generators.WeightDiffusion, generators.LatentDiffusion)}


def read_generator_checkpoint(path: str | Path) -> dict:
    """A generator checkpoint's dict, read without running code; what is not one is refused."""
    ckpt = load_torch_file(path, GENERATOR_FILE, PREDICTOR_GLOBALS, hint=NOT_OURS)
    kind = ckpt.get("wsl_generator") if isinstance(ckpt, dict) else None
    if kind not in GENERATOR_CLASSES:
        if not isinstance(ckpt, dict):
            found = f"a {type(ckpt).__name__}"
        elif "spec_json" in (ckpt.get("hyper_parameters") or {}):
            found = "a predictor checkpoint"
        else:
            found = f"a dict with keys {sorted(map(str, ckpt))[:8]}"
        raise InputError(f"{path}: expected {GENERATOR_FILE} (one of {sorted(GENERATOR_CLASSES)}), found {found}")
    return ckpt


def generator_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> generators.WeightGenerator:
    """The generator a checkpoint dict describes, in eval mode on the CPU."""
    return model_from_checkpoint(GENERATOR_CLASSES[ckpt["wsl_generator"]], ckpt, source)


def load_generator(path: str | Path) -> generators.WeightGenerator:
    """A trained generator from its checkpoint file, read without running code, in eval mode."""
    return generator_from_checkpoint(read_generator_checkpoint(path), path)


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


def run_sample(model_path: str | Path, num: int, out: str | Path, conditions: list[str] = (), guidance: float = 1.0,
               seed: int = 0, steps: int | None = None, eta: float = 0.0, data_dir: str | None = None,
               device: str = "cpu") -> Path:
    if num < 1:
        raise InputError(f"--num must be >= 1, found {num}")
    ckpt = read_generator_checkpoint(model_path)
    gen = generator_from_checkpoint(ckpt, model_path).to(device)
    requested = parse_conditions(list(conditions), gen.conditions, num)
    cond = torch.tensor(np.stack([requested[n] for n in gen.conditions], 1), dtype=torch.float32) if requested else None
    if gen.conditions and not requested:
        print(f"no --condition given: sampling unconditionally (the generator is conditioned on {gen.conditions})")
    source = gen.source
    if not source.get("config"):
        raise InputError(f"{model_path}: the generator does not record its source zoo's config; cannot rebuild its task")
    task = source_task(source["config"], data_dir)
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
                               checkpoint_epoch=last_epoch)
    return path
