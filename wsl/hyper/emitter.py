"""The weight emitter: a conditioning vector in, one full weight set of a zoo weight space out.

A trunk MLP embeds the condition; output heads turn the embedding into the flat parameter vector
(``spec.params`` order, as ``WeightBatch.from_flat`` reads it), either

- per layer (Ha et al. 2016): one linear head per parameter tensor, or
- per chunk (hypnettorch's chunked hypernetworks): the flat vector cut into chunks of
  ``chunk_size``, each with a learned chunk embedding; one shared head maps (condition embedding,
  chunk embedding) to the chunk's values, so the emitter can be far smaller than one network.

Outputs are scaled per element by the standard deviation of the zoo's initialisation of that
parameter (``zoo.architectures.init_bounds``), so that a fresh emitter emits networks of the
scale training starts from. With the magnitude-invariant parametrization (``mip=True``, Ortiz et al.
2024) the emitted weights are a residual on learned base weights θ₀ (initialised as a zoo network
is), with the residual's last layer starting at zero: every condition starts at θ₀.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.architectures import init_bounds, population_init
from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError

HEADS = ("layer", "chunk")


def _mlp(dims: list[int], last: bool = False) -> nn.Sequential:
    """Linear layers with GELU between them; each hidden layer ends in a LayerNorm, so the layer
    after it sees unit-variance features (with ``last``, the final layer too: the trunk)."""
    mods: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(dims, dims[1:])):
        mods.append(nn.Linear(a, b))
        if k < len(dims) - 2 or last:
            mods += [nn.GELU(), nn.LayerNorm(b, elementwise_affine=False)]
    return nn.Sequential(*mods)


class WeightEmitter(nn.Module):
    """Condition ``[B, cond_dim]`` -> flat weights ``[B, spec.num_params]``.

    Args:
        spec: the weight space emitted.
        cond_dim: width of the conditioning vector (``HparamEncoder.out_dim``, an embedding's ...).
        hidden, depth: the trunk MLP's width and number of layers.
        heads: ``layer`` (one head per parameter tensor) or ``chunk`` (a shared head over chunks).
        chunk_size, chunk_dim: values per chunk and width of the learned chunk embeddings.
        mip: emit a residual on learned base weights (magnitude-invariant parametrization).
        base_seed: seeds the base weights θ₀ (the zoo initialisation of that seed).
    """

    def __init__(self, spec: WeightSpaceSpec, cond_dim: int, hidden: int = 128, depth: int = 2,
                 heads: str = "chunk", chunk_size: int = 256, chunk_dim: int = 32, mip: bool = False,
                 base_seed: int = 0):
        super().__init__()
        if heads not in HEADS:
            raise InputError(f"heads must be one of {list(HEADS)}, found {heads!r}")
        if cond_dim < 1 or hidden < 1 or depth < 1 or chunk_size < 1 or chunk_dim < 1:
            raise InputError(f"cond_dim, hidden, depth, chunk_size and chunk_dim must be >= 1, found "
                             f"{cond_dim}, {hidden}, {depth}, {chunk_size}, {chunk_dim}")
        self.spec, self.heads_kind, self.mip = spec, heads, bool(mip)
        self.num_params = spec.num_params
        self.trunk = _mlp([cond_dim] + [hidden] * depth, last=True)
        if heads == "layer":
            self.layer_heads = nn.ModuleList(nn.Linear(hidden, p.numel) for p in spec.params)
            last = list(self.layer_heads)
        else:
            self.chunk_size = int(chunk_size)
            self.num_chunks = math.ceil(self.num_params / self.chunk_size)
            self.chunk_embed = nn.Parameter(torch.randn(self.num_chunks, chunk_dim))
            self.chunk_head = _mlp([hidden + chunk_dim, hidden, self.chunk_size])
            last = [self.chunk_head[-1]]
        scale = torch.cat([torch.full((p.numel,), b / math.sqrt(3.0)) for p, b in zip(spec.params, init_bounds(spec))])
        self.register_buffer("scale", scale)
        if self.mip:
            base = torch.cat([t.flatten(1) for t in population_init(spec, [int(base_seed)], [1.0])], 1)[0]
            self.base = nn.Parameter(base)
            for lin in last:  # the residual starts at zero: every condition starts at θ₀
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        else:
            for lin in last:  # unit-variance outputs of unit-variance features, then the init scale
                nn.init.normal_(lin.weight, std=1.0 / math.sqrt(lin.in_features))
                nn.init.zeros_(lin.bias)

    def forward(self, cond: Tensor) -> Tensor:
        h = self.trunk(cond)
        if self.heads_kind == "layer":
            out = torch.cat([head(h) for head in self.layer_heads], 1)
        else:
            B = h.shape[0]
            z = torch.cat([h.unsqueeze(1).expand(B, self.num_chunks, h.shape[1]),
                           self.chunk_embed.unsqueeze(0).expand(B, -1, -1)], 2)
            out = self.chunk_head(z).reshape(B, -1)[:, :self.num_params]
        out = out * self.scale
        return self.base + out if self.mip else out
