"""Small architectures of a zoo: each builder returns the weight-space spec of one family.

Every architecture names its layers ``layers.0, layers.1, ...`` so that ``TorchNet(spec)``, a plain
``torch.nn`` module, has exactly the ``state_dict`` keys of the spec. The population forward for
all of them is ``zoo.functional.population_forward``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .functional import activation_fn
from .rng import stream_keys, uniform
from .weight_space import ACTIVATIONS, LayerSpec, WeightSpaceSpec
from .errors import InputError


def _check_activation(activation: str | None) -> None:
    if activation is not None and activation not in ACTIVATIONS:
        raise InputError(f"architecture.activation: unknown activation {activation!r}; "
                         f"expected one of {list(ACTIVATIONS)}")


def _check_sizes(field: str, sizes) -> list[int]:
    sizes = list(sizes)
    if not all(isinstance(s, int) and s > 0 for s in sizes):
        raise InputError(f"architecture.{field}: expected a list of positive integers, found {sizes!r}")
    return sizes


def mlp(input_shape: tuple[int, ...], output_dim: int, hidden: list[int] = (32, 32),
        activation: str | None = "relu") -> WeightSpaceSpec:
    """Fully connected network on flattened inputs."""
    _check_activation(activation)
    hidden = _check_sizes("hidden", hidden)
    d_in = 1
    for s in input_shape:
        d_in *= s
    sizes = [d_in, *hidden, output_dim]
    names = ["input", *[f"hidden{i}" for i in range(len(hidden))], "output"]
    layers = tuple(
        LayerSpec(name=f"layers.{i}", kind="linear", in_group=names[i], out_group=names[i + 1],
                  in_features=sizes[i], out_features=sizes[i + 1])
        for i in range(len(sizes) - 1)
    )
    return WeightSpaceSpec("mlp", layers, dict(zip(names, sizes)), tuple(names[1:-1]),
                           tuple(input_shape), activation)


def cnn(input_shape: tuple[int, ...], output_dim: int, channels: list[int] = (8, 16), kernel: int = 3,
        stride: int = 2, padding: int | None = None, activation: str | None = "relu") -> WeightSpaceSpec:
    """Convolutions (1-D or 2-D by the input's rank), global average pooling, a linear head."""
    _check_activation(activation)
    channels = _check_sizes("channels", channels)
    if len(input_shape) not in (2, 3):
        raise InputError(f"architecture cnn needs channel-first inputs (C, L) or (C, H, W), found "
                         f"{list(input_shape)}: set the task's layout to 'image'")
    kind = "conv1d" if len(input_shape) == 2 else "conv2d"
    ksz = (kernel,) * (len(input_shape) - 1)
    pad = kernel // 2 if padding is None else padding
    sizes = [input_shape[0], *channels]
    names = ["input", *[f"channel{i}" for i in range(len(channels))], "output"]
    layers = [
        LayerSpec(name=f"layers.{i}", kind=kind, in_group=names[i], out_group=names[i + 1],
                  in_features=sizes[i], out_features=sizes[i + 1], kernel=ksz, stride=stride, padding=pad)
        for i in range(len(channels))
    ]
    layers.append(LayerSpec(name=f"layers.{len(channels)}", kind="linear", in_group=names[-2],
                            out_group="output", in_features=channels[-1], out_features=output_dim))
    groups = dict(zip(names[:-1], sizes))
    groups["output"] = output_dim
    return WeightSpaceSpec("cnn", tuple(layers), groups, tuple(names[1:-1]), tuple(input_shape), activation)


def siren(input_shape: tuple[int, ...], output_dim: int, hidden: list[int] = (32, 32),
          omega_0: float = 30.0) -> WeightSpaceSpec:
    """SIREN (Sitzmann et al. 2020): an MLP with sin(omega_0 * x) activations."""
    spec = mlp(input_shape, output_dim, hidden, activation="sine")
    return WeightSpaceSpec("siren", spec.layers, spec.groups, spec.permutable, spec.input_shape,
                           "sine", {"omega_0": float(omega_0)})


ARCHITECTURES = {"mlp": mlp, "cnn": cnn, "siren": siren}


def build_spec(name: str, input_shape: tuple[int, ...], output_dim: int, **options) -> WeightSpaceSpec:
    """The weight space of architecture ``name`` for a task's input shape and output size."""
    if name not in ARCHITECTURES:
        raise InputError(f"architecture.name: unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[name](tuple(input_shape), output_dim, **options)
    except TypeError as e:
        raise InputError(f"architecture {name!r}: {e}") from None


INIT_SCHEMES = ("standard", "dwsnets")


def init_bounds(spec: WeightSpaceSpec, scheme: str = "standard") -> list[float]:
    """Per parameter (``spec.params`` order), the bound b of its uniform init U(-b, b) at
    ``init_scale`` 1.

    ``standard``: PyTorch's default 1/sqrt(fan_in) for weights and biases alike; for SIREN
    (Sitzmann et al. 2020) 1/n for the first layer's weights and sqrt(6/n)/omega_0 for later ones.
    ``dwsnets`` (SIREN only): the sine layers of Navon et al.'s INR datasets (DWSNets ``nn/inr.py``):
    sqrt(6/n)/omega_0 for every sine layer's weights, the first included, and zero sine-layer
    biases. The linear output layer keeps the standard SIREN init (weights sqrt(6/n)/omega_0, bias
    PyTorch's default), where DWSNets' output is a PyTorch-default ``nn.Linear``."""
    if scheme not in INIT_SCHEMES:
        raise InputError(f"init.scheme: expected one of {list(INIT_SCHEMES)}, found {scheme!r}")
    siren = spec.architecture == "siren"
    if scheme == "dwsnets" and not siren:
        raise InputError(f"init.scheme 'dwsnets' is a SIREN initialisation; the architecture is {spec.architecture!r}")
    w0 = float(spec.options.get("omega_0", 30.0))
    out = []
    for i, layer in enumerate(spec.layers):
        fan_in = layer.in_features * math.prod(layer.kernel)
        default = 1.0 / math.sqrt(fan_in)
        if not siren:
            out.append(default)
        elif i == 0 and scheme == "standard":
            out.append(1.0 / fan_in)
        else:
            out.append(math.sqrt(6.0 / fan_in) / w0)
        if layer.bias:
            sine = siren and i < len(spec.layers) - 1
            out.append(0.0 if scheme == "dwsnets" and sine else default)
    return out


def population_init(spec: WeightSpaceSpec, seeds: Sequence[int], init_scales: Sequence[float],
                    scheme: str = "standard") -> list[Tensor]:
    """The initial parameters [M, *shape] of M networks: U(-b, b) (``init_bounds``) times each
    one's init scale, drawn from the "init" stream of its seed (``zoo.rng``), parameter k from
    stream k. Equal seeds give equal initialisations (a zoo with ``init.seeds: shared``)."""
    keys = stream_keys(seeds, "init")
    scales = torch.tensor([float(c) for c in init_scales], dtype=torch.float32).view(-1, 1)
    out = []
    for k, (param, bound) in enumerate(zip(spec.params, init_bounds(spec, scheme))):
        u = uniform(keys, param.numel, stream=k)
        out.append(((u * 2 - 1) * (bound * scales)).view(len(keys), *param.shape))
    return out


class TorchNet(nn.Module):
    """A plain ``torch.nn`` network of a weight space: the reference the population must match,
    and what a user loads a zoo checkpoint's ``state_dict`` into."""

    def __init__(self, spec: WeightSpaceSpec, activation: str | None = None, dropout: float = 0.0):
        super().__init__()
        self.spec = spec
        self.act = activation_fn(activation or spec.activation, spec.options)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        mods = []
        for layer in spec.layers:
            if layer.kind == "linear":
                mods.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
            else:
                conv = nn.Conv1d if layer.kind == "conv1d" else nn.Conv2d
                mods.append(conv(layer.in_features, layer.out_features, layer.kernel, stride=layer.stride,
                                 padding=layer.padding, bias=layer.bias))
        self.layers = nn.ModuleList(mods)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        n = len(self.layers)
        for i, (layer, mod) in enumerate(zip(self.spec.layers, self.layers)):
            if layer.kind == "linear":
                if h.dim() > 2:
                    h = h.flatten(2).mean(-1) if i > 0 and self.spec.layers[i - 1].kind != "linear" else h.flatten(1)
            h = mod(h)
            if i < n - 1:
                h = self.dropout(self.act(h))
        return h
