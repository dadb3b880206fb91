"""Data on weights: runs and splits of zoo files, normalization, augmentations, DataModules."""
from .datamodule import PropertyDataModule, WeightDataModule
from .runs import Split, ZooRuns
from .signal_datamodule import SignalDataModule
from .task import TaskDataModule, source_task

__all__ = ["PropertyDataModule", "SignalDataModule", "Split", "TaskDataModule", "WeightDataModule", "ZooRuns", "source_task"]
