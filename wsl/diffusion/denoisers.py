"""Denoisers: ``(x_t [B, D], logsnr [B], conditions [B, K] | None, drop [B] | None) -> [B, D]``.

- ``EquivariantDenoiser``: flat weights -> weight features -> an equivariant backbone of the core
  (``wsl.nn.build_backbone``: NP, HNP, DWSNet, NG-GNN, NG-T) -> one channel -> flat weights. The
  noise level and the conditions enter as invariant inputs (constant channels, and for stacked
  layers a per-channel scale and shift after each layer), so permuting the hidden neurons of
  ``x_t`` permutes the prediction the same way: the generator cannot prefer one of the equivalent
  orderings of a network, it must model the network itself.
- ``CanonicalDenoiser``: the flat MLP made equivariant by canonicalization (Kaba et al. 2023):
  each noisy network is put in a canonical neuron order (``wsl.weights.align.canonical_permutations``,
  a function of the network alone), denoised there by an ``MLPDenoiser``, and the prediction put back
  in the network's own order. Equivariant exactly, as the backbones are, at the cost and capacity of
  the flat MLP.
- ``MLPDenoiser``: a residual MLP on flat vectors, for latent codes (p-diff) or flat weights
  (HyperDiffusion); no symmetry.

Both share ``NoiseEmbedding``: the log-SNR in sinusoidal features and the normalized conditions
in one vector; ``drop`` marks the examples whose condition is replaced by a learned null
(classifier-free guidance trains both with one network).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn import build_backbone
from wsl.nn.base import Elementwise
from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.align import canonical_permutations
from wsl.weights.symmetry import invert_permutations, permute
from zoo.errors import InputError


class NoiseEmbedding(nn.Module):
    """logsnr [B] (and conditions [B, K] with a drop mask) -> [B, dim]."""

    def __init__(self, dim: int, num_conditions: int = 0, frequencies: int = 16):
        super().__init__()
        self.num_conditions = int(num_conditions)
        # logsnr spans about [-15, 15]: periods from ~1 to ~200 resolve it at every scale
        self.register_buffer("freqs", torch.exp(torch.linspace(math.log(1 / 32), math.log(4.0), frequencies)),
                             persistent=False)
        self.time = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        if self.num_conditions:
            self.condition = nn.Sequential(nn.Linear(self.num_conditions, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, logsnr: Tensor, conditions: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """``[B, dim]``; ``[1, dim]`` (to broadcast) when every example has the same noise level and
        there are no conditions, as in unconditional sampling: the per-block scale and shift of the
        MLP are then computed once per step instead of once per network."""
        if conditions is None and logsnr.numel() > 1 and bool((logsnr == logsnr[:1]).all()):
            logsnr = logsnr[:1]
        ang = logsnr.unsqueeze(1) * self.freqs
        emb = self.time(torch.cat([ang.sin(), ang.cos()], 1))
        if not self.num_conditions:
            return emb
        if conditions is None:  # unconditional: every example gets the null condition
            return emb + self.null
        if conditions.shape[1] != self.num_conditions:
            raise InputError(f"expected {self.num_conditions} conditions per network, found {conditions.shape[1]}")
        c = self.condition(conditions)
        if drop is not None:
            c = torch.where(drop.unsqueeze(1), self.null.expand_as(c), c)
        return emb + c


class EquivariantDenoiser(nn.Module):
    """An equivariant weight -> weight backbone, told the noise level and the conditions."""

    def __init__(self, spec: WeightSpaceSpec, backbone: str = "hnp", channels: int = 32, layers: int = 4,
                 emb_dim: int = 64, emb_channels: int = 8, num_conditions: int = 0, **backbone_kwargs):
        super().__init__()
        self.spec = spec
        self.embed = NoiseEmbedding(emb_dim, num_conditions)
        self.to_channels = nn.Linear(emb_dim, emb_channels)
        self.backbone = build_backbone(backbone, spec, in_channels=1 + emb_channels, out_channels=1,
                                       channels=channels, layers=layers, **backbone_kwargs)
        # a stack of layers (NFN, DWS) is also modulated after each hidden layer (after its ReLU:
        # where the next layer begins); a graph backbone (NG-GNN, NG-T) sees the embedding through
        # its input channels
        modules = list(self.backbone) if isinstance(self.backbone, nn.Sequential) else []
        self._film_after = [k for k in range(len(modules) - 1) if not isinstance(modules[k + 1], Elementwise)]
        self.film = nn.ModuleList(nn.Linear(emb_dim, 2 * channels) for _ in self._film_after)
        for f in self.film:  # start as the plain backbone
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)

    def forward(self, x: Tensor, logsnr: Tensor, conditions: Tensor | None = None,
                drop: Tensor | None = None) -> Tensor:
        emb = self.embed(logsnr, conditions, drop).expand(x.shape[0], -1)
        feats = WeightBatch.from_flat(self.spec, x).features()
        const = self.to_channels(emb)  # [B, E]: the same value at every weight and neuron
        feats = WeightFeatures(
            self.spec,
            [torch.cat([w, const.view(*const.shape, *[1] * (w.dim() - 2)).expand(-1, -1, *w.shape[2:])], 1)
             for w in feats.weights],
            [torch.cat([b, const.unsqueeze(2).expand(-1, -1, b.shape[2])], 1) for b in feats.biases])
        if not self.film:
            return self.backbone(feats).to_weights().flatten()
        films = dict(zip(self._film_after, self.film))
        for k, m in enumerate(self.backbone):
            feats = m(feats)
            if k in films:
                feats = self._modulate(feats, films[k], emb)
        return feats.to_weights().flatten()

    @staticmethod
    def _modulate(feats: WeightFeatures, film: nn.Linear, emb: Tensor) -> WeightFeatures:
        scale, shift = film(emb).chunk(2, 1)  # [B, C] each: per channel, so every neuron alike

        def mod(t: Tensor) -> Tensor:
            shape = (t.shape[0], t.shape[1]) + (1,) * (t.dim() - 2)
            return t * (1 + scale.view(shape)) + shift.view(shape)

        return feats.map(mod)


class MLPDenoiser(nn.Module):
    """Residual MLP blocks with the embedding as a per-block scale and shift (flat latents or weights)."""

    def __init__(self, dim: int, hidden: int = 512, layers: int = 4, emb_dim: int = 128, num_conditions: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        self.embed = NoiseEmbedding(emb_dim, num_conditions)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(hidden, elementwise_affine=False),
                           "film": nn.Linear(emb_dim, 2 * hidden),
                           "mlp": nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout),
                                                nn.Linear(hidden, hidden))})
            for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: Tensor, logsnr: Tensor, conditions: Tensor | None = None,
                drop: Tensor | None = None) -> Tensor:
        emb = self.embed(logsnr, conditions, drop)
        h = self.inp(x)
        for blk in self.blocks:
            scale, shift = blk["film"](emb).chunk(2, 1)
            h = h + blk["mlp"](blk["norm"](h) * (1 + scale) + shift)
        return self.out(h)


class CanonicalDenoiser(nn.Module):
    """``MLPDenoiser`` in a canonical neuron order, so that permuting the hidden neurons of ``x_t``
    permutes the prediction the same way.

    The order is the assignment of every hidden neuron to one of the ``reference`` network's
    (``canonical_permutations``: one pass from input to output, each layer matched by the weights
    already fixed). The reference is a training network, normalized, given with ``set_reference``
    before the first step and saved with the denoiser; only its values matter, not its order.
    """

    def __init__(self, spec: WeightSpaceSpec, num_conditions: int = 0, **mlp_kwargs):
        super().__init__()
        self.spec = spec
        self.mlp = MLPDenoiser(spec.num_params, num_conditions=num_conditions, **mlp_kwargs)
        self.register_buffer("reference", torch.zeros(1, spec.num_params))
        self.register_buffer("has_reference", torch.tensor(False))

    def set_reference(self, flat: Tensor) -> None:
        """The network (normalized flat weights ``[1, D]`` or ``[D]``) whose neurons define the order."""
        flat = flat.detach().reshape(1, -1)
        if flat.shape[1] != self.spec.num_params:
            raise InputError(f"reference: expected {self.spec.num_params} weights, found {flat.shape[1]}")
        self.reference.copy_(flat)
        self.has_reference.fill_(True)

    def canonical_order(self, x: Tensor) -> dict[str, Tensor]:
        """Per network of ``x [B, D]``: the permutations that put it in canonical order."""
        if not bool(self.has_reference):
            raise RuntimeError("CanonicalDenoiser has no reference network: call set_reference first (WeightDiffusion "
                               "takes the data module's first training network when fitting starts)")
        with torch.no_grad():
            return canonical_permutations(WeightBatch.from_flat(self.spec, self.reference),
                                          WeightBatch.from_flat(self.spec, x.detach()))

    def forward(self, x: Tensor, logsnr: Tensor, conditions: Tensor | None = None,
                drop: Tensor | None = None) -> Tensor:
        perms = self.canonical_order(x)
        z = permute(WeightBatch.from_flat(self.spec, x), perms).flatten()
        out = self.mlp(z, logsnr, conditions, drop)
        return permute(WeightBatch.from_flat(self.spec, out), invert_permutations(perms)).flatten()
