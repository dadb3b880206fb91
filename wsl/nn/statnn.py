"""StatNN (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights").

Seven statistics per parameter tensor (mean, variance, 0/25/50/75/100% quantiles; see
``wsl.weights.statistics``) are invariant to hidden-neuron permutations by construction. Their scales differ
by orders of magnitude between tensors and statistics, so a BatchNorm standardises each feature
over the batch (running statistics at evaluation) before the MLP.
"""
from __future__ import annotations

from torch import Tensor, nn

from zoo.weight_space import WeightSpaceSpec

from wsl.weights.statistics import STATISTICS, weight_statistics
from wsl.nn.base import Encoder, mlp
from wsl.weights import WeightBatch


class StatNN(Encoder):
    """weight statistics ``[B, 7 * n_tensors]`` -> BatchNorm1d -> MLP -> ``[B, out_dim]``."""

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, hidden: int = 256, layers: int = 3):
        super().__init__(spec, out_dim)
        n_features = len(STATISTICS) * len(spec.params)
        self.norm = nn.BatchNorm1d(n_features)
        self.net = mlp(n_features, hidden, out_dim, layers)

    def forward(self, wb: WeightBatch) -> Tensor:
        stats = weight_statistics(self.spec, wb.to_dict())  # float32 by construction
        return self.net(self.norm(stats.to(self.norm.weight.dtype)))
