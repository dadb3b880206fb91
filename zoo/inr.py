"""Fitting a population of INRs: M networks, each to its own signal, in one vectorized loop.

Every step is full-batch: network m sees all P coordinates of its signal and takes one optimizer
step on its mean squared error (``epochs`` of an INR zoo count these steps). The population shares
the coordinate grid, so the first layer is one matmul of the shared grid with M weight matrices
and the rest are batched matmuls. Per-model learning rate, optimizer, Adam beta1 (``momentum``),
weight decay and init scale come from the zoo config, as in ``zoo.train``; model m equals the same
SIREN fitted alone with ``torch.nn`` and ``torch.optim`` (tests/test_inr_zoo.py shows it).

The forward and backward passes are written out by hand for MLPs (linear layers with an
elementwise activation): autograd would keep more activations and launch more kernels, and at
these sizes (2 -> 32 -> 32 -> 1) the elementwise passes, not the matmuls, bound the step.

Stored metrics per checkpoint: ``mse`` and ``psnr`` (10 log10(peak^2 / mse), peak = the width of
the signal's value range). A model whose loss or weights turn NaN/inf is marked diverged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .optim import PopulationOptimizer
from .train import STATUS_DIVERGED, STATUS_DONE, PopulationResult, initial_params, keep_freed_memory
from .weight_space import WeightSpaceSpec

INR_METRICS = ["mse", "psnr"]


def psnr(mse: Tensor, peak: float) -> Tensor:
    """Peak signal-to-noise ratio in dB of a mean squared error, for values spanning ``peak``."""
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-30))


def _act(name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor, Tensor], Tensor]]:
    """An activation and its backward ``(u, a, grad_a) -> grad_u`` (in place) where ``a = f(u)``."""
    if name == "sine":
        return torch.sin, lambda u, a, g: g.mul_(torch.cos(u))
    if name == "relu":
        return torch.relu, lambda u, a, g: g.mul_(a > 0)
    if name == "tanh":
        return torch.tanh, lambda u, a, g: g.mul_(1 - a * a)
    if name == "identity":
        return (lambda u: u), (lambda u, a, g: g)
    raise ValueError(f"INR fitting supports the activations sine, relu, tanh and identity; found {name!r}")


class MLPPopulation:
    """Forward and hand-written backward of M linear-layer networks on shared inputs ``x`` [P, d].

    SIREN's ``sin(omega_0 * z)`` is computed as ``sin(u)`` with ``u = (omega_0 W) h + omega_0 b``:
    scaling the small weight matrices instead of the large activations saves two passes over
    every hidden activation per step; the gradients of W and b are scaled back by ``omega_0``.
    """

    def __init__(self, spec: WeightSpaceSpec, activation: str | None = None):
        if any(layer.kind != "linear" for layer in spec.layers) or not all(layer.bias for layer in spec.layers):
            raise ValueError(f"INR fitting needs an MLP weight space with biases; found layers "
                             f"{[(l.name, l.kind) for l in spec.layers]}")
        self.spec = spec
        name = activation or spec.activation
        self.f, self.df = _act(name)
        omega = float(spec.options.get("omega_0", 1.0)) if name == "sine" else 1.0
        n = len(spec.layers)
        self.scales = [omega if i < n - 1 else 1.0 for i in range(n)]  # the last layer is linear

    def forward(self, params: list[Tensor], x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Outputs [M, P, out] and what the backward pass needs (pre- and post-activations)."""
        n = len(self.spec.layers)
        saved, h = [], x
        for i, s in enumerate(self.scales):
            wt = params[2 * i].transpose(1, 2) * s  # [M, in, out]
            b = (params[2 * i + 1] * s).unsqueeze(1)
            if h.dim() == 2:  # the shared input: [P, d] @ [M, d, out] -> [M, P, out]
                u = torch.matmul(h, wt).add_(b)
            else:
                u = torch.baddbmm(b, h, wt)
            if i == n - 1:
                return u, saved
            a = self.f(u)
            saved.append((u, a))
            h = a

    def backward(self, params: list[Tensor], x: Tensor, saved: list[tuple[Tensor, Tensor]], grad_out: Tensor) -> list[Tensor]:
        """Gradients of every parameter given d loss / d output [M, P, out]."""
        n = len(self.spec.layers)
        grads: list[Tensor] = [None] * (2 * n)  # type: ignore[list-item]
        g = grad_out  # d loss / d u of layer i
        for i, s in reversed(list(enumerate(self.scales))):
            inp = x if i == 0 else saved[i - 1][1]
            if inp.dim() == 2:  # sum_p g[m, p, o] x[p, k]
                gw = torch.matmul(inp.t(), g).transpose(1, 2)
            else:
                gw = torch.bmm(g.transpose(1, 2), inp)
            grads[2 * i] = gw.mul_(s) if s != 1 else gw
            grads[2 * i + 1] = g.sum(1).mul_(s)
            if i > 0:
                u, a = saved[i - 1]
                w = params[2 * i] * s
                ga = g * w if g.shape[2] == 1 else torch.bmm(g, w)  # one output: an outer product
                g = self.df(u, a, ga)
        return grads


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
    net = MLPPopulation(spec, acts.pop())
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
    scale = 2.0 / (t.shape[1] * t.shape[2])  # d mean-squared-error / d output

    def record(step: int, mse: Tensor) -> None:
        c = checkpoints.index(step)
        keep = alive.cpu().numpy()
        for k, p in enumerate(params):
            ck_params[k][keep, c] = p[alive].cpu().numpy()
        ck_metrics["mse"][keep, c] = mse[alive].cpu().numpy()
        ck_metrics["psnr"][keep, c] = psnr(mse[alive], peak).cpu().numpy()

    for step in range(epochs + 1):
        out, saved = net.forward(params, x)
        err = out.sub_(t)
        mse = err.square().mean((1, 2))
        bad = ~mse.isfinite() & alive  # NaN/inf weights give a NaN/inf error too
        if bool(bad.any()):  # stop these models; NaN * 0 is NaN, so mask them out of this step
            diverged_epoch[bad.cpu().numpy()] = step
            alive.logical_and_(~bad)
            keep = alive.view(-1, 1, 1)
            err = torch.where(keep, err, 0.0)
            saved = [(torch.where(keep, z, 0.0), torch.where(keep, a, 0.0)) for z, a in saved]
            for p in params:
                p[bad] = 0.0
        if step in checkpoints:
            record(step, mse)  # the weights after ``step`` updates and their error
        if step == epochs:
            break
        grad_out = err.mul_((scale * alive).view(-1, 1, 1).to(err.dtype))
        opt.step(net.backward(params, x, saved, grad_out), alive)
        if progress is not None and (step + 1) % max(1, epochs // 100) == 0:
            progress((step + 1) / epochs)

    status = np.where(diverged_epoch >= 0, STATUS_DIVERGED, STATUS_DONE).astype(np.uint8)
    return PopulationResult(ck_params, ck_metrics, status, diverged_epoch)
