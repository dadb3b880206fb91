"""Representation similarity and per-network statistics of a population.

- **Linear CKA** (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
  eq. 2 with a linear kernel): for representations ``X`` [n, p] and ``Y`` [n, q] of the same n
  inputs, column-centred, ``CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)``. It is 1 for ``Y = X Q`` with
  ``Q`` orthogonal (a hidden-neuron permutation among them) or a scalar multiple, and lies in [0, 1].
  Computed per hidden layer, batched over many pairs of networks of one weight space.
- **Per-network statistics.** The phase-transition model zoos (Schürholt et al. 2025, "A Model
  Zoo on Phase Transitions in Neural Networks", arXiv:2504.18072; their code's README,
  github.com/ModelZoos/PhaseTransitionModelZoo) report per model, after Yang et al. 2021
  ("Taxonomizing local versus global structure in neural network loss landscapes"): performance
  (training and test loss and accuracy), local sharpness (Hessian top eigenvalue and trace, with
  PyHessian: ``wsl.landscape.sharpness``), global connectivity (Bezier mode connectivity; linear
  barriers in ``wsl.landscape.connectivity``) and representation similarity (CKA, here). The cheap
  per-network ones are ``network_statistics``: weight norms, loss and accuracy per split, and the
  train-test gaps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError
from zoo.functional import population_forward
from zoo.tasks import TaskData
from zoo.train import evaluate
from zoo.weight_space import WeightSpaceSpec


@torch.no_grad()
def hidden_representations(spec: WeightSpaceSpec, params: list[Tensor], x: Tensor, *,
                           activation: str | list[str] | None = None) -> list[Tensor]:
    """Every hidden layer's representation of the shared inputs ``x`` [n, ...] for M networks:
    one ``[M, n, features]`` per hidden layer (a convolution's channels × positions flattened)."""
    hidden: list[Tensor] = []
    population_forward(spec, params, x, activation=activation, hidden=hidden)
    return [h.flatten(2) for h in hidden]


def linear_cka(a: Tensor, b: Tensor) -> Tensor:
    """Linear CKA [K] between K pairs of representations ``a`` [K, n, p] and ``b`` [K, n, q]."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[:2] != b.shape[:2]:
        raise InputError(f"linear_cka: expected [K, n, p] and [K, n, q] with equal K and n, "
                         f"found {list(a.shape)} and {list(b.shape)}")
    a = (a - a.mean(1, keepdim=True)).double()
    b = (b - b.mean(1, keepdim=True)).double()
    cross = (b.transpose(1, 2) @ a).square().sum((1, 2))  # ‖YᵀX‖_F²
    self_a = (a.transpose(1, 2) @ a).square().sum((1, 2)).sqrt()
    self_b = (b.transpose(1, 2) @ b).square().sum((1, 2)).sqrt()
    return (cross / (self_a * self_b).clamp_min(1e-300)).float()


def pairwise_cka(spec: WeightSpaceSpec, params_a: list[Tensor], params_b: list[Tensor], x: Tensor, *,
                 activation_a: str | list[str] | None = None, activation_b: str | list[str] | None = None
                 ) -> Tensor:
    """Linear CKA [K, hidden layers] between network k of ``params_a`` and network k of
    ``params_b`` (K each, one weight space), per hidden layer, on the shared inputs ``x``."""
    if params_a[0].shape[0] != params_b[0].shape[0]:
        raise InputError(f"pairwise_cka: expected as many networks on both sides, found "
                         f"{params_a[0].shape[0]} and {params_b[0].shape[0]}")
    ha = hidden_representations(spec, params_a, x, activation=activation_a)
    hb = hidden_representations(spec, params_b, x, activation=activation_b)
    return torch.stack([linear_cka(a, b) for a, b in zip(ha, hb)], dim=1)


def weight_norms(spec: WeightSpaceSpec, params: list[Tensor]) -> dict[str, Tensor]:
    """Frobenius norm [M] of every parameter tensor (``spec.params`` names) and of all of them."""
    out = {ps.name: p.flatten(1).norm(dim=1) for ps, p in zip(spec.params, params)}
    out["total"] = torch.stack([n.square() for n in out.values()]).sum(0).sqrt()
    return out


def network_statistics(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, *,
                       activation: str | list[str] | None = None) -> dict[str, Tensor]:
    """Per-network statistics [M] (see the module docstring for their source): weight norms
    (``norm/<param>``, ``norm/total``), loss and accuracy on every split, and the generalisation
    gaps ``loss_gap`` (test - train) and ``acc_gap`` (train - test, classification only)."""
    out = {f"norm/{k}": v for k, v in weight_norms(spec, params).items()}
    for split in ("train", "val", "test"):
        res = _evaluate(spec, params, task, split, activation)
        for k, v in res.items():
            out[f"{split}_{k}"] = v
    out["loss_gap"] = out["test_loss"] - out["train_loss"]
    if task.kind == "classification":
        out["acc_gap"] = out["train_acc"] - out["test_acc"]
    return out


def _evaluate(spec, params, task, split, activation) -> dict[str, Tensor]:
    x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
    return evaluate(spec, params, task, x, y, activation=activation)  # population_forward groups a list
