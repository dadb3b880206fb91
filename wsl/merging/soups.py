"""Soups: averaging networks in weight space, as they are or after weight matching.

- **uniform soup** (Wortsman et al. 2022, "Model soups"): ``θ = (1/n) Σ_i θ_i`` over networks
  fine-tuned from one initialisation (they share a basin, so their mean is a good network).
- **greedy soup** (same paper, Algorithm 1): sort the networks by validation score, best first;
  start the soup with the best; add each next network if the soup's validation score with it is
  at least the score without it. The score is a callable, so this module knows no task.
- **aligned average** (Ainsworth et al. 2023, "Git Re-Basin"): independently trained networks sit in
  different permutations of their hidden neurons, and their plain mean is a poor network. Weight
  matching (``wsl.weights.align``) permutes each onto the first, then ``θ = (1/n) Σ_i π_i(θ_i)``.

Every function takes a ``WeightBatch`` of n networks of one weight space and returns the merge as a
``WeightBatch`` of one network.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from wsl.weights import WeightBatch
from wsl.weights.align import align
from zoo.errors import InputError

#: Scores networks: a ``WeightBatch`` of B networks in, ``[B]`` scores out (higher is better), e.g.
#: validation accuracy computed by the population forward.
Score = Callable[[WeightBatch], Tensor]


def check_mergeable(wb: WeightBatch, least: int = 2) -> None:
    """Raise unless ``wb`` holds at least ``least`` networks that share their activation."""
    if len(wb) < least:
        raise InputError(f"a merge needs at least {least} networks, found {len(wb)}")
    if wb.activation is not None and len(set(wb.activation)) > 1:
        raise InputError(f"networks of different activations cannot be merged: found {sorted(set(wb.activation))}")


def mean_network(wb: WeightBatch) -> WeightBatch:
    """The entrywise mean of the networks of ``wb``, as a batch of one (with the first's activation)."""
    return WeightBatch(wb.spec, [w.mean(0, keepdim=True) for w in wb.weights],
                       [None if b is None else b.mean(0, keepdim=True) for b in wb.biases],
                       None if wb.activation is None else wb.activation[:1])


def uniform_soup(wb: WeightBatch) -> WeightBatch:
    """Uniform soup: ``θ = (1/n) Σ_i θ_i`` (Wortsman et al. 2022)."""
    check_mergeable(wb)
    return mean_network(wb)


def greedy_soup(wb: WeightBatch, score: Score) -> tuple[WeightBatch, list[int]]:
    """Greedy soup (Wortsman et al. 2022, Algorithm 1): the soup and its ingredients (indices into
    ``wb``, in the order they were added). Networks are tried in order of ``score`` (best first,
    ties by index); network i joins when ``score(mean(soup ∪ {θ_i})) >= score(mean(soup))``."""
    check_mergeable(wb)
    alone = score(wb).detach().double().cpu()
    order = sorted(range(len(wb)), key=lambda i: (-float(alone[i]), i))
    ingredients, best = [order[0]], float(alone[order[0]])
    for i in order[1:]:
        trial = float(score(mean_network(wb[torch.tensor(ingredients + [i])]))[0])
        if trial >= best:
            ingredients.append(i)
            best = trial
    return mean_network(wb[torch.tensor(ingredients)]), ingredients


def aligned_average(wb: WeightBatch, max_iter: int = 50, seed: int = 0) -> WeightBatch:
    """Aligned average (Ainsworth et al. 2023): ``θ = (1/n) Σ_i π_i(θ_i)``, ``π_i`` the hidden
    permutations that weight matching finds for network i onto network 0 (``π_0`` the identity)."""
    check_mergeable(wb)
    aligned = align(wb[1:], wb[0], max_iter=max_iter, seed=seed)
    return mean_network(WeightBatch.cat([wb[0], aligned]))
