"""What every encoder and backbone shares: the encoder contract, backbone + pool + head, the MLP.

- ``Encoder``: an ``nn.Module`` built from a weight space and an output size that maps a
  ``WeightBatch`` to ``[B, out_dim]``. ``raw_weights`` is a declared property: ``False`` means the
  encoder expects normalized weights (the predictor normalizes them), ``True`` that it runs the
  networks and needs them as they are (the probe encoder).
- ``PooledEncoder``: an equivariant backbone (weights -> weight-shaped features), an invariant pool
  and an MLP head. The backbone alone is a weight -> weight map, what a denoiser or an autoencoder
  reuses.
- ``Elementwise``: a pointwise map of every feature tensor (a nonlinearity keeps equivariance), so
  equivariant layers stack in ``nn.Sequential``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch, WeightFeatures
from zoo.errors import InputError


def mlp(d_in: int, hidden: int, d_out: int, layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` linear maps with ReLU (and dropout) between them."""
    if layers < 1:
        raise InputError(f"an MLP needs at least one layer, found layers={layers}")
    dims = [d_in] + [hidden] * (layers - 1) + [d_out]
    mods: list[nn.Module] = []
    for k in range(layers):
        mods.append(nn.Linear(dims[k], dims[k + 1]))
        if k < layers - 1:
            mods += [nn.ReLU(), nn.Dropout(dropout)] if dropout > 0 else [nn.ReLU()]
    return nn.Sequential(*mods)


class Encoder(nn.Module):
    """``WeightBatch -> [B, out_dim]`` for one weight space."""

    raw_weights: bool = False  # True: the encoder runs the networks, so it gets unnormalized weights
    # True: the encoder is invariant to positive rescalings of neurons, which the weight normalizer's
    # asinh would break: it gets the weights divided by their per-tensor scale only
    linear_normalization: bool = False

    def __init__(self, spec: WeightSpaceSpec, out_dim: int):
        super().__init__()
        self.spec, self.out_dim = spec, int(out_dim)

    @property
    def runs_networks(self) -> bool:
        """Whether the encoder evaluates the networks (so it needs their activation, and their
        weights as they are: ``raw_weights``, or beside the normalized ones as ``raw=``)."""
        return self.raw_weights or getattr(self, "probes", None) is not None

    def check_spec(self, wb) -> None:
        if wb.spec != self.spec:
            raise InputError(f"{type(self).__name__} was built for the weight space {self.spec.architecture!r} "
                             f"[{', '.join(self.spec.param_names)}], the batch is of {wb.spec.architecture!r} "
                             f"[{', '.join(wb.spec.param_names)}]")


class Elementwise(nn.Module):
    """Applies ``fn`` (a module or a function of a tensor) to every tensor of weight features."""

    def __init__(self, fn: nn.Module | Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        return feats.map(self.fn)


class FourierFeatures(nn.Module):
    """Each scalar feature x -> [sin(2 pi f_k x), cos(2 pi f_k x)] for k < ``features``, with fixed
    frequencies f_k ~ N(0, scale^2): C channels in, 2 * features * C out. Elementwise, so it commutes
    with every permutation; it gives the first equivariant layer a rich function of each weight
    instead of the weight alone (Zhou et al.'s INR classifiers and Kofinas et al.'s neural graphs
    encode weights so)."""

    def __init__(self, features: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        if features < 1 or scale <= 0:
            raise InputError(f"FourierFeatures: expected features >= 1 and scale > 0, found {features}, {scale}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * scale * torch.randn(features, generator=gen))

    def _encode(self, t: Tensor) -> Tensor:
        shape = (1, 1, -1) + (1,) * (t.dim() - 2)
        x = t.unsqueeze(2) * self.freqs.to(t.dtype).view(shape)  # [B, C, F, ...]
        return torch.cat([x.sin(), x.cos()], 2).flatten(1, 2)

    def forward(self, feats: WeightFeatures) -> WeightFeatures:
        return feats.map(self._encode)


def weight_encoding(fourier: int, scale: float) -> tuple[nn.Module, int]:
    """The encoders' encoding of each weight (``FourierFeatures``, or none for ``fourier=0``) and the
    channels it leaves."""
    return (FourierFeatures(fourier, scale), 2 * fourier) if fourier else (nn.Identity(), 1)


class Backbone(nn.Sequential):
    """``layers`` equivariant layers with ReLUs between them: weight features -> weight features.

    Without ``out_channels`` every layer maps to ``channels`` and is rectified (what an encoder pools);
    with it the last layer maps to ``out_channels`` and stays linear, so ``out_channels=1`` is an
    equivariant weight -> weight map (``backbone(wb.features()).to_weights()``).
    ``make_layer(c_in, c_out)`` builds one layer; with ``fused_relu`` it is called as
    ``make_layer(c_in, c_out, relu=...)`` and rectifies its own output (one pass less over it).
    """

    def __init__(self, make_layer: Callable[..., nn.Module], in_channels: int, channels: int, layers: int,
                 out_channels: int | None = None, fused_relu: bool = False):
        if layers < 1:
            raise InputError(f"a backbone needs at least one layer, found layers={layers}")
        mods: list[nn.Module] = []
        for k in range(layers):
            linear_out = k == layers - 1 and out_channels is not None
            c_in, c_out = in_channels if k == 0 else channels, out_channels if linear_out else channels
            if fused_relu:
                mods.append(make_layer(c_in, c_out, relu=not linear_out))
                continue
            mods.append(make_layer(c_in, c_out))
            if not linear_out:
                mods.append(Elementwise(nn.ReLU()))
        super().__init__(*mods)
        self.out_channels = channels if out_channels is None else out_channels


class PooledEncoder(Encoder):
    """lift to one channel (optionally encoded by ``encode``, e.g. ``FourierFeatures``) -> backbone ->
    invariant pool -> MLP head."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, backbone: nn.Module, pool: nn.Module, head: nn.Module,
                 encode: nn.Module | None = None):
        super().__init__(spec, out_dim)
        self.encode = encode if encode is not None else nn.Identity()
        self.backbone, self.pool, self.head = backbone, pool, head

    def forward(self, wb: WeightBatch) -> Tensor:
        self.check_spec(wb)
        return self.head(self.pool(self.backbone(self.encode(wb.features()))))
