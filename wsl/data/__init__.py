"""Data on weights: runs and splits of zoo files, normalization, augmentations, DataModules."""
from .datamodule import PropertyDataModule, WeightDataModule
from .runs import Split, ZooRuns

__all__ = ["PropertyDataModule", "Split", "WeightDataModule", "ZooRuns"]
