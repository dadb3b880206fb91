"""Fitting a population of INRs: M networks, each to its own signal, in one vectorized loop.

Every step is full-batch: network m sees all P coordinates of its signal and takes one optimizer
step on its mean squared error (``epochs`` of an INR zoo count these steps). The population shares
the coordinate grid, so the first layer is one matmul of the shared grid with M weight matrices
and the rest are batched matmuls. Per-model learning rate, optimizer, Adam beta1 (``momentum``),
weight decay and init scale come from the zoo config, as in ``zoo.train``; model m equals the same
SIREN fitted alone with ``torch.nn`` and ``torch.optim`` (tests/test_inr_zoo.py shows it).

The forward and backward passes are written out by hand for MLPs (linear layers with an
elementwise activation): autograd would keep more activations and launch more kernels, and at
these sizes (2 -> 32 -> 32 -> 1) the elementwise passes, not the matmuls, bound the step. On the
CPU, large populations run the step through ``torch.compile`` (``zoo.fused``), which fuses those
passes; the eager step gives the same numbers to float32 rounding.

Stored metrics per checkpoint: ``mse`` and ``psnr`` (10 log10(peak^2 / mse), peak = the width of
the signal's value range). A model whose loss or weights turn NaN/inf is marked diverged.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .fused import MIN_COMPILED_NUMEL, FusedStep
from .optim import PopulationOptimizer
from .train import STATUS_DIVERGED, STATUS_DONE, PopulationResult, initial_params, keep_freed_memory
from .weight_space import WeightSpaceSpec

INR_METRICS = ["mse", "psnr"]


def psnr(mse: Tensor, peak: float) -> Tensor:
    """Peak signal-to-noise ratio in dB of a mean squared error, for values spanning ``peak``."""
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-30))


def _sine(u: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sin(u), torch.cos(u)


def _relu(u: Tensor) -> tuple[Tensor, Tensor]:
    return torch.relu(u), (u > 0).to(u.dtype)


def _tanh(u: Tensor) -> tuple[Tensor, Tensor]:
    a = torch.tanh(u)
    return a, 1 - a * a


def _identity(u: Tensor) -> tuple[Tensor, None]:
    return u, None


ACTIVATIONS = {"sine": _sine, "relu": _relu, "tanh": _tanh, "identity": _identity}


class MLPPopulation:
    """Forward and hand-written backward of M linear-layer networks on shared inputs ``x`` [P, d].

    Each activation returns its output and its derivative together (``u -> (f(u), f'(u))``), so
    the backward pass only multiplies: for SIREN, sin and cos come out of one fused pass.
    SIREN's ``sin(omega_0 * z)`` is computed as ``sin(u)`` with ``u = (omega_0 W) h + omega_0 b``:
    scaling the small weight matrices instead of the large activations saves two passes over
    every hidden activation per step; the gradients of W and b are scaled back by ``omega_0``.
    """

    def __init__(self, n_layers: int, activation: str, omega: float = 1.0):
        if activation not in ACTIVATIONS:
            raise ValueError(f"INR fitting supports the activations {sorted(ACTIVATIONS)}; found {activation!r}")
        self.f = ACTIVATIONS[activation]
        self.scales = [omega if i < n_layers - 1 else 1.0 for i in range(n_layers)]  # the last layer is linear

    def forward(self, params: list[Tensor], x: Tensor) -> tuple[Tensor, list[tuple[Tensor | None, Tensor]]]:
        """Outputs [M, P, out] and what the backward pass needs per hidden layer: the activation's
        derivative at the pre-activation (None for the identity) and its output."""
        saved, h = [], x
        for i, s in enumerate(self.scales):
            wt = params[2 * i].transpose(1, 2) * s  # [M, in, out]
            b = (params[2 * i + 1] * s).unsqueeze(1)
            if h.dim() == 2:  # the shared input: [P, d] @ [M, d, out] -> [M, P, out]
                u = torch.matmul(h, wt) + b
            elif wt.shape[2] == 1:  # one output: a reduction the compiled step fuses with f(u) above
                u = (h * wt.transpose(1, 2)).sum(2, keepdim=True) + b
            else:
                u = torch.baddbmm(b, h, wt)
            if i == len(self.scales) - 1:
                return u, saved
            a, da = self.f(u)
            saved.append((da, a))
            h = a

    def backward(self, params: list[Tensor], x: Tensor, saved: list[tuple[Tensor | None, Tensor]],
                 grad_out: Tensor) -> list[Tensor]:
        """Gradients of every parameter given d loss / d output [M, P, out]."""
        grads: list[Tensor] = [None] * (2 * len(self.scales))  # type: ignore[list-item]
        g = grad_out  # d loss / d u of layer i
        for i, s in reversed(list(enumerate(self.scales))):
            inp = x if i == 0 else saved[i - 1][1]
            if inp.dim() == 2:  # sum_p g[m, p, o] x[p, k]
                gw = torch.matmul(inp.t(), g).transpose(1, 2)
            else:
                gw = torch.bmm(g.transpose(1, 2), inp)
            grads[2 * i] = gw * s
            grads[2 * i + 1] = g.sum(1) * s
            if i > 0:
                da = saved[i - 1][0]
                w = params[2 * i] * s
                g = g * w if g.shape[2] == 1 else torch.bmm(g, w)  # one output: an outer product
                if da is not None:
                    g = g * da
        return grads

    def loss_and_grads(self, params: list[Tensor], x: Tensor, targets: Tensor,
                       grad_scale: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-model mean squared error [M] and the gradients of ``grad_scale[m] * sum of squares``
        (``grad_scale`` = 1 / elements for the MSE's own gradient, 0 to freeze a model)."""
        out, saved = self.forward(params, x)
        err = out - targets
        mse = err.square().mean((1, 2))
        return mse, self.backward(params, x, saved, err * (2 * grad_scale).view(-1, 1, 1))

    def mse(self, params: list[Tensor], x: Tensor, targets: Tensor) -> Tensor:
        return (self.forward(params, x)[0] - targets).square().mean((1, 2))


@functools.cache
def population_step(n_layers: int, activation: str, omega: float) -> tuple[MLPPopulation, FusedStep]:
    """The network and its fused ``loss_and_grads``, one per architecture and process, so that the
    compiled step is reused by every chunk of a zoo."""
    net = MLPPopulation(n_layers, activation, omega)
    return net, FusedStep(net.loss_and_grads, f"the INR fitting step ({n_layers} layers, {activation})")


def mlp_population_step(spec: WeightSpaceSpec, activation: str | None = None) -> tuple[MLPPopulation, FusedStep]:
    """``population_step`` for an MLP weight space with biases (the only kind the fitter handles)."""
    if any(layer.kind != "linear" for layer in spec.layers) or not all(layer.bias for layer in spec.layers):
        raise ValueError(f"INR fitting needs an MLP weight space with biases; found layers "
                         f"{[(l.name, l.kind) for l in spec.layers]}")
    name = activation or spec.activation
    omega = float(spec.options.get("omega_0", 1.0)) if name == "sine" else 1.0
    return population_step(len(spec.layers), name, omega)


def fit_population(spec: WeightSpaceSpec, coords: Tensor, targets: Tensor, hparams: dict[str, list],
                   seeds: list[int], *, epochs: int, checkpoints: list[int], peak: float = 2.0,
                   device: str | torch.device = "cpu", progress: Callable[[float], None] | None = None) -> PopulationResult:
    """Fit M INRs, model m to ``targets[m]`` ([M, P, out]) sampled at ``coords`` ([P, d]); return
    weights and ``mse``/``psnr`` at the ``checkpoints`` steps (0 = initialisation)."""
    M = len(seeds)
    order = sorted(range(M), key=lambda i: hparams["optimizer"][i])  # each optimizer kind contiguous
    if order != list(range(M)):
        res = fit_population(spec, coords, targets[order], {k: [v[i] for i in order] for k, v in hparams.items()},
                             [seeds[i] for i in order], epochs=epochs, checkpoints=checkpoints, peak=peak,
                             device=device, progress=progress)
        return res.rows_in_order(order)
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    acts = set(hparams.get("activation", [spec.activation]))
    if len(acts) != 1:
        raise ValueError(f"models of one population must share the activation, found {sorted(acts)}")
    net, step_fn = mlp_population_step(spec, acts.pop())
    x = coords.to(device, torch.float32)
    t = targets.to(device, torch.float32)
    if t.shape[:2] != (M, x.shape[0]):
        raise ValueError(f"targets of shape {list(t.shape)}, expected [{M}, {x.shape[0]}, out]")
    inits = [initial_params(spec, s, float(c)) for s, c in zip(seeds, hparams["init_scale"])]
    params = [torch.stack([p[k] for p in inits]).to(device) for k in range(len(inits[0]))]
    opt = PopulationOptimizer(params, list(hparams["optimizer"]), torch.tensor(hparams["lr"]),
                              torch.tensor(hparams["weight_decay"]), torch.tensor(hparams["momentum"]))

    C = len(checkpoints)
    ck_params = [np.full((M, C, *p.shape[1:]), np.nan, dtype=np.float32) for p in params]
    ck_metrics = {n: np.full((M, C), np.nan, dtype=np.float32) for n in INR_METRICS}
    alive = torch.ones(M, dtype=torch.bool, device=device)
    diverged_epoch = np.full(M, -1, dtype=np.int32)
    scale = 1.0 / (t.shape[1] * t.shape[2])  # the MSE's weight of each squared error

    def record(step: int, mse: Tensor) -> None:
        c = checkpoints.index(step)
        keep = alive.cpu().numpy()
        for k, p in enumerate(params):
            ck_params[k][keep, c] = p[alive].cpu().numpy()
        ck_metrics["mse"][keep, c] = mse[alive].cpu().numpy()
        ck_metrics["psnr"][keep, c] = psnr(mse[alive], peak).cpu().numpy()

    widest = max(layer.out_features for layer in spec.layers[:-1]) if len(spec.layers) > 1 else 1
    compiled = device.type == "cpu" and M * x.shape[0] * widest >= MIN_COMPILED_NUMEL  # worth compiling
    for step in range(epochs + 1):
        if step < epochs:
            mse, grads = step_fn(params, x, t, (scale * alive).to(t.dtype), compile=compiled)
        else:  # the final weights are only evaluated
            mse = net.mse(params, x, t)
        bad = ~mse.isfinite() & alive  # NaN/inf weights give a NaN/inf error too
        if bool(bad.any()):  # stop these models; their gradients are NaN too, and NaN * 0 is NaN
            diverged_epoch[bad.cpu().numpy()] = step
            alive.logical_and_(~bad)
            if step < epochs:
                grads = [torch.where(alive.view(-1, *[1] * (g.dim() - 1)), g, 0.0) for g in grads]
            for p in params:
                p[bad] = 0.0
        if step in checkpoints:
            record(step, mse)  # the weights after ``step`` updates and their error
        if step == epochs:
            break
        opt.step(grads, alive, compile=compiled)
        if progress is not None and (step + 1) % max(1, epochs // 100) == 0:
            progress((step + 1) / epochs)

    status = np.where(diverged_epoch >= 0, STATUS_DIVERGED, STATUS_DONE).astype(np.uint8)
    return PopulationResult(ck_params, ck_metrics, status, diverged_epoch)
