"""A weight autoencoder over per-neuron tokens (SANE / Hyper-Representations style), the first
stage of latent diffusion (p-diff).

Each neuron of each layer is one token: its incoming weights (all kernel taps) and its bias,
zero-padded to the widest neuron of the weight space. A learned embedding per token position (a
neuron of a layer) tells the transformer which neuron it reads; the encoder maps every token to a
small code, the decoder maps the codes back to the tokens. Position embeddings make the model
order-aware, as in SANE: it is not permutation equivariant, which is what the equivariant weight
diffusion (``wsl.diffusion.model.WeightDiffusion``) is measured against.

Training adds noise to the input weights and to the codes (p-diff: 0.001 and 0.1), so that the
decoder maps a neighbourhood of every code to good weights, which latent samples need.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights import WeightBatch


class NeuronTokens:
    """Flat weights ``[B, D]`` <-> neuron tokens ``[B, T, width]`` (T: every neuron of every layer)."""

    def __init__(self, spec: WeightSpaceSpec):
        self.spec = spec
        self.sizes = [layer.weight.numel // layer.out_features + int(layer.bias) for layer in spec.layers]
        self.counts = [layer.out_features for layer in spec.layers]
        self.width = max(self.sizes)
        self.num_tokens = sum(self.counts)

    def tokens(self, flat: Tensor) -> Tensor:
        wb = WeightBatch.from_flat(self.spec, flat)
        parts = []
        for layer, w, b, size in zip(self.spec.layers, wb.weights, wb.biases, self.sizes):
            t = w.reshape(len(wb), layer.out_features, -1)
            if b is not None:
                t = torch.cat([t, b.unsqueeze(2)], 2)
            parts.append(F.pad(t, (0, self.width - size)))
        return torch.cat(parts, 1)

    def flat(self, tokens: Tensor) -> Tensor:
        params = []
        for layer, part, size in zip(self.spec.layers, tokens.split(self.counts, 1), self.sizes):
            t = part[..., :size]
            n_in = size - int(layer.bias)
            params.append(t[..., :n_in].reshape(-1, *layer.weight.shape))
            if layer.bias:
                params.append(t[..., n_in])
        return WeightBatch.from_params(self.spec, params).flatten()


class WeightAutoencoder(nn.Module):
    """Flat normalized weights -> codes ``[B, T, latent_dim]`` -> flat weights."""

    def __init__(self, spec: WeightSpaceSpec, latent_dim: int = 8, d_model: int = 64, layers: int = 2, heads: int = 4,
                 input_noise: float = 0.001, latent_noise: float = 0.1):
        super().__init__()
        self.tok = NeuronTokens(spec)
        self.latent_dim, self.input_noise, self.latent_noise = int(latent_dim), float(input_noise), float(latent_noise)
        T = self.tok.num_tokens

        def transformer() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True,
                                               norm_first=True)
            return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        self.enc_in = nn.Linear(self.tok.width, d_model)
        self.enc_pos = nn.Parameter(torch.randn(T, d_model) / math.sqrt(d_model))
        self.encoder = transformer()
        self.enc_out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, latent_dim))
        self.dec_in = nn.Linear(latent_dim, d_model)
        self.dec_pos = nn.Parameter(torch.randn(T, d_model) / math.sqrt(d_model))
        self.decoder = transformer()
        self.dec_out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, self.tok.width))

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.tok.num_tokens, self.latent_dim

    def encode(self, flat: Tensor) -> Tensor:
        return self.enc_out(self.encoder(self.enc_in(self.tok.tokens(flat)) + self.enc_pos))

    def decode(self, codes: Tensor) -> Tensor:
        return self.tok.flat(self.dec_out(self.decoder(self.dec_in(codes) + self.dec_pos)))

    def loss(self, flat: Tensor) -> Tensor:
        """Per-network reconstruction error ``[B]`` with p-diff's input and code noise (in training)."""
        x = flat + self.input_noise * torch.randn_like(flat) if self.training else flat
        z = self.encode(x)
        if self.training:
            z = z + self.latent_noise * torch.randn_like(z)
        return F.mse_loss(self.decode(z), flat, reduction="none").mean(1)
