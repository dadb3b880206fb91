"""Vectorized population training: all models of a chunk take their SGD/Adam steps at once.

Each model has its own initialisation, training subset, label noise and data order, all drawn from
generators seeded with the model's seed (``model_generator``), so model i of a population equals
model i trained alone by a plain ``torch.nn`` module with ``torch.optim`` (tests/test_train.py shows
it). An epoch of a model is one pass over its own subset in batches of ``batch_size`` (the last one
smaller); a step computes only the models still inside their epoch.
Dropout masks come from one generator per chunk, seeded from the zoo seed and the chunk's first model.

A model whose loss or weights become NaN/inf is marked diverged: it stops training, its later
checkpoints and metrics are NaN, and the other models are unaffected.
"""
from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .architectures import init_params
from .functional import population_forward
from .fused import MIN_COMPILED_NUMEL
from .optim import PopulationOptimizer
from .config import STRUCTURAL
from .tasks import TaskData
from .weight_space import WeightSpaceSpec

STATUS_PENDING, STATUS_DONE, STATUS_DIVERGED = 0, 1, 2
_PURPOSES = {"init": 1, "subset": 2, "noise": 3, "order": 4, "dropout": 5}


def model_generator(seed: int, purpose: str, *extra: int) -> torch.Generator:
    """A CPU generator for one purpose of one model (``extra``: e.g. the epoch)."""
    ss = np.random.SeedSequence([int(seed), _PURPOSES[purpose], *[int(e) for e in extra]])
    g = torch.Generator()
    g.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


def _subset_size(n_train: int, fraction: float) -> int:
    return max(1, int(round(fraction * n_train)))


def _runs(values: list) -> list[tuple[int, int]]:
    """[start, end) ranges of equal consecutive values."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i))
            start = i
    return out


def training_subset(seed: int, n_train: int, fraction: float) -> Tensor:
    """Indices of the training examples a model sees (a seeded random subset)."""
    return torch.randperm(n_train, generator=model_generator(seed, "subset"))[:_subset_size(n_train, fraction)]


def noisy_labels(seed: int, y: Tensor, subset: Tensor, noise: float, num_classes: int | None) -> Tensor:
    """The training targets a model sees: a ``noise`` fraction of its subset gets wrong labels
    (another class, uniformly; for regression the target of another random example)."""
    y = y.clone()
    k = int(round(noise * len(subset)))
    if k == 0:
        return y
    g = model_generator(seed, "noise")
    which = subset[torch.randperm(len(subset), generator=g)[:k]]
    if num_classes is not None:
        shift = torch.randint(1, num_classes, (k,), generator=g)
        y[which] = (y[which] + shift) % num_classes
    else:
        y[which] = y[torch.randint(0, len(y), (k,), generator=g)]
    return y


def epoch_order(seed: int, subset: Tensor, epoch: int) -> Tensor:
    """The order in which a model visits its subset in ``epoch`` (1-based)."""
    return subset[torch.randperm(len(subset), generator=model_generator(seed, "order", epoch))]


def initial_params(spec: WeightSpaceSpec, seed: int, init_scale: float) -> list[Tensor]:
    return init_params(spec, model_generator(seed, "init"), init_scale)


@dataclass
class PopulationResult:
    params: list[np.ndarray]  # per parameter, [M, C, *shape] float32 (NaN after divergence)
    metrics: dict[str, np.ndarray]  # name -> [M, C] float32
    status: np.ndarray  # [M] uint8: STATUS_DONE or STATUS_DIVERGED
    diverged_epoch: np.ndarray  # [M] int32, -1 if never

    def rows_in_order(self, order: list[int]) -> "PopulationResult":
        """The result of a population trained in row order ``order``, back in the caller's order."""
        inv = np.argsort(order)
        return PopulationResult([a[inv] for a in self.params], {k: v[inv] for k, v in self.metrics.items()},
                                self.status[inv], self.diverged_epoch[inv])


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of unmapping them. A training step allocates
    and frees the same multi-megabyte tensors hundreds of times; with the default thresholds each
    one is a fresh mmap whose pages fault in again, which cost a quarter of a CPU step here."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(libc.mallopt(m_mmap_threshold, 256 * 2 ** 20) and libc.mallopt(m_trim_threshold, 2 ** 30)
                and libc.mallopt(m_top_pad, 64 * 2 ** 20))


def metric_names(task: TaskData) -> list[str]:
    names = []
    for split in ("train", "val", "test"):
        names.append(f"{split}_loss")
        if task.kind == "classification":
            names.append(f"{split}_acc")
    return names


def activation_elems(spec: WeightSpaceSpec) -> int:
    """Activation elements one example produces in one network (for memory planning)."""
    total, spatial = 0, list(spec.input_shape[1:])
    for layer in spec.layers:
        if layer.kind == "linear":
            total += layer.out_features
        else:
            spatial = [(s + 2 * layer.padding - k) // layer.stride + 1 for s, k in zip(spatial, layer.kernel)]
            total += layer.out_features * math.prod(spatial)
    in_elems = math.prod(spec.input_shape)
    return total + in_elems


def _loss(task: TaskData, out: Tensor, y: Tensor) -> Tensor:
    """Per-example loss [M, B] (cross-entropy or squared error averaged over outputs)."""
    if task.kind == "classification":  # logsumexp - target logit: 3x faster than F.cross_entropy here
        return out.logsumexp(-1) - out.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return ((out - y) ** 2).mean(-1)


@torch.no_grad()
def evaluate(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, *,
             activation: str | None = None, mask: Tensor | None = None, batch: int = 512) -> dict[str, Tensor]:
    """Mean loss (and accuracy) of every model on a shared set ``x``. ``y`` is [N] (or [N, out]) shared,
    or [M, N] per-model labels; ``mask`` [M, N] restricts each model to its own examples."""
    M, N = params[0].shape[0], x.shape[0]
    loss_sum = torch.zeros(M, device=x.device, dtype=torch.float64)
    correct = torch.zeros(M, device=x.device, dtype=torch.float64)
    for s in range(0, N, batch):
        out = population_forward(spec, params, x[s:s + batch], activation=activation)
        yb = y[..., s:s + batch] if (y.dim() == 2 and task.kind == "classification") else y[s:s + batch]
        if yb.dim() == (1 if task.kind == "classification" else 2):
            yb = yb.unsqueeze(0).expand(M, *yb.shape)
        per = _loss(task, out, yb)
        w = mask[:, s:s + batch].to(per.dtype) if mask is not None else torch.ones_like(per)
        loss_sum += (per * w).sum(1).double()
        if task.kind == "classification":
            correct += ((out.argmax(-1) == yb).to(per.dtype) * w).sum(1).double()
    count = mask.sum(1).double().clamp_min(1) if mask is not None else torch.full((M,), float(N), device=x.device, dtype=torch.float64)
    res = {"loss": (loss_sum / count).float()}
    if task.kind == "classification":
        res["acc"] = (correct / count).float()
    return res


def train_population(spec: WeightSpaceSpec, task: TaskData, hparams: dict[str, list], seeds: list[int], *,
                     epochs: int, checkpoints: list[int], device: str | torch.device = "cpu",
                     dropout_seed: int = 0, eval_batch: int | None = None,
                     progress: Callable[[float], None] | None = None) -> PopulationResult:
    """Train M models at once; return their weights and metrics at the ``checkpoints`` epochs.

    ``hparams`` maps each hyperparameter name of ``zoo.config.HPARAMS`` to M values; the models must
    share the structural hyperparameters (``zoo.config.STRUCTURAL``: activation, batch
    size); optimizers may differ. ``progress`` is called with the fraction of the chunk
    finished after each epoch.
    """
    M = len(seeds)
    # Rows ordered by optimizer kind (each kind updates a contiguous slice), then by subset size,
    # largest first: the models still inside their epoch at a step are then a prefix of each kind's
    # rows, and the step computes only those.
    n_train = task.x_train.shape[0]
    order = sorted(range(M), key=lambda i: (hparams["optimizer"][i], -_subset_size(n_train, hparams["data_fraction"][i])))
    if order != list(range(M)):
        res = train_population(spec, task, {k: [v[i] for i in order] for k, v in hparams.items()},
                               [seeds[i] for i in order], epochs=epochs, checkpoints=checkpoints, device=device,
                               dropout_seed=dropout_seed, eval_batch=eval_batch, progress=progress)
        return res.rows_in_order(order)
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    for name in STRUCTURAL:
        if len(set(hparams[name])) != 1:
            raise ValueError(f"models of one population must share {name}, found {sorted(set(hparams[name]))}")
    activation = hparams["activation"][0]
    bs = int(hparams["batch_size"][0])
    task = task.to(device)
    classification = task.kind == "classification"

    # Per-model initialisation, subset, labels.
    inits = [initial_params(spec, s, float(c)) for s, c in zip(seeds, hparams["init_scale"])]
    params = [torch.stack([p[k] for p in inits]).to(device).requires_grad_(True) for k in range(len(inits[0]))]
    subsets = [training_subset(s, n_train, float(f)) for s, f in zip(seeds, hparams["data_fraction"])]
    y_cpu = task.y_train.cpu()
    labels = torch.stack([noisy_labels(s, y_cpu, sub, float(nz), task.num_classes)
                          for s, sub, nz in zip(seeds, subsets, hparams["label_noise"])]).to(device)
    in_subset = torch.zeros(M, n_train, dtype=torch.bool)
    for i, sub in enumerate(subsets):
        in_subset[i, sub] = True
    in_subset = in_subset.to(device)

    opt = PopulationOptimizer(params, list(hparams["optimizer"]), torch.tensor(hparams["lr"]),
                              torch.tensor(hparams["weight_decay"]), torch.tensor(hparams["momentum"]))
    # the update fused by torch.compile (zoo.fused) where it pays: ~2.3x faster for 1,000 digits MLPs
    compile_update = device.type == "cpu" and M * spec.num_params >= MIN_COMPILED_NUMEL
    dropout = torch.tensor(hparams["dropout"], dtype=torch.float32, device=device)
    dropout = dropout if bool((dropout > 0).any()) else None
    gen = torch.Generator(device=device)
    gen.manual_seed(dropout_seed)

    if eval_batch is None:  # keep evaluation activations around 256 MiB
        eval_batch = max(16, int(2 ** 28 / (4 * M * activation_elems(spec))))
    names = metric_names(task)
    C = len(checkpoints)
    ck_params = [np.full((M, C, *p.shape[1:]), np.nan, dtype=np.float32) for p in params]
    ck_metrics = {n: np.full((M, C), np.nan, dtype=np.float32) for n in names}
    alive = torch.ones(M, dtype=torch.bool, device=device)
    diverged_epoch = np.full(M, -1, dtype=np.int32)

    def mark_diverged(bad: Tensor, epoch: int) -> None:
        bad = bad & alive
        if not bool(bad.any()):
            return
        idx = bad.nonzero().flatten()
        diverged_epoch[idx.cpu().numpy()] = epoch
        alive[idx] = False
        with torch.no_grad():
            for p in params:
                p[idx] = 0.0

    def checkpoint(epoch: int) -> None:
        if epoch not in checkpoints:
            return
        c = checkpoints.index(epoch)
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in params]).all(0)
        mark_diverged(~finite, epoch)
        keep = alive.cpu().numpy()
        det = [p.detach() for p in params]
        for k, p in enumerate(det):
            ck_params[k][keep, c] = p[alive].cpu().numpy()
        results = {
            "train": evaluate(spec, det, task, task.x_train, labels, activation=activation, mask=in_subset, batch=eval_batch),
            "val": evaluate(spec, det, task, task.x_val, task.y_val, activation=activation, batch=eval_batch),
            "test": evaluate(spec, det, task, task.x_test, task.y_test, activation=activation, batch=eval_batch),
        }
        for split, res in results.items():
            for key, v in res.items():
                ck_metrics[f"{split}_{key}"][keep, c] = v[alive].cpu().numpy()

    checkpoint(0)
    model_steps = np.array([math.ceil(len(s) / bs) for s in subsets])
    steps = int(model_steps.max())
    kinds = hparams["optimizer"]
    groups = [(a, b) for a, b in _runs(kinds)]
    # rows of each kind group still inside their epoch at each step (sizes are sorted, largest first)
    stepping = [[int((model_steps[a:b] > s).sum()) for s in range(steps)] for a, b in groups]
    for epoch in range(1, epochs + 1):
        order = torch.full((M, steps * bs), -1, dtype=torch.long)
        for i, (s, sub) in enumerate(zip(seeds, subsets)):
            order[i, :len(sub)] = epoch_order(s, sub, epoch)
        order = order.to(device)
        for step in range(steps):
            active = torch.zeros(M, dtype=torch.bool, device=device)
            bad = torch.zeros(M, dtype=torch.bool, device=device)
            losses = []
            for (a, _), counts in zip(groups, stepping):
                k = counts[step]
                if k == 0:
                    continue
                rows = slice(a, a + k)
                idx = order[rows, step * bs:(step + 1) * bs]
                valid = idx >= 0
                safe = idx.clamp_min(0)
                x = task.x_train[safe]
                y = labels[rows].gather(1, safe) if classification else task.y_train[safe]
                out = population_forward(spec, [p[rows] for p in params], x, activation=activation,
                                         dropout=None if dropout is None else dropout[rows], generator=gen)
                per = _loss(task, out, y)
                w = valid.to(per.dtype)
                model_loss = (per * w).sum(1) / w.sum(1).clamp_min(1)
                act = valid.any(1) & alive[rows]
                nonfinite = ~torch.isfinite(model_loss) & act
                act = act & ~nonfinite
                bad[rows], active[rows] = nonfinite, act
                losses.append(torch.where(act, model_loss, torch.zeros_like(model_loss)).sum())
            if not losses:
                break
            grads = torch.autograd.grad(sum(losses), params)
            if bool(bad.any()):  # after the backward pass, which needs the unmodified weights
                mark_diverged(bad, epoch)
                grads = [torch.where(alive.view(-1, *[1] * (g.dim() - 1)), g, 0.0) for g in grads]
            opt.step(grads, active, compile=compile_update)
        checkpoint(epoch)
        if progress is not None:
            progress(epoch / epochs)

    status = np.where(diverged_epoch >= 0, STATUS_DIVERGED, STATUS_DONE).astype(np.uint8)
    return PopulationResult(ck_params, ck_metrics, status, diverged_epoch)
