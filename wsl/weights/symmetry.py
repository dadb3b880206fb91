"""Symmetries of a weight space: transformations of the weights that leave the network function unchanged.

Two families act on the hidden neurons (``spec.permutable`` groups, channels for a CNN):

- **permutations**: reorder the neurons of a group consistently on every parameter axis labelled with
  that group (the rows of the layer producing it, the input axis of the layer consuming it);
- **scalings**: multiply a hidden neuron's incoming weights and bias by ``s`` and its outgoing weights
  by ``1/s``. This is a symmetry only when the activation commutes with the scaling:
  ``act(s h) = s act(h)`` for every ``s > 0`` (relu, leaky_relu, identity: "positive") or for
  ``s = -1`` (odd activations, tanh and sine: "sign"). Sigmoid and gelu have neither.

Everything is vectorized over the batch: each network gets its own permutation or scale.
Learning on weights uses these to augment data and to canonicalize (``wsl.weights.align``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.weight_space import ACTIVATIONS, WeightSpaceSpec

from wsl.weights import WeightBatch, WeightFeatures
from zoo.errors import InputError

_POSITIVE = ("relu", "leaky_relu", "identity")
_SIGN = ("tanh", "sine")
_NONE = ("sigmoid", "gelu")


def _check_groups(spec: WeightSpaceSpec, groups, what: str) -> None:
    """Only hidden groups may be transformed: acting on input or output neurons changes the function."""
    for g in groups:
        if g not in spec.permutable:
            raise InputError(f"{what}: group {g!r} is not a hidden (permutable) group of weight space "
                             f"{spec.architecture!r}; expected a subset of {list(spec.permutable)}")


def _gen_device(generator: torch.Generator | None, device) -> torch.device | str | None:
    """Random numbers are drawn on the generator's device (so a seeded CPU generator gives the same
    values whatever the weights' device) and moved afterwards."""
    return generator.device if generator is not None else device


def random_permutations(spec: WeightSpaceSpec, batch_size: int, generator: torch.Generator | None = None,
                        device=None) -> dict[str, Tensor]:
    """An independent uniform random permutation of every hidden group for each network: group -> [B, n]."""
    out = {}
    for g in spec.permutable:
        u = torch.rand(batch_size, spec.groups[g], generator=generator, device=_gen_device(generator, device))
        out[g] = u.argsort(dim=1).to(device if device is not None else u.device)
    return out


def invert_permutations(perms: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse permutations: ``permute(permute(wb, p), invert_permutations(p))`` is ``wb``."""
    return {g: p.argsort(dim=1) for g, p in perms.items()}


def _gather(t: Tensor, index: Tensor, axis: int) -> Tensor:
    """``out[b, ..., j, ...] = t[b, ..., index[b, j], ...]`` along ``axis`` (per-network indices [B, n])."""
    shape = [1] * t.dim()
    shape[0], shape[axis] = index.shape
    return t.gather(axis, index.to(t.device).view(shape).expand(*t.shape[:axis], index.shape[1], *t.shape[axis + 1:]))


def permute(wb: WeightBatch | WeightFeatures, perms: dict[str, Tensor]) -> WeightBatch | WeightFeatures:
    """Permute hidden neurons: new neuron ``j`` of group ``g`` is old neuron ``perms[g][b, j]``.

    Applied on every axis labelled ``g``: a layer's output rows (weights axis 1, bias axis 0 per
    network) when ``out_group == g``, its input columns (weights axis 2) when ``in_group == g``.
    Groups missing from ``perms`` stay as they are. Weight features (``WeightFeatures``, a channel
    axis after the batch axis) are permuted the same way, every channel alike: that is how an
    equivariant layer's output must move when its input network's neurons are permuted.
    """
    _check_groups(wb.spec, perms, "permute")
    B = len(wb)
    for g, p in perms.items():
        if tuple(p.shape) != (B, wb.spec.groups[g]):
            raise InputError(f"permute: perms[{g!r}] must be [{B}, {wb.spec.groups[g]}], found {list(p.shape)}")
    axis = 2 if isinstance(wb, WeightFeatures) else 1  # the neuron-out axis; neuron-in follows it
    weights, biases = [], []
    for layer, w, b in zip(wb.spec.layers, wb.weights, wb.biases):
        if layer.out_group in perms:
            w = _gather(w, perms[layer.out_group], axis)
            b = None if b is None else _gather(b, perms[layer.out_group], axis)
        if layer.in_group in perms:
            w = _gather(w, perms[layer.in_group], axis + 1)
        weights.append(w)
        biases.append(b)
    if isinstance(wb, WeightFeatures):
        return WeightFeatures(wb.spec, weights, biases)
    return WeightBatch(wb.spec, weights, biases, wb.activation)


def scaling_symmetry(activation: str) -> str | None:
    """Which scaling leaves ``activation`` equivariant: ``"positive"`` (act(s h) = s act(h), s > 0),
    ``"sign"`` (odd: act(-h) = -act(h)) or ``None`` (no scaling symmetry)."""
    if activation in _POSITIVE:
        return "positive"
    if activation in _SIGN:
        return "sign"
    if activation in _NONE:
        return None
    raise InputError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")


def _per_network_activations(spec: WeightSpaceSpec, batch_size: int, activation) -> list[str]:
    if activation is None:
        activation = spec.activation
    if activation is None:
        raise InputError(f"weight space {spec.architecture!r} has a per-model activation: pass the "
                         "activation of every network (a list of strings)")
    if isinstance(activation, str):
        return [activation] * batch_size
    activation = list(activation)
    if len(activation) != batch_size:
        raise InputError(f"expected {batch_size} activations (one per network), found {len(activation)}")
    return activation


def random_scales(spec: WeightSpaceSpec, batch_size: int, activation: str | list[str] | None = None,
                  generator: torch.Generator | None = None, log_range: tuple[float, float] = (-1.0, 1.0),
                  device=None, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Random scales per hidden group, group -> [B, n], matching each network's activation.

    "positive": ``exp(U(log_range))``; "sign": ``±1`` with equal odds; no symmetry: ones.
    ``activation`` is one name for all networks, a list with one name per network (zoos whose
    activation varies per model), or ``None`` for ``spec.activation``. Both kinds of values are drawn
    for every network, so a network's scales do not depend on the activations of the others.
    """
    kinds = [scaling_symmetry(a) for a in _per_network_activations(spec, batch_size, activation)]
    gdev = _gen_device(generator, device)
    positive = torch.tensor([k == "positive" for k in kinds], device=gdev).unsqueeze(1)
    sign = torch.tensor([k == "sign" for k in kinds], device=gdev).unsqueeze(1)
    lo, hi = log_range
    out = {}
    for g in spec.permutable:
        n = spec.groups[g]
        log_s = lo + (hi - lo) * torch.rand(batch_size, n, generator=generator, device=gdev, dtype=torch.float64)
        flips = torch.randint(0, 2, (batch_size, n), generator=generator, device=gdev).double() * 2 - 1
        s = torch.where(positive, log_s.exp(), torch.where(sign, flips, torch.ones_like(flips)))
        out[g] = s.to(device=device if device is not None else gdev, dtype=dtype)
    return out


def scale(wb: WeightBatch, scales: dict[str, Tensor]) -> WeightBatch:
    """Scale hidden neurons: neuron ``j`` of group ``g`` gets incoming weights (its rows, every input
    and kernel tap) and bias times ``s[b, j]``, outgoing weights (the input axis labelled ``g`` of the
    consuming layer, a conv's in-channels or the linear head after pooling) times ``1 / s[b, j]``."""
    _check_groups(wb.spec, scales, "scale")
    weights, biases = [], []
    for layer, w, b in zip(wb.spec.layers, wb.weights, wb.biases):
        extra = [1] * (w.dim() - 3)  # kernel taps
        if layer.out_group in scales:
            s = scales[layer.out_group].to(device=w.device, dtype=w.dtype)
            w = w * s.view(s.shape[0], s.shape[1], 1, *extra)
            b = None if b is None else b * s
        if layer.in_group in scales:
            s = scales[layer.in_group].to(device=w.device, dtype=w.dtype)
            w = w / s.view(s.shape[0], 1, s.shape[1], *extra)
        weights.append(w)
        biases.append(b)
    return WeightBatch(wb.spec, weights, biases)
