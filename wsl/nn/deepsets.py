"""A permutation-invariant DeepSets baseline: every layer's neurons as a set.

Each output neuron of a layer is described by its row (incoming weights with kernel taps, and its
bias). If the layer's inputs are fixed (the network's inputs) the row is an ordered vector; if they
are hidden neurons the row is itself a set, summarised by an embedding of each entry followed by
mean and max pooling over the inputs. A per-layer MLP embeds each neuron, a mean over the layer's
neurons removes their order (neurons of a fixed group, the network's outputs, are kept in order),
and an MLP head reads the concatenated layers. Each layer is summarised on its own, so the baseline
ignores which neuron of one layer feeds which of the next: that is what the equivariant encoders add.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.nn.base import Encoder, mlp
from wsl.weights import WeightBatch


class DeepSetsEncoder(Encoder):
    """Per-layer neuron embeddings, pooled over permutable neurons, into an MLP head."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 128):
        super().__init__(spec, out_dim)
        self.permutable = set(spec.permutable)
        self.entry = nn.ModuleList()  # per layer: embedding of one row entry (its kernel taps), or Identity
        self.neuron = nn.ModuleList()  # per layer: embedding of one neuron from its summarised row and bias
        head_in = 0
        for layer in spec.layers:
            taps = math.prod(layer.kernel)
            if layer.in_group in self.permutable:
                self.entry.append(mlp(taps, hidden, hidden, 2))
                row_dim = 2 * hidden  # mean and max over the inputs
            else:
                self.entry.append(nn.Identity())
                row_dim = layer.in_features * taps
            self.neuron.append(mlp(row_dim + 1, hidden, hidden, 2))
            head_in += hidden if layer.out_group in self.permutable else hidden * layer.out_features
        self.head = mlp(head_in, hidden, out_dim, 2)

    def forward(self, wb: WeightBatch) -> Tensor:
        feats = []
        for layer, entry, neuron, w, b in zip(self.spec.layers, self.entry, self.neuron, wb.weights, wb.biases):
            B, n_out, n_in = w.shape[:3]
            if layer.in_group in self.permutable:
                e = entry(w.reshape(B, n_out, n_in, -1))  # [B, out, in, hidden]
                row = torch.cat([e.mean(2), e.amax(2)], -1)
            else:
                row = w.reshape(B, n_out, -1)
            bias = w.new_zeros(B, n_out) if b is None else b
            h = neuron(torch.cat([row, bias.unsqueeze(-1)], -1))  # [B, out, hidden]
            feats.append(h.mean(1) if layer.out_group in self.permutable else h.flatten(1))
        return self.head(torch.cat(feats, 1))
