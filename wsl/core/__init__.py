"""The model core: what the three model families (prediction, diffusion, hypernetworks) share.

- ``wsl.core.module``: ``WeightSpaceModule``, the base LightningModule every family subclasses;
- ``wsl.core.checkpoint``: ``load_model``, the one tensors-only loader of their checkpoints;
- ``wsl.core.trainer``: the Trainer defaults, the best and last checkpoints, gathering over ranks.
"""
from .checkpoint import load_model, read_checkpoint
from .module import WeightSpaceModule

__all__ = ["WeightSpaceModule", "load_model", "read_checkpoint"]
