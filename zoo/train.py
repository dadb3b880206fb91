"""Vectorized population training: all models of a chunk take their SGD/Adam steps at once.

Each model has its own initialisation, training subset, label noise, data order and dropout masks,
all drawn from keys hashed from the model's seed (``zoo.rng``; for the masks
``zoo.functional.dropout_mask``), for the whole population at once. They do not depend on the
rest of the population, so model i of a population equals model i trained alone by a plain
``torch.nn`` module with ``torch.optim`` (tests/test_train.py shows it). An epoch of a model is one
pass over its own subset in batches of ``batch_size`` (the last one smaller); a step computes only
the models still inside their epoch. Models may see different variants of the task (the
``task_variant`` hyperparameter, ``zoo.tasks.variant_view``): each draws its examples from its
variant's part of one stacked training set and is measured on its variant's held-out examples.

MLPs whose activation has a hand-written derivative (relu, tanh, sine, identity) take their steps
through ``zoo.mlp_step`` (forward and backward written out, compiled by ``torch.compile`` for
large populations on the CPU); other networks (CNNs, other activations) through autograd. Both
give the same numbers to float32 rounding.

A model whose loss or weights become NaN/inf is marked diverged: it stops training, its later
checkpoints and metrics are NaN, and the other models are unaffected.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .architectures import population_init
from .checkpoints import CheckpointRecorder, PopulationResult
from .functional import population_forward, position_hashes
from .fused import MIN_COMPILED_NUMEL, FusedStep
from .mlp_step import Dropout, hand_written_activation, mlp_population_step
from .optim import PopulationOptimizer
from .rng import permutations, stream_keys, uniform
from .config import STRUCTURAL
from .store import SPLITS
from .threads import CoreShare
from .workers import population_workers, train_in_workers
from .tasks import TaskData, variant_view
from .weight_space import WeightSpaceSpec
from .errors import InputError


def _subset_size(n_train: int, fraction: float) -> int:
    return max(1, int(round(fraction * n_train)))


def runs_of_equal_values(values: list) -> list[tuple[int, int]]:
    """[start, end) ranges of equal consecutive values."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i))
            start = i
    return out


def training_subsets(seeds: list[int], n_train: int | list[int], fractions: list[float],
                     offsets: list[int] | None = None) -> tuple[Tensor, np.ndarray]:
    """Row m: the indices of the training examples model m sees, a random subset of
    ``round(fractions[m] * n_train)`` in random order (its "subset" stream), then -1 [M, largest];
    and the sizes. ``n_train`` and ``offsets`` may be per model: model m then draws from examples
    ``offsets[m] + range(n_train[m])`` (its task variant's part of a stacked training set)."""
    pools = [int(n_train)] * len(seeds) if isinstance(n_train, (int, np.integer)) else [int(n) for n in n_train]
    sizes = np.array([_subset_size(n, float(f)) for n, f in zip(pools, fractions)])
    examples = permutations(stream_keys(seeds, "subset"), pools, int(sizes.max()), sizes)
    if offsets is not None and any(offsets):
        shift = torch.as_tensor(offsets, dtype=torch.int64).view(-1, 1)
        examples = torch.where(examples >= 0, examples + shift, examples)
    return examples, sizes


def population_labels(seeds: list[int], y: Tensor, examples: Tensor, sizes: np.ndarray, noise: list[float],
                      num_classes: int | None) -> Tensor:
    """The training targets each model sees, [M, N] (classes) or [M, N, out] (regression): the
    first ``round(noise[m] * sizes[m])`` of model m's examples (row m of ``examples``, in random
    order, so a random part of them) get a wrong label, another class uniformly, or for
    regression the target of a random example (its "noise" stream)."""
    M, N = len(seeds), y.shape[0]
    labels = y.unsqueeze(0).repeat(M, *[1] * y.dim())
    k = torch.tensor([int(round(float(nz) * int(s))) for nz, s in zip(noise, sizes)])
    width = int(k.max()) if M else 0
    if width == 0:
        return labels
    take = torch.arange(width) < k.view(-1, 1)
    rows = torch.arange(M).view(-1, 1).expand(-1, width)[take]
    which = examples[:, :width][take]
    u = uniform(stream_keys(seeds, "noise"), width)[take]
    if num_classes is not None:
        shift = 1 + (u * (num_classes - 1)).long().clamp_max(num_classes - 2)
        labels[rows, which] = (y[which] + shift) % num_classes
    else:
        labels[rows, which] = y[(u * N).long().clamp_max(N - 1)]
    return labels


def epoch_orders(seeds: list[int], examples: Tensor, sizes: np.ndarray, epoch: int, width: int | None = None) -> Tensor:
    """Row m: the order in which model m visits its examples in ``epoch`` (1-based), then -1 up
    to ``width`` (default: as wide as ``examples``)."""
    perm = permutations(stream_keys(seeds, "order", epoch), sizes, width or examples.shape[1])
    return examples.gather(1, perm.clamp(0, examples.shape[1] - 1)).masked_fill_(perm < 0, -1)


# One model's draws: row 0 of the population functions, so a model alone sees what it sees in a population.

def training_subset(seed: int, n_train: int, fraction: float) -> Tensor:
    """Indices of the training examples a model sees."""
    return training_subsets([seed], n_train, [fraction])[0][0]


def noisy_labels(seed: int, y: Tensor, subset: Tensor, noise: float, num_classes: int | None) -> Tensor:
    """The training targets of a model whose examples are ``subset`` (see ``population_labels``)."""
    return population_labels([seed], y, subset.unsqueeze(0), np.array([len(subset)]), [noise], num_classes)[0]


def epoch_order(seed: int, subset: Tensor, epoch: int) -> Tensor:
    """The order in which a model visits its subset in ``epoch`` (1-based)."""
    return epoch_orders([seed], subset.unsqueeze(0), np.array([len(subset)]), epoch)[0]


def initial_params(spec: WeightSpaceSpec, seed: int, init_scale: float) -> list[Tensor]:
    """A model's initial parameters (see ``zoo.architectures.population_init``)."""
    return [p[0] for p in population_init(spec, [seed], [init_scale])]


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
    for split in SPLITS:
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


def per_example_loss(task: TaskData, out: Tensor, y: Tensor) -> Tensor:
    """Per-example loss [M, B] of outputs [M, B, C] against targets [M, B] (classes) or [M, B, out]:
    cross-entropy, or squared error averaged over outputs. Hypernetworks' functional loss is this."""
    if task.kind == "classification":  # logsumexp - target logit: 3x faster than F.cross_entropy here
        return out.logsumexp(-1) - out.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return ((out - y) ** 2).mean(-1)


def _batch_sums(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, w: Tensor,
                activation: str | None, fused: FusedStep | None, compile: bool) -> tuple[Tensor, Tensor | None]:
    """Per model, the sums over a batch of ``w`` [M, B] times the loss and times correctness (None
    for regression): through the hand-written MLP's evaluation ``fused`` or ``population_forward``."""
    if fused is not None:
        return fused(params, x, y, w, compile=compile)
    out = population_forward(spec, params, x, activation=activation)
    hits = ((out.argmax(-1) == y).to(w.dtype) * w).sum(1) if task.kind == "classification" else None
    return (per_example_loss(task, out, y) * w).sum(1), hits


def _means(task: TaskData, loss_sum: Tensor, correct: Tensor, count: Tensor) -> dict[str, Tensor]:
    res = {"loss": (loss_sum / count).float()}
    if task.kind == "classification":
        res["acc"] = (correct / count).float()
    return res


@torch.no_grad()
def evaluate(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, x: Tensor, y: Tensor, *,
             activation: str | None = None, batch: int = 512, fused: FusedStep | None = None,
             compile: bool = False) -> dict[str, Tensor]:
    """Mean loss (and accuracy) of every model on a shared set: inputs ``x`` [N, ...], targets
    ``y`` [N] (classes) or [N, out]. ``fused``: the hand-written MLP's evaluation
    (``zoo.mlp_step``'s ``*_sums``), compiled if ``compile``; otherwise ``population_forward``."""
    M, N = params[0].shape[0], x.shape[0]
    loss_sum = torch.zeros(M, device=x.device, dtype=torch.float64)
    correct = torch.zeros(M, device=x.device, dtype=torch.float64)
    for s in range(0, N, batch):
        yb = y[s:s + batch]
        loss, hits = _batch_sums(spec, params, task, x[s:s + batch], yb.unsqueeze(0).expand(M, *yb.shape),
                                 torch.ones(M, len(yb), device=x.device), activation, fused, compile)
        loss_sum += loss.double()
        if hits is not None:
            correct += hits.double()
    return _means(task, loss_sum, correct, torch.full((M,), float(N), device=x.device, dtype=torch.float64))


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` for row indices ``idx`` of any shape (index_select: 8x faster than indexing here)."""
    return x.index_select(0, idx.flatten()).view(*idx.shape, *x.shape[1:])


def _batch_targets(labels: Tensor, rows: slice, safe: Tensor) -> Tensor:
    """The targets of examples ``safe`` [k, B] for models ``rows``: labels [M, N] (classes) or
    [M, N, out] (regression; noisy targets are per model too)."""
    lab = labels[rows]
    if lab.dim() == 2:
        return lab.gather(1, safe)
    return lab.gather(1, safe.unsqueeze(-1).expand(-1, -1, lab.shape[-1]))


@torch.no_grad()
def evaluate_own_examples(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, labels: Tensor,
                          examples: Tensor, sizes: np.ndarray, groups: list[tuple[int, int]], *,
                          activation: str | None = None, batch: int = 512, fused: FusedStep | None = None,
                          compile: bool = False) -> dict[str, Tensor]:
    """Mean loss (and accuracy) of every model on its own training examples: row m of
    ``examples`` [M, n] holds model m's example indices (-1 after its ``sizes[m]``), with its
    (noisy) ``labels``. Within each row range of ``groups`` the sizes are sorted, largest first,
    so a block of examples computes only the models that still have examples in it."""
    M = params[0].shape[0]
    loss_sum = torch.zeros(M, device=examples.device, dtype=torch.float64)
    correct = torch.zeros(M, device=examples.device, dtype=torch.float64)
    for a, b in groups:
        for s in range(0, int(sizes[a:b].max(initial=0)), batch):
            rows = slice(a, a + int((sizes[a:b] > s).sum()))
            idx = examples[rows, s:s + batch]
            safe, w = idx.clamp_min(0), (idx >= 0).to(torch.float32)
            loss, hits = _batch_sums(spec, [p[rows] for p in params], task, _rows(task.x_train, safe),
                                     _batch_targets(labels, rows, safe), w, activation, fused, compile)
            loss_sum[rows] += loss.double()
            if hits is not None:
                correct[rows] += hits.double()
    return _means(task, loss_sum, correct,
                  torch.as_tensor(sizes, device=examples.device, dtype=torch.float64).clamp_min(1))


@dataclass(eq=False)
class VariantViews:
    """The task variants of a population (``zoo.tasks.variant_view``) stacked into one training set.

    ``train`` is the task with the training examples of every variant one after the other, so the
    population trainer gathers each model's batch from one table by index; ``views`` are the
    variants' own tasks (their validation and test examples score the models of that variant);
    model m draws its examples from ``offsets[m] + range(pools[m])``."""
    train: TaskData
    views: dict[str, TaskData]
    variants: list[str]  # per model
    offsets: list[int]
    pools: list[int]


def variant_views(task: TaskData, variants: list[str] | None, models: int) -> VariantViews:
    """The views of ``variants`` (one per model; None: every model sees ``task`` as it is)."""
    variants = ["full"] * models if variants is None else [str(v) for v in variants]
    names = list(dict.fromkeys(variants))  # first appearance: the order changes no model's numbers
    views = {v: variant_view(task, v) for v in names}
    starts = np.cumsum([0] + [views[v].x_train.shape[0] for v in names])
    start = dict(zip(names, starts[:-1].tolist()))
    if len(names) == 1:
        train = views[names[0]]
    else:
        train = dataclasses.replace(task, x_train=torch.cat([views[v].x_train for v in names]),
                                    y_train=torch.cat([views[v].y_train for v in names]))
    return VariantViews(train, views, variants, [int(start[v]) for v in variants],
                        [int(views[v].x_train.shape[0]) for v in variants])


@torch.no_grad()
def evaluate_views(spec: WeightSpaceSpec, params: list[Tensor], variants: VariantViews, split: str,
                   device: torch.device, **opts) -> dict[str, Tensor]:
    """Mean loss (and accuracy) of every model on ``split``'s examples of its own task variant."""
    if len(variants.views) == 1:
        view = next(iter(variants.views.values())).to(device)
        return evaluate(spec, params, view, getattr(view, f"x_{split}"), getattr(view, f"y_{split}"), **opts)
    out: dict[str, Tensor] = {}
    for name, view in variants.views.items():
        rows = torch.tensor([m for m, v in enumerate(variants.variants) if v == name], device=device)
        view = view.to(device)
        res = evaluate(spec, [p.index_select(0, rows) for p in params], view, getattr(view, f"x_{split}"),
                       getattr(view, f"y_{split}"), **opts)
        for key, v in res.items():
            out.setdefault(key, torch.full((params[0].shape[0],), float("nan"), device=device)).index_copy_(0, rows, v)
    return out


def compiled_parts(spec: WeightSpaceSpec, models: int, batch_size: int, device: torch.device,
                   compile: bool = True) -> tuple[bool, bool]:
    """Whether a population's optimizer update and its training step run compiled: on the CPU,
    when the run compiles at all, for tensors large enough to gain (``zoo.fused``)."""
    if not compile or torch.device(device).type != "cpu":
        return False, False
    return (models * spec.num_params >= MIN_COMPILED_NUMEL,
            models * batch_size * activation_elems(spec) >= MIN_COMPILED_NUMEL)


def training_work(spec: WeightSpaceSpec, n_train: int, fractions: list[float], epochs: int) -> float:
    """Elementwise work of training models with these data fractions for ``epochs``: examples
    seen times activation elements per example (what ``zoo.fused.run_worth_compiling`` weighs)."""
    return float(epochs) * sum(_subset_size(n_train, float(f)) for f in fractions) * activation_elems(spec)


#: Precomputed dropout hashes are kept up to this many bytes (about one step's activations).
MAX_POSITION_BYTES = 256 * 2 ** 20


def dropout_positions(spec: WeightSpaceSpec, keys: Tensor, batch_size: int) -> list[Tensor] | None:
    """Each hidden layer's ``zoo.functional.position_hashes`` for a population with dropout keys
    ``keys`` and batches of ``batch_size``, computed once per run: an eager step then hashes one
    round instead of two. None where they would take more than ``MAX_POSITION_BYTES``."""
    shapes = [(len(keys), batch_size, layer.out_features) for layer in spec.layers[:-1]]
    if 4 * sum(math.prod(s) for s in shapes) > MAX_POSITION_BYTES:
        return None
    return [position_hashes(s, 0, keys) for s in shapes]


def step_key_of(epoch: int, step: int) -> int:
    """The dropout masks' step key (int32) of a step of an epoch (1-based epochs)."""
    return (epoch << 20 | step) & 0x7FFFFFFF


def _autograd_losses_and_grads(spec: WeightSpaceSpec, params: list[Tensor], task: TaskData, batches: list,
                               activation: str, dropout: Tensor | None, keys: Tensor, step_key: Tensor,
                               ) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """Every stepping group's weighted loss [k] and the gradients of the whole population, through
    autograd (CNNs, activations without a hand-written derivative)."""
    losses = []
    for gi, rows, x, y, weight in batches:
        out = population_forward(spec, [p[rows] for p in params], x, activation=activation,
                                 dropout=None if dropout is None else dropout[rows], dropout_keys=keys[rows],
                                 dropout_step=step_key)
        losses.append((per_example_loss(task, out, y) * weight).sum(1))
    total = sum(torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss)).sum() for loss in losses)
    grads = torch.autograd.grad(total, params)
    return [loss.detach() for loss in losses], grads


def _per_model(spec: WeightSpaceSpec, init_params: list[Tensor], models: int) -> bool:
    """Whether ``init_params`` holds one network per model (a leading dimension of ``models``) or
    one for all; anything else is an error naming the parameter, expected and found shapes."""
    for p, t in zip(spec.params, init_params):
        if tuple(t.shape[1:]) != tuple(p.shape) and tuple(t.shape) != tuple(p.shape):
            raise InputError(f"init_params: {p.name} has shape {list(t.shape)}; expected {list(p.shape)} (one "
                             f"network) or [M, {', '.join(map(str, p.shape))}] (one per model)")
    per_model = init_params[0].dim() == len(spec.params[0].shape) + 1
    if per_model and len(init_params[0]) != models:
        raise InputError(f"init_params: {len(init_params[0])} starting networks for {models} models")
    return per_model


def _start_rows(spec: WeightSpaceSpec, init_params: list[Tensor] | None, rows, models: int) -> list[Tensor] | None:
    """The starting weights of the models ``rows`` of a population of ``models``."""
    if init_params is None or not _per_model(spec, init_params, models):
        return init_params
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    return [p[idx] for p in init_params]


def train_population(spec: WeightSpaceSpec, task: TaskData, hparams: dict[str, list], seeds: list[int], *,
                     epochs: int, checkpoints: list[int], device: str | torch.device = "cpu",
                     eval_batch: int | None = None, compile: bool | tuple[bool, bool] = True,
                     progress: Callable[[float], None] | None = None,
                     init_seeds: list[int] | None = None,
                     init_params: list[Tensor] | None = None, workers: int | None = None) -> PopulationResult:
    """Train M models at once; return their weights and metrics at the ``checkpoints`` epochs.

    ``hparams`` maps each hyperparameter name of ``zoo.config.HPARAMS`` to M values; the models must
    share the structural hyperparameters (``zoo.config.STRUCTURAL``: activation, batch
    size); optimizers may differ. ``progress`` is called with the fraction of the chunk
    finished after each epoch. ``compile=False`` runs every step eagerly (a run too small to
    earn the compilation back: ``zoo.fused.run_worth_compiling``); otherwise steps on large enough
    populations are compiled on the CPU. ``init_seeds`` (default ``seeds``) seed the
    initialisations alone (a zoo of shared initialisations gives every model the same one);
    ``init_params`` (``spec.params`` order) replaces the random initialisation: one network every
    model starts from (fine-tuning from a stored network), or one per model (each tensor with a
    leading dimension of M). A ``task_variant`` hyperparameter
    (``zoo.tasks.VARIANTS``) gives each model its own view of the task: its training examples,
    labels and inputs, and the validation and test examples its metrics are computed on.

    ``compile`` may also be the (update, step) pair of ``compiled_parts``, decided for a larger
    population this one is part of. ``workers`` (default ``zoo.workers.population_workers``)
    splits the population across workers; the result does not depend on it beyond rounding.
    """
    M = len(seeds)
    variants = variant_views(task, hparams.get("task_variant"), M)
    # Rows ordered by optimizer kind (each kind updates a contiguous slice), then by subset size,
    # largest first: the models still inside their epoch at a step are then a prefix of each kind's
    # rows, and the step computes only those.
    order = sorted(range(M), key=lambda i: (hparams["optimizer"][i],
                                            -_subset_size(variants.pools[i], hparams["data_fraction"][i])))
    if order != list(range(M)):
        del variants  # the reordered call builds its own
        res = train_population(spec, task, {k: [v[i] for i in order] for k, v in hparams.items()},
                               [seeds[i] for i in order], epochs=epochs, checkpoints=checkpoints, device=device,
                               eval_batch=eval_batch, compile=compile, progress=progress,
                               init_seeds=None if init_seeds is None else [init_seeds[i] for i in order],
                               init_params=_start_rows(spec, init_params, order, M), workers=workers)
        return res.rows_in_order(order)
    device = torch.device(device)
    for name in STRUCTURAL:
        if len(set(hparams[name])) != 1:
            raise InputError(f"models of one population must share {name}, found {sorted(set(hparams[name]))}")
    bs = int(hparams["batch_size"][0])
    parts = compile if isinstance(compile, tuple) else compiled_parts(spec, M, bs, device, compile)
    if eval_batch is None:  # evaluation activations around 128 MiB (faster than 256 MiB or 32 MiB here)
        eval_batch = max(16, int(2 ** 27 / (4 * M * activation_elems(spec))))
    workers = population_workers(M, device, compiled=parts[1]) if workers is None else workers
    if workers > 1:  # every decision above is the whole population's: each worker's share runs as in it
        def train_rows(rows: np.ndarray, report: Callable[[float], None] | None) -> PopulationResult:
            return train_population(spec, task, {k: [v[i] for i in rows] for k, v in hparams.items()},
                                    [seeds[i] for i in rows], epochs=epochs, checkpoints=checkpoints,
                                    device=device, eval_batch=eval_batch, compile=parts, progress=report,
                                    init_seeds=None if init_seeds is None else [init_seeds[i] for i in rows],
                                    init_params=_start_rows(spec, init_params, rows, M), workers=1)
        return train_in_workers(train_rows, runs_of_equal_values(hparams["optimizer"]), workers, progress)
    if device.type == "cpu":
        keep_freed_memory()
    activation = hparams["activation"][0]
    task = variants.train.to(device)  # the training examples of every variant, stacked
    classification = task.kind == "classification"

    # Per-model initialisation, subset, labels: each model's streams (zoo.rng), all at once.
    if init_params is None:
        init = population_init(spec, seeds if init_seeds is None else init_seeds, hparams["init_scale"])
    else:
        per_model = _per_model(spec, init_params, M)
        init = [p.detach().to(torch.float32).clone() if per_model
                else p.detach().to(torch.float32).unsqueeze(0).repeat(M, *[1] * p.dim()) for p in init_params]
    params = [p.to(device).requires_grad_(True) for p in init]
    examples_cpu, sizes = training_subsets(seeds, variants.pools, hparams["data_fraction"], variants.offsets)
    labels = population_labels(seeds, task.y_train.cpu(), examples_cpu, sizes, hparams["label_noise"],
                               task.num_classes).to(device)
    own_examples = examples_cpu.to(device)

    opt = PopulationOptimizer(params, list(hparams["optimizer"]), torch.tensor(hparams["lr"]),
                              torch.tensor(hparams["weight_decay"]), torch.tensor(hparams["momentum"]))
    # the step and the update fused by torch.compile (zoo.fused) where it pays
    compile_update, compile_step = parts
    dropout = torch.tensor(hparams["dropout"], dtype=torch.float32, device=device)
    dropout = dropout if bool((dropout > 0).any()) else None
    keys = stream_keys(seeds, "dropout").to(device)
    hand_written = hand_written_activation(spec, activation)
    eval_fn = None
    if hand_written is not None:
        loss_name = "cross_entropy" if classification else "squared_error"
        _, step_fn = mlp_population_step(spec, hand_written, loss_name)
        _, eval_fn = mlp_population_step(spec, hand_written, loss_name + "_sums")
    positions = dropout_positions(spec, keys, bs) if dropout is not None and hand_written and not compile_step else None

    recorder = CheckpointRecorder(params, checkpoints, metric_names(task))
    alive = recorder.alive  # updated in place by recorder.mark_diverged

    def checkpoint(epoch: int) -> None:
        if epoch not in checkpoints:
            return
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in params]).all(0)
        recorder.mark_diverged(~finite, epoch)
        det = [p.detach() for p in params]
        opts = {"activation": activation, "batch": eval_batch, "fused": eval_fn, "compile": compile_step}
        train_split, *held_out = SPLITS  # train: each model's own examples and labels; the rest shared
        results = {train_split: evaluate_own_examples(spec, det, task, labels, own_examples, sizes, groups, **opts)}
        for split in held_out:
            results[split] = evaluate_views(spec, det, variants, split, device, **opts)
        recorder.record(epoch, {f"{split}_{key}": v for split, res in results.items() for key, v in res.items()})

    groups = runs_of_equal_values(hparams["optimizer"])  # row ranges of one optimizer kind, subset sizes sorted in each
    checkpoint(0)
    model_steps = -(-sizes // bs)
    steps = int(model_steps.max())
    # rows of each kind group still inside their epoch at each step (sizes are sorted, largest first)
    stepping = [[int((model_steps[a:b] > s).sum()) for s in range(steps)] for a, b in groups]
    with CoreShare() as share:
        for epoch in range(1, epochs + 1):
            order = epoch_orders(seeds, examples_cpu, sizes, epoch, steps * bs).to(device)
            for step in range(steps):
                share.adjust()  # threads for the cores other jobs leave free (zoo.threads)
                step_key = torch.tensor(step_key_of(epoch, step), dtype=torch.int32, device=device)
                batches = []  # per kind group still stepping: (group, rows, x, y, weight)
                for gi, ((a, _), counts) in enumerate(zip(groups, stepping)):
                    k = counts[step]
                    if k == 0:
                        continue
                    rows = slice(a, a + k)
                    idx = order[rows, step * bs:(step + 1) * bs]
                    valid = (idx >= 0).to(torch.float32)
                    safe = idx.clamp_min(0)
                    y = _batch_targets(labels, rows, safe)
                    weight = valid / valid.sum(1, keepdim=True).clamp_min(1) * alive[rows].unsqueeze(1)
                    batches.append((gi, rows, _rows(task.x_train, safe), y, weight))
                if not batches:
                    break
                if hand_written is None:
                    losses, all_grads = _autograd_losses_and_grads(spec, params, task, batches, activation, dropout,
                                                                   keys, step_key)
                for n, (gi, rows, x, y, weight) in enumerate(batches):
                    if hand_written is None:
                        loss, grads = losses[n], [g[rows] for g in all_grads]
                    else:
                        drop = None if dropout is None else Dropout(
                            1.0 - dropout[rows], keys[rows], step_key,
                            None if positions is None else [h[rows] for h in positions])
                        loss, grads = step_fn([p.detach()[rows] for p in params], x, y, weight, drop,
                                              compile=compile_step)
                    act = alive[rows].clone()
                    bad = ~torch.isfinite(loss) & act
                    if bool(bad.any()):
                        full = torch.zeros(M, dtype=torch.bool, device=device)
                        full[rows] = bad
                        recorder.mark_diverged(full, epoch)
                        act &= ~bad
                        grads = [torch.where(act.view(-1, *[1] * (g.dim() - 1)), g, 0.0) for g in grads]
                    opt.step_group(gi, grads, act, compile=compile_update)
            checkpoint(epoch)
            if progress is not None:
                progress(epoch / epochs)

    return recorder.result()
