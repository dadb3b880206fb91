"""Training signals of a hypernetwork: the functional loss on the task, and distillation from a zoo.

Functional loss (Lorraine & Duvenaud 2018): the emitted networks run on a batch of the task's
training examples through the population forward (``zoo.functional``), each under its own λ:

- ``weight_decay``: the penalty ``wd / 2 * |θ|²`` over all parameters (what SGD's and Adam's
  L2 weight decay minimise, as ``zoo.optim`` applies it);
- ``dropout``: the network's dropout rate in the forward (per-network masks);
- ``data_fraction`` f: the network learns from the training examples whose fixed uniform draw
  ``u_i`` is below f: nested subsets, so a larger fraction holds every example of a smaller one;
- ``label_noise`` ρ: examples whose fixed draw ``v_i`` is below ρ carry a fixed wrong label (another
  class, uniformly; for regression the target of another example): nested noisy sets likewise.

The draws are hashes of the example's index and a seed (``zoo.rng``), so every network sees
the same subset and the same wrong labels for its λ at every step, as a network trained directly
at that λ sees one fixed subset and one fixed set of noisy labels.

Distillation matches zoo networks at their own λ: their normalized, aligned weights (``weights``),
or their outputs on the task's training inputs (``outputs``, a KL divergence for classification,
squared error for regression).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.functional import population_forward
from zoo.rng import stream_keys, uniform
from zoo.tasks import TaskData
from zoo.train import per_example_loss
from zoo.weight_space import WeightSpaceSpec


class ExampleDraws:
    """Each training example's fixed draws: subset membership ``u``, label noise ``v`` and its
    wrong target (a class, or another example's index for regression)."""

    def __init__(self, task: TaskData, seed: int = 0):
        n = len(task.y_train)
        key = stream_keys([int(seed)], "subset")
        self.u = uniform(key, n)[0]
        noise_key = stream_keys([int(seed)], "noise")
        self.v = uniform(noise_key, n)[0]
        w = uniform(noise_key, n, stream=1)[0]
        if task.kind == "classification":
            C = task.output_dim
            shift = 1 + (w * (C - 1)).long().clamp_max(C - 2)
            self.wrong = (task.y_train.cpu() + shift) % C
        else:
            self.wrong = (w * n).long().clamp_max(n - 1)  # the example whose target is given instead
        self.task_kind = task.kind
        self.y_train = task.y_train.cpu()

    def wrong_targets(self, idx: Tensor) -> Tensor:
        i = idx.cpu()
        return self.wrong[i] if self.task_kind == "classification" else self.y_train[self.wrong[i]]


def functional_loss(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, idx: Tensor,
                    hparams: dict[str, Tensor], draws: ExampleDraws, activation: str | None = None) -> Tensor:
    """Per network [M]: its training loss on the batch under its own λ (``hparams``: name -> [M];
    absent names take no effect: weight decay 0, no dropout, all examples, clean labels)."""
    M = params[0].shape[0]
    dev = x.device
    dropout = hparams.get("dropout")
    out = population_forward(spec, params, x, activation=activation,
                             dropout=dropout if dropout is not None and bool((dropout > 0).any()) else None)
    targets = y.unsqueeze(0).expand(M, *y.shape)
    noise = hparams.get("label_noise")
    if noise is not None:
        noisy = draws.v.to(dev)[idx].unsqueeze(0) < noise.unsqueeze(1)  # [M, B]
        wrong = draws.wrong_targets(idx).to(dev).unsqueeze(0).expand_as(targets)
        mask = noisy if targets.dim() == 2 else noisy.unsqueeze(-1)
        targets = torch.where(mask, wrong, targets)
    weight = torch.ones(M, len(y), device=dev)
    fraction = hparams.get("data_fraction")
    if fraction is not None:
        weight = (draws.u.to(dev)[idx].unsqueeze(0) < fraction.unsqueeze(1)).float()
    losses = (per_example_loss(task, out, targets) * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    wd = hparams.get("weight_decay")
    if wd is not None:
        losses = losses + 0.5 * wd * sum(p.flatten(1).pow(2).sum(1) for p in params)
    return losses


def output_distillation_loss(spec: WeightSpaceSpec, student: list[Tensor], teacher: list[Tensor], kind: str,
                             x: Tensor, activation: str | None = None) -> Tensor:
    """Per network [M]: how far the student's outputs on ``x`` are from its teacher's (KL(teacher ||
    student) of the class distributions, or the squared error for regression)."""
    out_s = population_forward(spec, student, x, activation=activation)
    with torch.no_grad():
        out_t = population_forward(spec, teacher, x, activation=activation)
    if kind == "classification":
        return F.kl_div(out_s.log_softmax(-1), out_t.log_softmax(-1), log_target=True, reduction="none").sum(-1).mean(1)
    return ((out_s - out_t) ** 2).mean(-1).mean(1)
