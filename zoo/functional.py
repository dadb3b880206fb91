"""Functional forward of a population: B networks of one weight space on a batch of inputs, one call.

Parameters come stacked with a leading population axis, in the order of ``spec.params``
(``[M, out, in]`` weights, ``[M, out]`` biases, ``[M, out, in, *kernel]`` for convolutions).
Linear layers are batched matmuls; convolutions are one grouped convolution with ``groups=M``.
Convolutions are followed by global average pooling before the first linear layer.

The same function serves population training, evaluating stored or generated weights, and
hypernetworks' functional losses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .weight_space import ACTIVATIONS, WeightSpaceSpec


def activation_fn(name: str, options: dict | None = None):
    """The elementwise activation called ``name`` (SIREN's sine uses ``omega_0`` from options)."""
    options = options or {}
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    if name == "gelu":
        return F.gelu
    if name == "leaky_relu":
        return lambda h: F.leaky_relu(h, 0.01)
    if name == "identity":
        return lambda h: h
    if name == "sine":
        w0 = float(options.get("omega_0", 1.0))
        return (lambda h: torch.sin(w0 * h)) if w0 != 1.0 else torch.sin
    raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}")


def _dropout(h: Tensor, p: Tensor | None, model_axis: int, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout with a per-model rate ``p`` [M] applied along ``model_axis`` of ``h``.

    The uniform draws are 16-bit words cut from 64-bit random integers (three per integer: the top
    word has a constant sign bit), about 4x cheaper than ``torch.rand``; the keep probability is
    resolved to 1/65536."""
    if p is None:
        return h
    shape = [1] * h.dim()
    shape[model_axis] = -1
    keep = (1.0 - p).view(shape)
    n = h.numel()
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=h.device).random_(generator=generator)
    u = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n].view(h.shape)
    threshold = (keep * 65536.0 - 32768.0).round()
    return h * ((u < threshold).to(h.dtype) / keep.clamp_min(1e-12))


def population_forward(spec: WeightSpaceSpec, params: list[Tensor], x: Tensor, *,
                       activation: str | list[str] | None = None, dropout: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """Outputs ``[M, B, out]`` of M networks.

    ``x`` is either shared by all models, ``[B, *input_shape]``, or per model,
    ``[M, B, *input_shape]``. ``dropout`` is a per-model rate ``[M]`` (training only; ``None`` in
    evaluation). ``activation`` overrides ``spec.activation`` (needed when it varies per model):
    one name for all networks, or one per network (each group of equal names runs as one population).
    """
    if isinstance(activation, (list, tuple)):
        return _forward_per_activation(spec, params, x, list(activation), dropout, generator)
    act_name = activation or spec.activation
    if act_name is None:
        raise ValueError("this weight space has a per-model activation: pass activation=")
    act = activation_fn(act_name, spec.options)
    M = params[0].shape[0]
    ndim_in = len(spec.input_shape)
    shared = x.dim() == ndim_in + 1
    if not shared and (x.dim() != ndim_in + 2 or x.shape[0] != M):
        raise ValueError(f"input of shape {list(x.shape)} fits neither shared [B, {list(spec.input_shape)}] "
                         f"nor per-model [{M}, B, {list(spec.input_shape)}] inputs")
    if dropout is not None and not torch.is_tensor(dropout):
        dropout = torch.full((M,), float(dropout), device=x.device)
    if dropout is not None and not bool((dropout > 0).any()):
        dropout = None

    h = x
    it = iter(params)
    n_layers = len(spec.layers)
    conv_mode = False  # layout [B, M*C, *S] while inside the convolutional stack
    for i, layer in enumerate(spec.layers):
        w = next(it)
        b = next(it) if layer.bias else None
        last = i == n_layers - 1
        if layer.kind in ("conv1d", "conv2d"):
            if not conv_mode:
                if shared:
                    h = h.repeat(1, M, *([1] * (h.dim() - 2)))  # [B, M*C, *S]
                else:
                    h = h.transpose(0, 1).reshape(h.shape[1], M * h.shape[2], *h.shape[3:])
                conv_mode = True
            conv = F.conv1d if layer.kind == "conv1d" else F.conv2d
            h = conv(h, w.reshape(M * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1),
                     stride=layer.stride, padding=layer.padding, groups=M)
            if not last:
                h = act(h)
                if dropout is not None:
                    B = h.shape[0]
                    h = _dropout(h.view(B, M, -1, *h.shape[2:]), dropout, 1, generator).view(h.shape)
            continue
        if conv_mode:  # global average pooling, back to [M, B, C]
            B = h.shape[0]
            h = h.view(B, M, h.shape[1] // M, -1).mean(-1).transpose(0, 1)
            conv_mode = False
            shared = False
        elif h.dim() > (2 if shared else 3):
            h = h.flatten(-ndim_in)
        if shared:
            h = torch.matmul(h, w.transpose(1, 2))
            if b is not None:
                h = h + b.unsqueeze(1)
            shared = False
        elif b is not None:
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            h = torch.bmm(h, w.transpose(1, 2))
        if not last:
            h = act(h)
            if dropout is not None:
                h = _dropout(h, dropout, 0, generator)
    return h


def _forward_per_activation(spec: WeightSpaceSpec, params: list[Tensor], x: Tensor, names: list[str],
                            dropout: Tensor | None, generator: torch.Generator | None) -> Tensor:
    M = params[0].shape[0]
    if len(names) != M:
        raise ValueError(f"activation: {len(names)} names for {M} networks")
    out = None
    for act in sorted(set(names)):
        rows = torch.tensor([i for i, a in enumerate(names) if a == act], device=params[0].device)
        xs = x if x.dim() == len(spec.input_shape) + 1 else x[rows]
        part = population_forward(spec, [p[rows] for p in params], xs, activation=act,
                                  dropout=dropout[rows] if torch.is_tensor(dropout) else dropout,
                                  generator=generator)
        if out is None:
            out = part.new_empty(M, *part.shape[1:])
        out[rows] = part
    return out


def default_init(spec: WeightSpaceSpec, generator: torch.Generator, init_scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """One network's parameters with PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    for weights and biases alike, times ``init_scale``. SIREN uses its own init (``siren_init``)."""
    out = []
    for layer in spec.layers:
        fan_in = layer.in_features * math.prod(layer.kernel)
        bound = init_scale / math.sqrt(fan_in)
        shapes = [layer.weight.shape] + ([layer.bias_param.shape] if layer.bias else [])
        for shape in shapes:
            out.append((torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound)
    return out


def siren_init(spec: WeightSpaceSpec, generator: torch.Generator, init_scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """SIREN init (Sitzmann et al. 2020): first layer U(-1/n, 1/n), later layers
    U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0); biases U(-1/sqrt(n), 1/sqrt(n)) as PyTorch's default."""
    w0 = float(spec.options.get("omega_0", 30.0))
    out = []
    for i, layer in enumerate(spec.layers):
        n = layer.in_features
        bound = 1.0 / n if i == 0 else math.sqrt(6.0 / n) / w0
        out.append((torch.rand(layer.weight.shape, generator=generator, dtype=dtype) * 2 - 1) * bound * init_scale)
        if layer.bias:
            bb = 1.0 / math.sqrt(n)
            out.append((torch.rand(layer.bias_param.shape, generator=generator, dtype=dtype) * 2 - 1) * bb * init_scale)
    return out
