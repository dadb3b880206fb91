"""Per-layer weight statistics (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from
Weights"): for every parameter tensor, its mean, variance and the 0/25/50/75/100% quantiles.

They are invariant to hidden-neuron permutations by construction, cheap, and a strong baseline for
predicting a network's accuracy; the StatNN encoder and the demo's boosted-trees predictor use them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.weight_space import WeightSpaceSpec

STATISTICS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")
_QUANTILES = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])


def weight_statistics(spec: WeightSpaceSpec, weights: dict[str, Tensor]) -> Tensor:
    """[B, 7 * n_params] statistics of a batch of networks given as name -> [B, *shape]."""
    feats = []
    for p in spec.params:
        w = weights[p.name].flatten(1).float()
        feats += [w.mean(1, keepdim=True), w.var(1, unbiased=False, keepdim=True),
                  torch.quantile(w, _QUANTILES.to(w.device), dim=1).T]
    return torch.cat(feats, 1)

