"""Gaussian diffusion in continuous time: the training loss and the sampler every generator shares.

The forward process is ``x_t = alpha_t x_0 + sigma_t eps`` with ``alpha_t^2 + sigma_t^2 = 1`` and
the cosine schedule of Nichol & Dhariwal (2021) written as a log signal-to-noise ratio,
``logsnr(t) = -2 log tan(pi t / 2)`` for ``t`` in [0, 1], clipped to ``[logsnr_min, logsnr_max]`` so
that neither end is singular. Continuous time means one trained model samples with any number of
steps.

The denoiser predicts ``v = alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022), ``eps`` or ``x0``.
With ``v`` the target has unit scale at every noise level, which matters for weights, where the
clean signal and the noise have the same scale; but at low noise ``v`` is mostly the noise, which a
denoiser narrower than its input (an MLP with a bottleneck over thousands of weights) cannot pass
through, so its loss stalls. ``x0`` asks only for the clean data (the noise is then recovered
exactly from ``x_t``), trained with the v objective's weight capped at the low-noise end. Sampling is DDIM (Song et al. 2021): deterministic for
``eta = 0`` given the starting noise, ancestral-like for ``eta = 1``. Classifier-free guidance (Ho &
Salimans 2022) mixes the conditional and the unconditional prediction,
``pred = uncond + guidance * (cond - uncond)``; ``guidance = 1`` is the plain conditional model.

Everything works on flat tensors ``[B, D]``; generators flatten weights or latent codes to that.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from zoo.errors import InputError

PREDICTIONS = ("v", "eps", "x0")
# x0 prediction's loss weight, min(1 + snr, MAX_X0_WEIGHT): the v objective (weight 1 + snr) with
# the low-noise end capped (min-SNR weighting, Hang et al. 2023)
MAX_X0_WEIGHT = 6.0

# denoiser(x_t [B, D], logsnr [B], conditions [B, K] or None, drop [B] bool or None) -> [B, D]
Denoiser = Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]


class Diffusion:
    """The noise schedule, the denoising loss and the DDIM sampler."""

    def __init__(self, prediction: str = "v", logsnr_min: float = -15.0, logsnr_max: float = 15.0):
        if prediction not in PREDICTIONS:
            raise InputError(f"prediction must be one of {PREDICTIONS}, found {prediction!r}")
        if not logsnr_min < logsnr_max:
            raise InputError(f"logsnr_min ({logsnr_min}) must be below logsnr_max ({logsnr_max})")
        self.prediction = prediction
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        # t range whose cosine logsnr stays inside the clip: logsnr(t) = -2 log tan(pi t / 2)
        self.t_min = 2 / math.pi * math.atan(math.exp(-0.5 * self.logsnr_max))
        self.t_max = 2 / math.pi * math.atan(math.exp(-0.5 * self.logsnr_min))

    def logsnr(self, t: Tensor) -> Tensor:
        """The log signal-to-noise ratio at times ``t`` in [0, 1] (0 = clean, 1 = pure noise)."""
        t = self.t_min + t * (self.t_max - self.t_min)
        return -2 * torch.log(torch.tan(math.pi * t / 2))

    @staticmethod
    def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()

    def loss(self, denoiser: Denoiser, x0: Tensor, conditions: Tensor | None = None, drop: Tensor | None = None,
             t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """Per-example mean squared error of the denoiser's prediction ``[B]`` at random (or given) times."""
        B = x0.shape[0]
        t = torch.rand(B, device=x0.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        logsnr = self.logsnr(t)
        a, s = (v.unsqueeze(1) for v in self.alpha_sigma(logsnr))
        xt = a * x0 + s * noise
        out = denoiser(xt, logsnr, conditions, drop)
        if self.prediction == "x0":
            weight = (1 + logsnr.exp()).clamp(max=MAX_X0_WEIGHT)
            return weight * F.mse_loss(out, x0, reduction="none").mean(1)
        target = a * noise - s * x0 if self.prediction == "v" else noise
        return F.mse_loss(out, target, reduction="none").mean(1)

    def _predict(self, denoiser: Denoiser, xt: Tensor, logsnr: Tensor, conditions: Tensor | None,
                 guidance: float) -> tuple[Tensor, Tensor]:
        """(x0, eps) estimates at ``xt``; with conditions and ``guidance != 1``, classifier-free guided."""
        ls = logsnr.expand(xt.shape[0])
        if conditions is None or guidance == 1.0:
            out = denoiser(xt, ls, conditions, None)
        else:  # one batched call: the first half conditional, the second with the condition dropped
            B = xt.shape[0]
            drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(xt.device)
            both = denoiser(torch.cat([xt, xt]), torch.cat([ls, ls]), torch.cat([conditions, conditions]), drop)
            cond, uncond = both[:B], both[B:]
            out = uncond + guidance * (cond - uncond)
        a, s = self.alpha_sigma(logsnr)
        if self.prediction == "v":
            return a * xt - s * out, s * xt + a * out
        if self.prediction == "x0":
            return out, (xt - a * out) / s
        return (xt - s * out) / a, out

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, shape: tuple[int, int], conditions: Tensor | None = None,
               guidance: float = 1.0, steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", clip: float | None = None, start: Tensor | None = None) -> Tensor:
        """``[B, D]`` samples by DDIM from pure noise in ``steps`` steps. ``clip`` bounds the x0
        estimate at every step (the data's range, if it has one); ``start``: the starting noise
        ``[B, D]`` (default: drawn from ``generator``)."""
        if steps < 1:
            raise InputError(f"steps must be >= 1, found {steps}")
        if start is not None and tuple(start.shape) != tuple(shape):
            raise InputError(f"start: expected noise of shape {list(shape)}, found {list(start.shape)}")
        x = torch.randn(shape, generator=generator, device="cpu").to(device) if start is None else start.to(device)
        times = torch.linspace(1.0, 0.0, steps + 1, device=device)
        for i in range(steps):
            ls_t, ls_s = self.logsnr(times[i]).reshape(1), self.logsnr(times[i + 1]).reshape(1)
            x0, eps = self._predict(denoiser, x, ls_t, conditions, guidance)
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            if i == steps - 1:
                return x0
            a_s, s_s = self.alpha_sigma(ls_s)
            a_t, s_t = self.alpha_sigma(ls_t)
            # DDIM: the noise of the next step is part recomputed eps, part fresh (eta)
            c = eta * (s_s / s_t) * (1 - (a_t / a_s) ** 2).clamp_min(0).sqrt()
            fresh = torch.randn(shape, generator=generator, device="cpu").to(device) if eta > 0 else 0.0
            x = a_s * x0 + (s_s ** 2 - c ** 2).clamp_min(0).sqrt() * eps + c * fresh
        return x
