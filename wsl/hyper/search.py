"""``wsl hyper search``: hyperparameters tuned by gradient through a trained hypernetwork, then checked
by training real networks at the λ found.

Lorraine & Duvenaud (2018): once a hypernetwork maps λ to (approximately) the weights training at
λ gives, the validation loss of the emitted network is a differentiable function of λ. We descend
it from several starts at once (one population of emitted networks), in the ranges' unit
coordinates through a sigmoid, so λ never leaves the range the hypernetwork was trained on. The
validation split chooses; the test split only reports.

The λ found is then given to the zoo trainer (``zoo.train.train_population``): ``seeds`` networks
trained directly at λ, with the zoo config's other hyperparameters, report their test accuracy.
Given the zoo of a grid over the same hyperparameters, the report sets them beside the grid point
with the best mean validation accuracy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsl.hyper.model import HyperNetwork
from wsl.core.checkpoint import load_model
from wsl.weights import WeightBatch
from zoo.config import model_seed, parse_config
from zoo.functional import population_forward
from zoo.generate import build_task_and_spec, start_rows, stored_network
from zoo.store import Zoo
from zoo.train import per_example_loss, train_population
from zoo.errors import InputError

def gradient_search(model: HyperNetwork, steps: int = 300, lr: float = 0.05, starts: int = 8,
                    seed: int = 0, task: int = 0) -> dict[str, Any]:
    """λ minimising the emitted network's validation loss on task ``task``, descended from
    ``starts`` Sobol starts at once; the start that ends lowest wins. Returns λ, its validation
    loss and accuracy, and the loss curve of the winning start."""
    if not model.hparam_names:
        raise InputError("the hypernetwork is conditioned on no hyperparameter: there is nothing to search")
    if not 0 <= task < model.num_tasks:
        raise InputError(f"task must be in [0, {model.num_tasks}), found {task}")
    task_data = model.tasks[task]
    task_index = torch.full((starts,), task, dtype=torch.long, device=model.device)
    sobol = torch.quasirandom.SobolEngine(len(model.hparam_names), scramble=True, seed=seed)
    u0 = sobol.draw(starts).clamp(0.02, 0.98)
    logits = torch.logit(u0).to(model.device).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # only λ moves; the hypernetwork is left as it was given
        p.requires_grad_(False)
    curves = []
    try:
        for _ in range(steps):
            u = torch.sigmoid(logits)
            flat = model.emitter(model.condition_from_unit(u, task_index))
            res = _val_loss(model, WeightBatch.from_flat(model.spec, flat).params(), task_data)
            opt.zero_grad()
            res.sum().backward()
            opt.step()
            curves.append(res.detach().cpu().numpy())
    finally:
        for p in trainable:
            p.requires_grad_(True)
    with torch.no_grad():
        u = torch.sigmoid(logits)
        values = model.encoder.from_unit(u)
        if model.multitask:
            values = torch.cat([values, task_index.unsqueeze(1).float()], 1)
        final = model.evaluate_at(values, "val")
    best = int(np.nanargmin(final["loss"]))
    curves = np.stack(curves)
    return {"lambda": {n: float(values[best, k]) for k, n in enumerate(model.hparam_names)}, "task": task,
            "val_loss": float(final["loss"][best]), "val_acc": float(final["acc"][best]) if "acc" in final else None,
            "curve": curves[:, best].tolist(), "starts": starts, "steps": steps}


def _val_loss(model: HyperNetwork, params: list[torch.Tensor], task) -> torch.Tensor:
    """Per network: the mean validation loss, differentiable (the zoo's loss, no regularization)."""
    out = population_forward(model.spec, params, task.x_val, activation=model.activation)
    M = out.shape[0]
    return per_example_loss(task, out, task.y_val.unsqueeze(0).expand(M, *task.y_val.shape)).mean(1)


def train_directly(model: HyperNetwork, values: dict[str, float], seeds: int = 5, seed_offset: int = 10_000,
                   task: int = 0) -> dict[str, np.ndarray]:
    """Metrics [seeds] of networks the zoo trainer trains at λ ``values`` on task ``task`` with
    its config's other hyperparameters (varying ones not in ``values`` take the hypernetwork's ``fixed``)."""
    configs = [model.source["config"], *(model.source.get("tasks") or [])]
    config = parse_config(configs[task], f"hypernetwork task {task} config")
    task_data, spec = build_task_and_spec(config)
    hp = {}
    for name, space in config.hparams.items():
        if name in values:
            v = values[name]
        elif name in model.fixed:
            v = model.fixed[name]
        elif isinstance(space, dict):
            raise InputError(f"hyperparameter {name!r} varies in the source config ({space}) and the search did not "
                             f"set it: training at the λ found needs one value")
        else:
            v = space
        hp[name] = [v] * seeds
    model_seeds = [model_seed(config.seed + seed_offset, i) for i in range(seeds)]
    start = stored_network(config, spec)  # a fine-tuning zoo's networks start from its stored one(s)
    res = train_population(spec, task_data, hp, model_seeds, epochs=config.epochs, checkpoints=[config.epochs],
                           init_params=None if start is None else start_rows(config, start[0], np.arange(seeds)))
    return {k: v[:, -1] for k, v in res.metrics.items()}


def best_grid_point(zoo_path: str | Path, names: list[str], where: dict[str, float] | None = None) -> dict[str, Any]:
    """The grid point of a zoo (its runs grouped by ``names``; only the runs whose other
    hyperparameters equal ``where``) with the best mean validation accuracy, with that point's
    mean test accuracy."""
    with Zoo(zoo_path) as z:
        keep = z.done.copy()
        for name, value in (where or {}).items():
            keep &= np.isclose(z.hparam(name).astype(np.float64), float(value))
        if not keep.any():
            raise InputError(f"{zoo_path}: no done run has {where}")
        cols = np.stack([z.hparam(n).astype(np.float64) for n in names], 1)[keep]
        val, test = z.metric("val_acc")[keep, -1], z.metric("test_acc")[keep, -1]
    points, inverse = np.unique(cols, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    mean_val = np.array([np.nanmean(val[inverse == k]) for k in range(len(points))])
    k = int(np.nanargmax(mean_val))
    return {"lambda": dict(zip(names, points[k].tolist())), "where": dict(where or {}), "val_acc": float(mean_val[k]),
            "test_acc": float(np.nanmean(test[inverse == k])), "test_acc_std": float(np.nanstd(test[inverse == k])),
            "networks": int((inverse == k).sum()), "grid_points": int(len(points))}


def run_search(model_path: str | Path, *, zoo: str | Path | None = None, seeds: int = 5, steps: int = 300,
               lr: float = 0.05, starts: int = 8, task: int = 0, out: str | Path | None = None) -> dict[str, Any]:
    """The whole ``wsl hyper search``: search, train at λ, compare; printed and written as JSON."""
    model = load_model(model_path, HyperNetwork)
    found = gradient_search(model, steps=steps, lr=lr, starts=starts, task=task)
    values = torch.tensor([[found["lambda"][n] for n in model.hparam_names] + ([task] if model.multitask else [])])
    emitted = model.evaluate_at(values, "test")
    direct = train_directly(model, found["lambda"], seeds, task=task)
    report = {"hypernetwork": str(model_path), "conditions": model.conditions, "task": task, "search": found,
              "emitted_test_acc": float(emitted["acc"][0]) if "acc" in emitted else None,
              "emitted_test_loss": float(emitted["loss"][0]),
              "direct": {"seeds": seeds, "test_acc": _mean_std(direct.get("test_acc")),
                         "val_acc": _mean_std(direct.get("val_acc")), "test_loss": _mean_std(direct["test_loss"]),
                     "test_acc_median": float(np.median(direct["test_acc"])) if "test_acc" in direct else None}}
    if zoo is not None:  # the grid's runs at the hypernetwork's fixed values, if the grid varies them
        with Zoo(zoo) as z:
            where = {k: v for k, v in model.fixed.items() if k in z.hparam_names}
        report["grid"] = best_grid_point(zoo, model.hparam_names, where)
    lines = [f"λ found by gradient on the validation loss ({starts} starts, {steps} steps): "
             + ", ".join(f"{n}={v:.4g}" for n, v in found["lambda"].items()),
             f"  emitted network at λ: validation loss {found['val_loss']:.4f}"
             + (f", test accuracy {report['emitted_test_acc']:.4f}" if report["emitted_test_acc"] is not None else ""),
             f"  {seeds} networks trained directly at λ: test accuracy "
             f"{report['direct']['test_acc']['mean']:.4f} ± {report['direct']['test_acc']['std']:.4f} "
             f"(median {report['direct']['test_acc_median']:.4f})"
             if direct.get("test_acc") is not None else
             f"  {seeds} networks trained directly at λ: test loss {report['direct']['test_loss']['mean']:.4f}"]
    if "grid" in report:
        g = report["grid"]
        lines.append(f"best grid point of {zoo} by validation accuracy ({g['grid_points']} points): "
                     + ", ".join(f"{n}={v:.4g}" for n, v in g["lambda"].items())
                     + f": test accuracy {g['test_acc']:.4f} ± {g['test_acc_std']:.4f} ({g['networks']} networks)")
    print("\n".join(lines))
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=1))
        print(f"report written to {out}")
    return report


def _mean_std(v: np.ndarray | None) -> dict[str, float] | None:
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)) if len(v) > 1 else math.nan}
