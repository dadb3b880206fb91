"""Matching anyone's state_dict to a weight space: by name, else by structure.

A network saved from the user's own ``nn.Sequential`` or custom module names its parameters
``0.weight`` or ``fc1.weight``, not the weight space's ``layers.0.weight``. Names equal to the
spec's are used as they are. Otherwise the entries are taken in the file's order (the order
``state_dict()`` writes them: the order the modules were registered in), grouped into one weight
and, where the layer has one, one bias per layer, and must equal the spec's layers in count and
shapes. A safetensors file does not keep that order (it stores tensors sorted by name), so there
the modules (``<module>.weight`` and ``<module>.bias``) are ordered by the numbers in their names
(``0``, ``2``, ``fc10``), or, failing that, placed by their shapes where every layer's shapes are
unique. Nothing is guessed: the match is refused, saying what was expected and what was found, when

- an entry is not a weight or bias of a linear/conv layer (BatchNorm statistics, a LayerNorm's
  extra pair: the count or shapes then differ, or the name says so),
- a name's role contradicts its place (a ``.bias`` where a weight is expected), or a layer's
  weight and bias come from different modules,
- the match is ambiguous: the numbers in the names order the layers differently from the file and
  that order fits the shapes too, or (safetensors) layers of equal shapes have no numbers to order
  them, so which order the network runs in cannot be told.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

import torch
from torch import Tensor

from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts keep the state_dict
DATA_PARALLEL_PREFIX = "module."  # nn.DataParallel / DistributedDataParallel prefix every name with it
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # normalization statistics, not weights


def unwrap_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """The state_dict in a loaded file: the mapping itself, or the one under a common wrapper key
    (``{"state_dict": ...}``, ``{"model": ...}``), with a ``module.`` prefix removed."""
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping) and _all_tensors(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        if isinstance(obj, Mapping):
            others = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
            found = "an empty mapping" if not obj else f"a mapping with non-tensor entries {', '.join(others)}"
        else:
            found = f"a {type(obj).__name__}"
        raise InputError(f"{source}: expected a state_dict (a mapping of names to tensors, possibly under "
                         f"{' / '.join(repr(k) for k in WRAPPER_KEYS)}), found {found}")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in sd):
        sd = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in sd.items()}
    return sd


def _all_tensors(m: Mapping) -> bool:
    return bool(m) and all(isinstance(v, torch.Tensor) for v in m.values())


def match_state_dict(spec: WeightSpaceSpec, state_dict: Mapping[str, Tensor], source: str = "state_dict",
                     strict_names: bool = False, ordered: bool = True) -> tuple[list[Tensor], dict[str, str]]:
    """The state_dict's tensors in ``spec.params`` order, and the mapping used (file name -> spec
    name, in spec order). With ``strict_names`` only the spec's own names are accepted;
    ``ordered=False`` says the file's order is not the module's (safetensors)."""
    if strict_names or set(state_dict) == set(spec.param_names):
        spec.check_state_dict(dict(state_dict), source)
        return [state_dict[n] for n in spec.param_names], {n: n for n in spec.param_names}
    match = _match_by_structure if ordered else _match_unordered
    names = match(spec, state_dict, _refusal(spec, state_dict, source, ordered))
    return [state_dict[n] for n in names], dict(zip(names, spec.param_names))


def describe_mapping(mapping: Mapping[str, str]) -> str:
    return ", ".join(f"{a} -> {b}" for a, b in mapping.items())


def _role(name: str) -> str | None:
    last = name.rsplit(".", 1)[-1]
    return last if last in ("weight", "bias") else None


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if _role(name) else name


def _refusal(spec: WeightSpaceSpec, sd: Mapping[str, Tensor], source: str, ordered: bool):
    """``refuse(problem)``: raise the ValueError that says what was expected and what was found."""
    def refuse(problem: str) -> None:
        exp = ", ".join(f"{p.name} {list(p.shape)}" for p in spec.params)
        found = ", ".join(f"{k} {list(v.shape)}" for k, v in sd.items())
        raise InputError(f"{source} does not match weight space {spec.architecture!r} by name or by structure: "
                         f"{problem}. Expected, in order: {exp}. Found, in file order{'' if ordered else ' (by name)'}: "
                         f"{found}")
    return refuse


def _check_entries(spec: WeightSpaceSpec, sd: Mapping[str, Tensor], refuse) -> None:
    """Refuse entries that are not weights (normalization statistics), and a wrong count."""
    buffers = [k for k in sd if k.rsplit(".", 1)[-1] in BUFFERS]
    if buffers:
        refuse(f"{', '.join(buffers)} are normalization statistics (BatchNorm?), not the weight or bias of a "
               f"{'/'.join(sorted({l.kind for l in spec.layers}))} layer, and the weight space has no place for them")
    if len(sd) != len(spec.params):
        refuse(f"expected {len(spec.params)} tensors (the weights and biases of {len(spec.layers)} layers), "
               f"found {len(sd)}")


def _numbers(module: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", module))


def _match_by_structure(spec: WeightSpaceSpec, sd: Mapping[str, Tensor], refuse) -> list[str]:
    """File names in ``spec.params`` order, taken in the file's order."""
    names = list(sd)
    expected = spec.params
    _check_entries(spec, sd, refuse)
    for name, p in zip(names, expected):
        if tuple(sd[name].shape) != p.shape:
            refuse(f"{name} has shape {list(sd[name].shape)} where {p.name} {list(p.shape)} is expected")
        if _role(name) not in (None, p.role):
            refuse(f"{name} is a {_role(name)} where {p.name}, a {p.role}, is expected")
    groups, i = [], 0  # the file's names of each layer: [weight] or [weight, bias]
    for layer in spec.layers:
        groups.append(names[i:i + 1 + layer.bias])
        i += 1 + layer.bias
    for layer, group in zip(spec.layers, groups):
        if len(group) == 2 and _role(group[0]) and _role(group[1]) and _module(group[0]) != _module(group[1]):
            refuse(f"{group[0]} and {group[1]} come from different modules, but the weight and bias of "
                   f"{layer.name} belong to one layer")
    numbers = [_numbers(_module(g[0])) for g in groups]
    if all(numbers):
        by_number = sorted(range(len(groups)), key=lambda k: numbers[k])
        if by_number != list(range(len(groups))) and all(
                tuple(sd[a].shape) == tuple(b.shape) for a, b in zip((n for k in by_number for n in groups[k]), expected)):
            refuse(f"ambiguous: the layers fit both in the file's order ({', '.join(_module(g[0]) for g in groups)}) "
                   f"and in the order of the numbers in their names "
                   f"({', '.join(_module(groups[k][0]) for k in by_number)}); save the state_dict with the weight "
                   f"space's names or in the order the layers run")
    return names


def _layers(signatures: Counter) -> str:
    return "nothing" if not signatures else ", ".join(f"{n} x weight {list(w)}" + (f" + bias {list(b)}" if b is not None else "")
                     for (w, b), n in signatures.items())


def _match_unordered(spec: WeightSpaceSpec, sd: Mapping[str, Tensor], refuse) -> list[str]:
    """File names in ``spec.params`` order for a file that does not keep the module order: modules
    ordered by the numbers in their names, else placed by their shapes where those are unique."""
    _check_entries(spec, sd, refuse)
    modules: dict[str, dict[str, str]] = {}
    for name in sd:
        if _role(name) is None:
            refuse(f"{name} is not named <module>.weight or <module>.bias, and this file does not keep the order "
                   "its tensors were written in (safetensors sorts them by name), so its place cannot be told")
        modules.setdefault(_module(name), {})[_role(name)] = name
    for module, entries in modules.items():
        if "weight" not in entries:
            refuse(f"{entries['bias']} has no {module}.weight")

    def signature(entries: dict[str, str]) -> tuple:
        return tuple(sd[entries["weight"]].shape), tuple(sd[entries["bias"]].shape) if "bias" in entries else None

    wanted = [(l.weight.shape, l.bias_param.shape if l.bias else None) for l in spec.layers]
    numbered = sorted(modules, key=_numbers)
    numbers = [_numbers(m) for m in numbered]
    if all(numbers) and len(set(numbers)) == len(numbers) and [signature(modules[m]) for m in numbered] == wanted:
        order = numbered
    else:
        by_shape: dict[tuple, list[str]] = {}
        for m in modules:
            by_shape.setdefault(signature(modules[m]), []).append(m)
        found = Counter({w: len(ms) for w, ms in by_shape.items()})
        if found != Counter(wanted):
            refuse(f"ordered by the numbers in their names or in any order, its layers are not the weight space's: "
                   f"it lacks {_layers(Counter(wanted) - found)} and has {_layers(found - Counter(wanted))} instead")
        repeated = [ms for ms in by_shape.values() if len(ms) > 1]
        if repeated:
            refuse(f"ambiguous: layers {', '.join(repeated[0])} have equal shapes, the numbers in the names give no "
                   "order that fits, and this file does not keep the order its tensors were written in (safetensors "
                   "sorts them by name); save the state_dict with the weight space's names, or as a .pt file")
        order = [by_shape[w][0] for w in wanted]
    return [modules[m][role] for m in order for role in ("weight", "bias") if role in modules[m]]


# What a state_dict does not record about a CNN; inferred CNNs take the zoo's defaults (zoo.architectures.cnn).
CNN_DEFAULTS = {"stride": 2, "image_size": 28}


def infer_spec(state_dict: Mapping[str, Tensor], source: str = "state_dict", ordered: bool = True,
               activation: str | None = None) -> WeightSpaceSpec:
    """The weight space a state_dict's structure describes: a stack of linear layers is an MLP,
    convolutions (global average pooling) then one linear layer a CNN (``zoo.architectures``). The
    layers are taken as ``match_state_dict`` takes them (the file's order, or the numbers in the
    module names where the file is sorted by name), and the spec built is then matched back, so
    what is inferred here imports exactly as ``wsl predict`` would read it. A CNN's stride,
    padding and input size are not in its weights: the zoo's defaults are assumed (``--architecture``
    sets them)."""
    from zoo.architectures import build_spec

    def refuse(problem: str) -> None:
        found = ", ".join(f"{k} {list(v.shape)}" for k, v in state_dict.items())
        raise InputError(f"{source}: cannot infer a weight space (an MLP or a CNN) from its structure: {problem}; "
                         f"give one with --architecture. Found: {found}")

    buffers = [k for k in state_dict if k.rsplit(".", 1)[-1] in BUFFERS]
    if buffers:
        refuse(f"{', '.join(buffers[:3])} are normalization statistics, which no weight space of ours holds")
    names = list(state_dict)
    if not ordered:
        modules: dict[str, list[str]] = {}
        for n in names:
            modules.setdefault(_module(n), []).append(n)
        nums = {m: _numbers(m) for m in modules}
        if len(modules) > 1 and (not all(nums.values()) or len(set(nums.values())) != len(nums)):
            refuse("the file sorts its tensors by name (safetensors) and the module names carry no numbers that "
                   "order the layers")
        names = [n for m in sorted(modules, key=lambda m: nums[m])
                 for n in sorted(modules[m], key=lambda n: _role(n) != "weight")]
    layers: list[tuple[tuple[int, ...], bool]] = []  # (weight shape, has bias)
    for n in names:
        t = state_dict[n]
        if t.dim() in (2, 3, 4) and _role(n) != "bias":
            layers.append((tuple(t.shape), False))
        elif t.dim() == 1 and layers and not layers[-1][1] and t.shape[0] == layers[-1][0][0] and _role(n) != "weight":
            layers[-1] = (layers[-1][0], True)
        else:
            refuse(f"{n} {list(t.shape)} is neither a layer's weight nor the bias of the layer before it")
    if not layers:
        refuse("no weights")
    if not all(b for _, b in layers):
        refuse("a layer without a bias (the zoo's weight spaces give every layer one)")
    convs = [w for w, _ in layers if len(w) > 2]
    linears = [w for w, _ in layers if len(w) == 2]
    if convs and (len(linears) != 1 or len(layers[-1][0]) != 2):
        refuse("convolutions must be followed by exactly one linear layer (global average pooling between)")
    shapes = [w for w, _ in layers]
    for a, b in zip(shapes, shapes[1:]):
        if b[1] != a[0]:
            refuse(f"a layer of {a[0]} outputs feeds a layer of {b[1]} inputs")
    if not convs:
        spec = build_spec("mlp", (shapes[0][1],), shapes[-1][0], hidden=[w[0] for w in shapes[:-1]] or [],
                          activation=activation)
    else:
        kernels = {w[2:] for w in convs}
        if len(kernels) != 1 or len(set(next(iter(kernels)))) != 1:
            refuse(f"convolution kernels {sorted(kernels)}: the zoo's CNNs use one square kernel size")
        k = convs[0][2]
        size = (CNN_DEFAULTS["image_size"],) * (len(convs[0]) - 2)
        spec = build_spec("cnn", (convs[0][1], *size), shapes[-1][0], channels=[w[0] for w in convs], kernel=k,
                          stride=CNN_DEFAULTS["stride"], activation=activation)
    match_state_dict(spec, state_dict, source, ordered=ordered)
    return spec
