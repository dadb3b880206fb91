"""Weight-space types and symmetry tools: batched weights and weight-shaped features, neural
graphs, permutation / scaling symmetries, weight matching, per-layer statistics."""
from .batch import WeightBatch

__all__ = ["WeightBatch"]
