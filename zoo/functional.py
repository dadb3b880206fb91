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

from .rng import int32, mix
from .weight_space import ACTIVATIONS, WeightSpaceSpec
from .errors import InputError


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
    raise InputError(f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}")


def position_hashes(shape: tuple[int, ...], model_axis: int, keys: Tensor) -> Tensor:
    """The first round of the dropout hash for every element of an activation of ``shape``
    (int32, ``shape``): ``mix(position ^ keys[m])``. It depends on neither the step nor the layer,
    so a trainer computes it once per run and passes it to ``dropout_mask`` (``positions``),
    which then hashes one round per step instead of two."""
    M = shape[model_axis]
    A, R = math.prod(shape[:model_axis]), math.prod(shape[model_axis + 1:])
    ctr = (torch.arange(A, dtype=torch.int32, device=keys.device) * R).view(A, 1, 1) \
        + torch.arange(R, dtype=torch.int32, device=keys.device).view(1, 1, R)
    return mix(ctr ^ keys.view(1, M, 1)).view(shape)


def dropout_mask(shape: tuple[int, ...], model_axis: int, keep: Tensor, keys: Tensor, step: Tensor,
                 layer: int, dtype: torch.dtype = torch.float32, positions: Tensor | None = None) -> Tensor:
    """Inverted-dropout multipliers (0 or 1/keep) for an activation of ``shape`` whose ``model_axis``
    holds M models: model m keeps each element with probability ``keep[m]`` (resolved to 1/65536).

    The uniform draws are a counter-based hash of (the model's key ``keys[m]`` (int32), the step
    key ``step`` (int32 scalar tensor), ``layer``, the element's position within model m's
    activation), not a random stream: a model's masks do not depend on the other models of its
    population, the eager and the compiled step draw the same masks, and inside a compiled step
    the draws fuse into the activation's loop (10x cheaper than ``torch.rand`` here). The draw is
    the upper half of ``mix(mix(position ^ key) ^ round_key)``; ``positions`` (``position_hashes``)
    is its inner round, precomputed; the outer round stops before its last xor, which changes
    only the lower half. Integer hashing is exact: every route gives the same masks."""
    M = shape[model_axis]
    A, R = math.prod(shape[:model_axis]), math.prod(shape[model_axis + 1:])
    if positions is None:
        positions = position_hashes(shape, model_axis, keys)
    round_key = mix(mix(keys ^ int32((layer + 1) * 0x9E3779B9)) ^ step)  # [M]
    # mix(x) up to its last xor, every pass in place or into a buffer: ATen's in-place and out=
    # integer kernels run several times faster here than the ops that return fresh tensors
    x = torch.empty((A, M, R), dtype=torch.int32, device=keys.device)
    torch.bitwise_xor(positions.view(A, M, R), round_key.view(1, M, 1), out=x)
    t = torch.empty_like(x)
    for shift, low_bits, factor in ((16, 0xFFFF, 0x7FEB352D), (15, 0x1FFFF, -0x7B935975)):
        torch.bitwise_right_shift(x, shift, out=t)
        x ^= t.bitwise_and_(low_bits)
        x *= factor
    torch.bitwise_right_shift(x, 16, out=t)
    t &= 0xFFFF  # the upper half of the hash: 16 random bits
    threshold = (keep * 65536.0).round().to(torch.int32).view(1, M, 1)
    scale = (1.0 / keep.clamp_min(1e-12).to(dtype)).view(1, M, 1)
    if dtype.itemsize != x.dtype.itemsize:
        return ((t < threshold).to(dtype) * scale).view(shape)
    return torch.lt(t, threshold, out=x.view(dtype)).mul_(scale).view(shape)  # 1.0 or 0.0, times 1/keep


def _dropout(h: Tensor, p: Tensor | None, model_axis: int, keys: Tensor, step: Tensor, layer: int) -> Tensor:
    if p is None:
        return h
    return h * dropout_mask(tuple(h.shape), model_axis, 1.0 - p, keys, step, layer, h.dtype)


def population_forward(spec: WeightSpaceSpec, params: list[Tensor], x: Tensor, *,
                       activation: str | list[str] | None = None, dropout: Tensor | float | None = None,
                       dropout_keys: Tensor | None = None, dropout_step: int | Tensor = 0,
                       hidden: list[Tensor] | None = None) -> Tensor:
    """Outputs ``[M, B, out]`` of M networks.

    ``x`` is either shared by all models, ``[B, *input_shape]``, or per model,
    ``[M, B, *input_shape]``. ``dropout`` is a per-model rate ``[M]`` (training only; ``None`` in
    evaluation); its masks (``dropout_mask``) come from the per-model int32 ``dropout_keys`` [M]
    (default: drawn from torch's global generator) and ``dropout_step``. ``activation`` overrides
    ``spec.activation`` (needed when it varies per model): one name for all networks, or one per
    network (each group of equal names runs as one population).

    ``hidden``: a list that receives every hidden layer's output (after its activation and
    dropout), in layer order: ``[M, B, out]`` for a linear layer, ``[M, B, C, *S]`` for a
    convolution (before pooling). Representation similarity (``wsl.landscape.similarity``) reads it.
    """
    if isinstance(activation, (list, tuple)):
        return _forward_per_activation(spec, params, x, list(activation), dropout, dropout_keys, dropout_step,
                                       hidden)
    act_name = activation or spec.activation
    if act_name is None:
        raise InputError("this weight space has a per-model activation: pass activation=")
    act = activation_fn(act_name, spec.options)
    M = params[0].shape[0]
    ndim_in = len(spec.input_shape)
    shared = x.dim() == ndim_in + 1
    if not shared and (x.dim() != ndim_in + 2 or x.shape[0] != M):
        raise InputError(f"input of shape {list(x.shape)} fits neither shared [B, {list(spec.input_shape)}] "
                         f"nor per-model [{M}, B, {list(spec.input_shape)}] inputs")
    if dropout is not None and not torch.is_tensor(dropout):
        dropout = torch.full((M,), float(dropout), device=x.device)
    if dropout is not None and not bool((dropout > 0).any()):
        dropout = None
    if dropout is not None:
        if dropout_keys is None:
            dropout_keys = torch.randint(-2 ** 31, 2 ** 31 - 1, (M,), dtype=torch.int32)
        dropout_keys = torch.as_tensor(dropout_keys, dtype=torch.int32, device=x.device)
        dropout_step = torch.as_tensor(dropout_step, dtype=torch.int32, device=x.device)

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
                    h = _dropout(h.view(B, M, -1, *h.shape[2:]), dropout, 1, dropout_keys, dropout_step, i).view(h.shape)
                if hidden is not None:
                    hidden.append(h.view(h.shape[0], M, -1, *h.shape[2:]).transpose(0, 1))
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
                h = _dropout(h, dropout, 0, dropout_keys, dropout_step, i)
            if hidden is not None:
                hidden.append(h)
    return h


def _forward_per_activation(spec: WeightSpaceSpec, params: list[Tensor], x: Tensor, names: list[str],
                            dropout: Tensor | float | None, keys: Tensor | None, step: int | Tensor,
                            hidden: list[Tensor] | None = None) -> Tensor:
    M = params[0].shape[0]
    if len(names) != M:
        raise InputError(f"activation: {len(names)} names for {M} networks")
    out, hidden_out = None, None
    for act in sorted(set(names)):
        rows = torch.tensor([i for i, a in enumerate(names) if a == act], device=params[0].device)
        xs = x if x.dim() == len(spec.input_shape) + 1 else x[rows]
        part_hidden = [] if hidden is not None else None
        part = population_forward(spec, [p[rows] for p in params], xs, activation=act,
                                  dropout=dropout[rows] if torch.is_tensor(dropout) else dropout,
                                  dropout_keys=None if keys is None else keys[rows], dropout_step=step,
                                  hidden=part_hidden)
        if out is None:
            out = part.new_empty(M, *part.shape[1:])
            if hidden is not None:
                hidden_out = [h.new_empty(M, *h.shape[1:]) for h in part_hidden]
        out[rows] = part
        if hidden is not None:
            for dst, h in zip(hidden_out, part_hidden):
                dst[rows] = h
    if hidden is not None:
        hidden.extend(hidden_out)
    return out
