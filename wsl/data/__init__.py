"""Data on weights: runs and splits of zoo files, normalization, augmentations, DataModules."""
from .datamodule import ZooDataModule

__all__ = ["ZooDataModule"]
