"""Annotate a zoo file with its landscape: per-run sharpness and representation similarity, stored
as ``/annotations/<name>`` (``zoo.store.write_annotations``) and readable as predictor targets.

Every done run is read at one checkpoint and evaluated on the first ``examples`` training examples
of its task (rebuilt from the file's config, ``wsl.data.task.source_task``; clean labels, even in
zoos trained with label noise). Annotations:

- ``hessian_trace``: Hutchinson's estimate, ``probes`` Rademacher probes (``sharpness.hessian_trace``);
- ``hessian_top_eig``: power iteration, at most ``iters`` steps (``sharpness.top_eigenvalue``);
- ``cka_mean`` (``cka=True``): linear CKA on those examples, averaged over hidden layers and over
  ``cka_partners`` other done runs, partner ``k`` of the run at position ``i`` among the done runs
  being the one at ``(i + s_k) mod n`` for shifts ``s_k`` drawn from ``seed``: how alike a run's
  representations are to the rest of the population's (Yang et al. 2021 compare runs this way);
- ``lmc_loss_barrier``, ``lmc_acc_barrier``, ``lmc_loss_barrier_matched``, ``lmc_acc_barrier_matched``
  (``lmc=True``): for ``pairs`` partners per run (same hyperparameters, other seed, where the zoo
  has them; random ones otherwise: ``wsl.landscape.partners``), the barriers along the linear path
  at ``points`` values of α, raw and weight-matched; each pair's are stored under
  ``/annotations/pairs`` (``zoo.store.write_annotation_pairs``), each run's mean over its pairs as
  these per-run annotations.

Runs not done get NaN. ``cka_mean`` and the ``lmc_*`` annotations depend on partners chosen among
the file's runs: their ``info`` says ``"population": true`` (``zoo.merge`` refuses to join them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wsl.data.task import source_task
from wsl.weights import WeightBatch
from zoo.errors import InputError
from zoo.store import Zoo, write_annotation_pairs, write_annotations
from zoo.tasks import TaskData

from .partners import choose_partners, pair_barriers, per_run_means
from .sharpness import hessian_trace, top_eigenvalue
from .similarity import pairwise_cka


PATH_BYTES = 2 ** 28  # --lmc: pairs evaluated at once hold at most this many bytes of path weights


def annotate_zoo(path: str | Path, *, hessian: bool = True, cka: bool = False, checkpoint: int = -1,
                 probes: int = 10, iters: int = 100, tol: float = 1e-3, examples: int = 256,
                 cka_partners: int = 4, chunk: int = 1000, seed: int = 0, data_dir: str | Path | None = None,
                 lmc: bool = False, pairs: int = 2, points: int = 11,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, np.ndarray]:
    """Compute the annotations asked for and write them into the zoo at ``path``; return them
    (name -> [M], NaN for runs not done). ``checkpoint`` is a position among the stored epochs."""
    if not hessian and not cka and not lmc:
        raise InputError("annotate: nothing to compute; expected --hessian, --cka and/or --lmc")
    if lmc and (pairs < 1 or points < 2):
        raise InputError(f"annotate --lmc: expected --pairs >= 1 and --points >= 2, found {pairs} and {points}")
    with Zoo(path) as z:
        spec, config = z.spec, z.config
        rows = z.select()
        epoch = z.checkpoint_epochs[z.checkpoint_position(checkpoint)]
        activation = None if spec.activation is not None else [str(a) for a in z.hparam("activation")[rows]]
        weights = z.batch(rows, checkpoint) if len(rows) else None
        M = len(z)
        index, seeds = z.index[rows], z.seed[rows]
        hparams = {h: z.hparam(h)[rows] for h in z.hparam_names}
    if not len(rows):
        raise InputError(f"{path}: no done runs to annotate")
    task = source_task(config, data_dir)
    if not isinstance(task, TaskData):
        raise InputError(f"{path}: an INR zoo; annotate expects a zoo trained on a task with examples")
    params = [weights[p.name].float() for p in spec.params]
    x, y = task.x_train[:examples], task.y_train[:examples]

    def act(sl: slice):
        return None if activation is None else activation[sl]

    out: dict[str, np.ndarray] = {}
    info = {"checkpoint_epoch": int(epoch), "examples": int(len(x)), "seed": int(seed)}
    if hessian:
        trace, top = [], []
        for s in range(0, len(rows), chunk):
            sl = slice(s, s + chunk)
            part = [p[sl] for p in params]
            trace.append(hessian_trace(spec, part, task, x, y, probes=probes, seed=seed, activation=act(sl)))
            top.append(top_eigenvalue(spec, part, task, x, y, iters=iters, tol=tol, seed=seed, activation=act(sl))[0])
            log(f"hessian: {min(s + chunk, len(rows))}/{len(rows)} runs")
        out["hessian_trace"] = _scatter(M, rows, torch.cat(trace))
        out["hessian_top_eig"] = _scatter(M, rows, torch.cat(top))
        info.update(hessian_probes=probes, power_iters=iters, power_tol=tol)
    if cka:
        n = len(rows)
        if n < 2:
            raise InputError(f"{path}: CKA needs at least 2 done runs, found {n}")
        k = min(cka_partners, n - 1)
        shifts = 1 + np.random.default_rng(seed).choice(n - 1, size=k, replace=False)
        total = torch.zeros(n)
        for shift in shifts:
            partner = np.roll(np.arange(n), -int(shift))  # position i -> (i + shift) mod n
            b = [p[partner] for p in params]
            b_act = None if activation is None else [activation[j] for j in partner]
            total += pairwise_cka(spec, params, b, x, activation_a=activation, activation_b=b_act).mean(1)
        out["cka_mean"] = _scatter(M, rows, total / k)
        info.update(cka_partners=int(k), cka_shifts=[int(s) for s in shifts])
    write_annotations(path, {k: v for k, v in out.items() if k != "cka_mean"}, info)
    if "cka_mean" in out:
        write_annotations(path, {"cka_mean": out["cka_mean"]}, {**info, "population": True})
    if lmc:
        a, b, kinds = choose_partners(index, seeds, hparams, activation, pairs=pairs, seed=seed)
        if not len(a):
            raise InputError(f"{path}: LMC needs at least 2 done runs of one activation, found none paired")
        wb = WeightBatch.from_params(spec, params)
        wb.activation = activation
        per_pass = max(1, min(chunk, PATH_BYTES // (8 * points * spec.num_params)))  # raw and matched paths, float32
        barriers = pair_barriers(wb, a, b, x, y, task.kind, points=points, seed=seed, chunk=per_pass, log=log)
        lmc_info = {"checkpoint_epoch": int(epoch), "examples": int(len(x)), "seed": int(seed), "points": int(points),
                    "pairs_per_run": int(pairs), "pairs": int(len(a)), "max_iter": 50, "population": True,
                    "same_hparams_pairs": int(sum(k == "same_hparams" for k in kinds))}
        write_annotation_pairs(path, {"run_a": index[a], "run_b": index[b], "kind": kinds, **barriers}, lmc_info)
        means = {f"lmc_{m}": per_run_means(M, rows, a, b, v) for m, v in barriers.items()}
        write_annotations(path, means, lmc_info)
        out.update(means)
    return out


def _scatter(M: int, rows: np.ndarray, values: torch.Tensor) -> np.ndarray:
    full = np.full(M, np.nan, dtype=np.float32)
    full[rows] = values.detach().float().numpy()
    return full
