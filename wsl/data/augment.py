"""Augmentations for training models on weights: each maps a ``WeightBatch`` to a new one.

Symmetry augmentations (``RandomPermutation``, ``RandomScaling``) produce other weights of the
*same* functions, so any target that depends on the function (accuracy, generalization gap) stays
exact; they teach a model the invariances it cannot otherwise see in a finite zoo. ``GaussianNoise``
and ``WeightDropout`` perturb the function slightly. ``AlignedMixUp`` interpolates two networks after
aligning their neurons (interpolating unaligned networks mixes unrelated neurons) and returns the
mixing weights so that the caller mixes the targets alike. ``InputWarp`` changes the function on
purpose, in a way that keeps an INR's label: it rotates, scales and shifts the input coordinates
(the image drawn by an INR moves; the digit stays a digit), as DWSNets trains its INR classifiers.

Every augmentation owns a CPU ``torch.Generator`` seeded in ``__init__``: the same seed and the same
sequence of calls give the same outputs, on any device. All calls take ``(wb, activation=None)``:
``activation`` names the batch's activation(s) (one string, or a list with one per network for zoos
whose activation varies per model); only ``RandomScaling`` uses it, the others accept and ignore it
so that a ``Compose`` can pass it through.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from wsl.weights.align import match_permutations
from wsl.weights.symmetry import permute, random_permutations, random_scales, scale
from wsl.weights import WeightBatch
from zoo.errors import InputError


class _Augmentation:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def _randn(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype).to(like.device)

    def _rand(self, like: Tensor) -> Tensor:
        return torch.rand(like.shape, generator=self.generator, dtype=like.dtype).to(like.device)


class RandomPermutation(_Augmentation):
    """Permute every hidden group of every network at random (the function is unchanged)."""

    def __call__(self, wb: WeightBatch, activation=None) -> WeightBatch:
        perms = random_permutations(wb.spec, len(wb), generator=self.generator, device=wb.weights[0].device)
        return permute(wb, perms)


class RandomScaling(_Augmentation):
    """Rescale hidden neurons by the symmetry of each network's activation (the function is unchanged):
    positive factors ``exp(U(log_range))`` for relu-like activations, random sign flips for odd ones
    (tanh, sine), nothing for sigmoid and gelu.

    The activation comes from the call's ``activation`` if given, else from the constructor's, else
    from ``wb.spec.activation``; a zoo with per-model activations must pass a list per batch.
    """

    def __init__(self, log_range: tuple[float, float] = (-1.0, 1.0), activation: str | list[str] | None = None,
                 seed: int = 0):
        super().__init__(seed)
        self.log_range = tuple(log_range)
        self.activation = activation

    def __call__(self, wb: WeightBatch, activation: str | list[str] | None = None) -> WeightBatch:
        act = activation if activation is not None else self.activation
        scales = random_scales(wb.spec, len(wb), act, generator=self.generator, log_range=self.log_range,
                               device=wb.weights[0].device, dtype=wb.weights[0].dtype)
        return scale(wb, scales)


class GaussianNoise(_Augmentation):
    """Add ``N(0, (std * s)^2)`` elementwise, where ``s`` is the standard deviation of that network's
    tensor (each layer's weights and biases separately), so that noise is relative to each layer's
    scale. Tensors whose entries are all equal (e.g. zero biases) get no noise."""

    def __init__(self, std: float = 0.05, seed: int = 0):
        super().__init__(seed)
        self.std = std

    def _noisy(self, t: Tensor) -> Tensor:
        s = t.flatten(1).std(dim=1, correction=0).view(-1, *([1] * (t.dim() - 1)))
        return t + self._randn(t) * (self.std * s)

    def __call__(self, wb: WeightBatch, activation=None) -> WeightBatch:
        return wb.map(self._noisy)


class InputWarp(_Augmentation):
    """A random affine warp of the input coordinates, written into the first layer: the network
    ``f`` becomes ``x -> f(A x + t)`` with ``W1 <- W1 A`` and ``b1 <- b1 + W1 t``, where ``A`` is a
    rotation by U(-rotate, rotate) degrees times a factor U(1 - scale, 1 + scale) and ``t`` has
    U(-translate, translate) entries. Rotation needs 2-D inputs (image INRs); 1-D inputs are only
    scaled and shifted. Navon et al. train on INRs with the same warps (rotation 45 degrees, shifts
    of 0.25, first-layer scaling of 0.2)."""

    def __init__(self, rotate: float = 45.0, scale: float = 0.2, translate: float = 0.25, seed: int = 0):
        super().__init__(seed)
        if rotate < 0 or not 0 <= scale < 1 or translate < 0:
            raise InputError(f"InputWarp: expected rotate >= 0 (degrees), 0 <= scale < 1 and translate >= 0, "
                             f"found rotate={rotate}, scale={scale}, translate={translate}")
        self.rotate, self.scale, self.translate = float(rotate), float(scale), float(translate)

    def draw(self, n: int, dims: int) -> tuple[Tensor, Tensor]:
        """``n`` random warps of ``dims``-D inputs: matrices A [n, dims, dims] and shifts t [n, dims]."""
        u = torch.rand(n, 2, generator=self.generator, dtype=torch.float64) * 2 - 1
        factor = 1 + self.scale * u[:, 0]
        if dims == 2:
            angle = torch.deg2rad(self.rotate * u[:, 1])
            c, s = torch.cos(angle), torch.sin(angle)
            A = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1) * factor.view(-1, 1, 1)
        else:
            A = factor.view(-1, 1, 1)
        t = self.translate * (torch.rand(n, dims, generator=self.generator, dtype=torch.float64) * 2 - 1)
        return A, t

    @staticmethod
    def apply(wb: WeightBatch, A: Tensor, t: Tensor) -> WeightBatch:
        """Network i becomes ``x -> f_i(A[i] x + t[i])``."""
        first = wb.spec.layers[0]
        if first.kind != "linear" or first.in_features > 2 or wb.biases[0] is None:
            raise InputError(f"InputWarp warps the coordinates of INRs (a first linear layer with a bias on 1-D "
                             f"or 2-D inputs); found a {first.kind} layer on {first.in_features} inputs")
        w1, b1 = wb.weights[0], wb.biases[0]
        A, t = A.to(w1.device, w1.dtype), t.to(w1.device, w1.dtype)
        biases = [b1 + (w1 @ t.unsqueeze(-1)).squeeze(-1), *wb.biases[1:]]
        return WeightBatch(wb.spec, [w1 @ A, *wb.weights[1:]], biases)

    def __call__(self, wb: WeightBatch, activation=None) -> WeightBatch:
        return self.apply(wb, *self.draw(len(wb), wb.spec.layers[0].in_features))


class WeightDropout(_Augmentation):
    """Zero each weight entry independently with probability ``p``; biases are kept.

    No ``1 / (1 - p)`` rescaling of the survivors: the result is a pruned version of the network, a
    plausible zoo member, whereas rescaling would inflate every weight by a constant factor that
    carries no information about the network.
    """

    def __init__(self, p: float = 0.05, seed: int = 0):
        super().__init__(seed)
        if not 0.0 <= p < 1.0:
            raise InputError(f"WeightDropout: p must be in [0, 1), found {p}")
        self.p = p

    def __call__(self, wb: WeightBatch, activation=None) -> WeightBatch:
        weights = [w * (self._rand(w) >= self.p).to(w.dtype) for w in wb.weights]
        return WeightBatch(wb.spec, weights, list(wb.biases))


class AlignedMixUp(_Augmentation):
    """MixUp in weight space after weight matching.

    Networks are arranged in a random cycle and each is paired with its successor (so no network is
    paired with itself when the batch has two or more). The partner is aligned to the network with
    ``wsl.weights.align`` and the result is ``lam * w + (1 - lam) * aligned partner`` with
    ``lam ~ Beta(alpha, alpha)`` per network. Returns ``(mixed, lam [B], partner [B])``: mix the
    targets as ``lam * y + (1 - lam) * y[partner]``.
    """

    def __init__(self, alpha: float = 0.2, max_iter: int = 50, seed: int = 0):
        super().__init__(seed)
        if alpha <= 0:
            raise InputError(f"AlignedMixUp: alpha must be positive, found {alpha}")
        self.alpha = alpha
        self.max_iter = max_iter

    def __call__(self, wb: WeightBatch, activation=None) -> tuple[WeightBatch, Tensor, Tensor]:
        B, device, dtype = len(wb), wb.weights[0].device, wb.weights[0].dtype
        order = torch.randperm(B, generator=self.generator)
        partner = torch.empty(B, dtype=torch.long)
        partner[order] = order.roll(-1)
        # torch samples Beta without a generator; numpy's, seeded from ours, keeps runs reproducible
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        lam = torch.from_numpy(rng.beta(self.alpha, self.alpha, size=B)).to(device=device, dtype=dtype)
        partners = wb[partner.to(device)]
        per_net = [match_permutations(wb[i], partners[i], max_iter=self.max_iter) for i in range(B)]
        perms = {g: torch.cat([p[g] for p in per_net]) for g in wb.spec.permutable}
        aligned = permute(partners, perms)
        mixed = WeightBatch(
            wb.spec,
            [self._mix(a, b, lam) for a, b in zip(wb.weights, aligned.weights)],
            [None if a is None else self._mix(a, b, lam) for a, b in zip(wb.biases, aligned.biases)],
        )
        return mixed, lam, partner.to(device)

    @staticmethod
    def _mix(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
        lam = lam.view(-1, *([1] * (a.dim() - 1)))
        return lam * a + (1 - lam) * b


class Compose:
    """Apply augmentations in order (``AlignedMixUp`` is refused: it also returns targets' weights,
    so call it separately)."""

    def __init__(self, transforms: list):
        for t in transforms:
            if isinstance(t, AlignedMixUp):
                raise InputError("Compose: AlignedMixUp returns (weights, lam, partner); apply it separately")
        self.transforms = list(transforms)

    def __call__(self, wb: WeightBatch, activation: str | list[str] | None = None) -> WeightBatch:
        for t in self.transforms:
            wb = t(wb, activation=activation)
        return wb
