"""Hypernetworks: networks that emit the weights of a zoo's weight space from a condition.

- ``wsl.hyper.conditioning``: hyperparameters (ranges from a zoo config) and labels as inputs,
  plain or magnitude-invariant (MIP).
- ``wsl.hyper.emitter``: the emitter, per-layer or per-chunk heads, optionally a residual on base weights.
- ``wsl.hyper.objectives``: the functional loss on the task under each λ, and distillation from a zoo.
- ``wsl.hyper.model``: ``HyperNetwork``, from hyperparameters (and a task index) to weights, trained
  functionally or distilled from a zoo (``wsl fit`` with ``configs/hyper/``).
- ``wsl.hyper.inr``: ``INRHyperNetwork``, from an image (or its class) to its SIREN.
- ``wsl.hyper.search``: ``wsl hyper search``, hyperparameters by gradient through a hypernetwork.
"""
from wsl.hyper.inr import INRHyperNetwork
from wsl.hyper.model import HyperNetwork

__all__ = ["HyperNetwork", "INRHyperNetwork"]
