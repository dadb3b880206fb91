"""Generating networks: diffusion weight generators, the generated-zoo file, the memorization suite.

- ``wsl.diffusion.networks``: run generated networks on their zoo's task (``wsl.data.task``), write them as a
  zoo file marked as generated (``wsl sample``'s output).
- ``wsl.diffusion.memorization``: does a generator generate or memorize? (Zeng et al. 2025;
  ``wsl evaluate-generated``), from ``novelty``, ``scores``, ``reference_baselines`` and ``report``.
"""
from wsl.data.task import source_task
from wsl.diffusion.networks import evaluate_networks, write_generated_zoo, wrong_sets
from wsl.diffusion.memorization import evaluate_generated

__all__ = [
    "evaluate_networks",
    "source_task",
    "write_generated_zoo",
    "wrong_sets",
    "evaluate_generated",
]
