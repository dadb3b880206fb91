"""Fitting a population of INRs: M networks, each to its own signal, in one vectorized loop.

Every step is full-batch: network m sees all P coordinates of its signal and takes one optimizer
step on its mean squared error (``epochs`` of an INR zoo count these steps). The population shares
the coordinate grid, so the first layer is one matmul of the shared grid with M weight matrices
and the rest are batched matmuls. Per-model learning rate, optimizer, Adam beta1 (``momentum``),
weight decay and init scale come from the zoo config, as in ``zoo.train``; model m equals the same
SIREN fitted alone with ``torch.nn`` and ``torch.optim`` (tests/test_inr_zoo.py shows it).

The forward and backward passes are written out by hand (``zoo.mlp_step``); on the CPU, large
populations run the step through ``torch.compile`` (``zoo.fused``).

Stored metrics per checkpoint: ``mse`` and ``psnr`` (10 log10(peak^2 / mse), peak = the width of
the signal's value range). A model whose loss or weights turn NaN/inf is marked diverged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .architectures import population_init
from .checkpoints import CheckpointRecorder, PopulationResult
from .fused import MIN_COMPILED_NUMEL, compile_enabled
from .mlp_step import mlp_population_step
from .optim import PopulationOptimizer
from .threads import CoreShare
from .workers import population_workers, train_in_workers
from .train import keep_freed_memory, runs_of_equal_values
from .weight_space import WeightSpaceSpec
from .errors import InputError

INR_METRICS = ["mse", "psnr"]


def psnr(mse: Tensor, peak: float) -> Tensor:
    """Peak signal-to-noise ratio in dB of a mean squared error, for values spanning ``peak``."""
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-30))


def fit_compiles(spec: WeightSpaceSpec, models: int, points: int, device: torch.device) -> bool:
    """Whether fitting ``models`` INRs of ``points`` coordinates runs its step compiled (on the
    CPU, for activations large enough: SIRENs' sin and cos gain about 4x, ``zoo.fused``)."""
    widest = max(layer.out_features for layer in spec.layers[:-1]) if len(spec.layers) > 1 else 1
    return torch.device(device).type == "cpu" and compile_enabled() and models * points * widest >= MIN_COMPILED_NUMEL


def fit_population(spec: WeightSpaceSpec, coords: Tensor, targets: Tensor, hparams: dict[str, list],
                   seeds: list[int], *, epochs: int, checkpoints: list[int], peak: float = 2.0,
                   device: str | torch.device = "cpu", progress: Callable[[float], None] | None = None,
                   init_seeds: list[int] | None = None, init_scheme: str = "standard",
                   stop_psnr: float | None = None, compiled: bool | None = None,
                   workers: int | None = None) -> PopulationResult:
    """Fit M INRs, model m to ``targets[m]`` ([M, P, out]) sampled at ``coords`` ([P, d]); return
    weights and ``mse``/``psnr`` at the ``checkpoints`` steps (0 = initialisation).

    ``init_seeds`` (default ``seeds``) and ``init_scheme`` (``zoo.architectures.init_bounds``) set
    the initialisation. With ``stop_psnr``, an INR stops once its PSNR reaches that value (as
    Navon et al. fit theirs: early stopping at 40 dB); its later checkpoints keep those weights.
    ``compiled`` (default ``fit_compiles`` of this population) says whether the step runs
    compiled; ``workers`` (default ``zoo.workers.population_workers``) splits the population across
    workers; the result does not depend on it beyond rounding."""
    M = len(seeds)
    order = sorted(range(M), key=lambda i: hparams["optimizer"][i])  # each optimizer kind contiguous
    if order != list(range(M)):
        res = fit_population(spec, coords, targets[order], {k: [v[i] for i in order] for k, v in hparams.items()},
                             [seeds[i] for i in order], epochs=epochs, checkpoints=checkpoints, peak=peak,
                             device=device, progress=progress,
                             init_seeds=None if init_seeds is None else [init_seeds[i] for i in order],
                             init_scheme=init_scheme, stop_psnr=stop_psnr, compiled=compiled, workers=workers)
        return res.rows_in_order(order)
    device = torch.device(device)
    if compiled is None:
        compiled = fit_compiles(spec, M, coords.shape[0], device)
    workers = population_workers(M, device, compiled=compiled) if workers is None else workers
    if workers > 1:  # the compile decision is the whole population's: each worker's share runs as in it
        def fit_rows(rows: np.ndarray, report: Callable[[float], None] | None) -> PopulationResult:
            return fit_population(spec, coords, targets[torch.as_tensor(rows)],
                                  {k: [v[i] for i in rows] for k, v in hparams.items()}, [seeds[i] for i in rows],
                                  epochs=epochs, checkpoints=checkpoints, peak=peak, device=device, progress=report,
                                  init_seeds=None if init_seeds is None else [init_seeds[i] for i in rows],
                                  init_scheme=init_scheme, stop_psnr=stop_psnr, compiled=compiled, workers=1)
        return train_in_workers(fit_rows, runs_of_equal_values(hparams["optimizer"]), workers, progress)
    if device.type == "cpu":
        keep_freed_memory()
    acts = set(hparams.get("activation", [spec.activation]))
    if len(acts) != 1:
        raise InputError(f"models of one population must share the activation, found {sorted(acts)}")
    net, step_fn = mlp_population_step(spec, acts.pop())
    x = coords.to(device, torch.float32)
    t = targets.to(device, torch.float32)
    if t.shape[:2] != (M, x.shape[0]):
        raise InputError(f"targets of shape {list(t.shape)}, expected [{M}, {x.shape[0]}, out]")
    init = population_init(spec, seeds if init_seeds is None else init_seeds, hparams["init_scale"], init_scheme)
    params = [p.to(device) for p in init]
    opt = PopulationOptimizer(params, list(hparams["optimizer"]), torch.tensor(hparams["lr"]),
                              torch.tensor(hparams["weight_decay"]), torch.tensor(hparams["momentum"]))

    recorder = CheckpointRecorder(params, checkpoints, INR_METRICS)
    alive = recorder.alive  # updated in place by recorder.mark_diverged
    fitting = alive.clone()  # alive and not yet stopped at stop_psnr
    scale = 1.0 / (t.shape[1] * t.shape[2])  # the MSE's weight of each squared error

    with CoreShare() as share:
        for step in range(epochs + 1):
            share.adjust()  # threads for the cores other jobs leave free (zoo.threads)
            if step < epochs:
                mse, grads = step_fn(params, x, t, (scale * fitting).to(t.dtype), compile=compiled)
            else:  # the final weights are only evaluated
                mse = net.mse(params, x, t)
            # NaN/inf weights give a NaN/inf error too; stop these models and drop their gradients,
            # which are NaN too (and NaN * 0 is NaN)
            if recorder.mark_diverged(~mse.isfinite(), step) and step < epochs:
                grads = [torch.where(alive.view(-1, *[1] * (g.dim() - 1)), g, 0.0) for g in grads]
            fitting &= alive
            if stop_psnr is not None:  # the weights that reach the PSNR are final: no update from this step on
                fitting &= ~(psnr(mse, peak) >= stop_psnr)
            if step in checkpoints:  # the weights after ``step`` updates and their error
                recorder.record(step, {"mse": mse, "psnr": psnr(mse, peak)})
            if step == epochs:
                break
            if not bool(fitting.any()):  # every INR stopped (or diverged): later checkpoints are these weights
                for later in (c for c in checkpoints if c > step):
                    recorder.record(later, {"mse": mse, "psnr": psnr(mse, peak)})
                if progress is not None:
                    progress(1.0)
                break
            opt.step(grads, fitting, compile=compiled)
            if progress is not None and (step + 1) % max(1, epochs // 100) == 0:
                progress((step + 1) / epochs)

    return recorder.result()
