"""Weight-space types and symmetry tools: batched weights and weight-shaped features, neural
graphs, permutation / scaling symmetries, weight matching, per-layer statistics."""
from .batch import WeightBatch
from .features import WeightFeatures

__all__ = ["WeightBatch", "WeightFeatures"]
