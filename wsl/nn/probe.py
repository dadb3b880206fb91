"""Probing: encode a network by what it computes on a set of learned probe inputs.

Each network of the batch is run (``zoo.functional.population_forward``) on K probe inputs shared
by all networks; its K outputs, flattened, go through an MLP. A network's function is unchanged by
every symmetry of its weights (neuron permutations, ReLU rescaling, sine sign flips), so the
encoder is invariant to all of them exactly, not only to the ones an architecture builds in.
The probes are parameters trained with the head (Kahana et al. 2024, "Deep Linear Probe
Generators for Weight Space Learning", generate them from latent codes through a deep linear
network; ``generator_layers`` > 0 does the same).

For INRs the probes start on a regular grid over [-1, 1]^d, so the encoder begins as "render the
INR at K points and classify the rendering"; for networks on standardized data they start as
N(0, 1) draws; with ``init: data`` they start at K training inputs of the zoo's task (``task``,
``task_options``: its inputs only, never its labels), where the networks' functions differ most. The encoder needs raw weights (it runs the network), so it sets ``raw_weights`` and
the predictor skips weight normalization for it; where the activation varies per network, the
batch names each one (``WeightBatch.activation``). Outputs are squashed with asinh (a zoo's
blown-up networks answer with logits of 1e5); ``weight_stats`` adds StatNN's per-layer weight
statistics, which the function alone does not show (e.g. the weight decay that shaped it);
``softmax`` adds a classifier's class probabilities at each probe beside its logits.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoo.functional import population_forward
from zoo.tasks import load_task
from zoo.weight_space import WeightSpaceSpec

from wsl.weights.statistics import STATISTICS, weight_statistics
from wsl.nn.base import Encoder, mlp
from wsl.weights import WeightBatch
from zoo.errors import InputError


def probe_grid(k: int, d: int) -> Tensor | None:
    """A regular grid of about ``k`` points over [-1, 1]^d (``None`` for d > 3)."""
    if d > 3:
        return None
    n = max(2, round(k ** (1.0 / d)))
    axes = [torch.linspace(-1.0, 1.0, n)] * d
    return torch.stack([m.reshape(-1) for m in torch.meshgrid(*axes, indexing="ij")], dim=-1)


def _task_inputs(spec: WeightSpaceSpec, k: int, task: str | None, options: dict) -> Tensor:
    """[k, d] training inputs of a zoo task (a seeded draw): probes that start on the data the
    networks were trained for, not off it. Its labels are never read."""
    if task is None:
        raise InputError("probe init 'data' needs the task whose training inputs the probes start at "
                         "(encoder_kwargs task: NAME, as in the zoo config, and task_options if any)")
    data = load_task(task, **options)
    if tuple(data.input_shape) != tuple(spec.input_shape):
        raise InputError(f"probe init 'data': task {task!r} has inputs of shape {list(data.input_shape)}, the "
                         f"weight space's networks take {list(spec.input_shape)}")
    pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:k]
    return data.x_train[pick].reshape(len(pick), -1).float()


class ProbeEncoder(Encoder):
    """K learned probe inputs -> the network's outputs [B, K, out] -> BatchNorm -> MLP."""

    raw_weights = True

    def __init__(self, spec: WeightSpaceSpec, out_dim: int, probes: int = 256, init: str = "auto",
                 learn_probes: bool = True, generator_layers: int = 0, hidden: int = 256, layers: int = 3,
                 dropout: float = 0.0, squash: bool = True, weight_stats: bool = False, softmax: bool = False,
                 task: str | None = None, task_options: dict | None = None):
        super().__init__(spec, out_dim)
        if init not in ("auto", "grid", "normal", "data"):
            raise InputError(f"probe init must be 'auto', 'grid', 'normal' or 'data', found {init!r}")
        d = math.prod(spec.input_shape)
        grid = probe_grid(probes, d) if init in ("auto", "grid") else None
        if init == "grid" and grid is None:
            raise InputError(f"probe init 'grid' needs an input of at most 3 dimensions, found {d}")
        if init == "data":
            start = _task_inputs(spec, probes, task, task_options or {})
        else:
            start = grid if grid is not None else torch.randn(probes, d, generator=torch.Generator().manual_seed(0))
        self.num_probes = start.shape[0]
        self.latent = nn.Parameter(start.clone(), requires_grad=learn_probes)
        self.generator = nn.Identity()
        if generator_layers > 0:  # probes = latent codes through a deep linear network
            self.generator = nn.Sequential(*[nn.Linear(d, d) for _ in range(generator_layers)])
            for lin in self.generator:  # start as the identity map
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)
                lin.requires_grad_(learn_probes)
        if softmax and spec.layers[-1].out_features < 2:
            raise InputError(f"probe softmax: class probabilities need networks with several outputs (classifiers); "
                             f"these have {spec.layers[-1].out_features}")
        self.squash, self.weight_stats, self.softmax = squash, weight_stats, softmax
        n_features = self.num_probes * spec.layers[-1].out_features * (2 if softmax else 1)
        if weight_stats:
            n_features += len(STATISTICS) * len(spec.params)
        self.norm = nn.BatchNorm1d(n_features)
        self.net = mlp(n_features, hidden, out_dim, layers, dropout)

    def probe_inputs(self) -> Tensor:
        """The current probe inputs [K, *input_shape]."""
        return self.generator(self.latent).view(self.num_probes, *self.spec.input_shape)

    def forward(self, wb: WeightBatch) -> Tensor:
        params = [p.to(self.latent.dtype) for p in wb.params()]
        x = self.probe_inputs()
        if self.spec.activation is None and wb.activation is None:
            raise InputError("the probe encoder runs the networks, and this weight space's activation varies per "
                             "network: the batch must say which (WeightBatch.activation; the zoo's "
                             "hparams.activation, or `wsl predict --activation` for checkpoint files)")
        act = None if self.spec.activation is not None else wb.activation
        out = population_forward(self.spec, params, x, activation=act)  # [B, K, out]
        feats = out.flatten(1)
        if self.squash:  # blown-up networks give outputs of 1e5 and more; asinh keeps them in range
            feats = torch.asinh(feats)
        if self.softmax:  # a classifier's class probabilities at each probe, beside its logits
            feats = torch.cat([feats, torch.softmax(out.float(), -1).to(feats.dtype).flatten(1)], 1)
        if self.weight_stats:
            feats = torch.cat([feats, torch.asinh(weight_statistics(self.spec, wb.to_dict()).to(feats.dtype))], 1)
        return self.net(self.norm(feats))
