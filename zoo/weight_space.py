"""The weight-space spec: what the parameters of one architecture family are and how they permute.

A spec is explicit metadata, never inferred from the key order of a ``state_dict``. Every parameter
has a name (its ``state_dict`` key), a shape, a role (weight or bias) and, for every axis, the
*neuron group* that axis indexes, or ``None`` for a fixed axis such as a convolution kernel.
Groups marked permutable are hidden neurons (or channels): permuting one group consistently along
every axis that carries it leaves the network's function unchanged. Input and output groups are
fixed.

The spec is stored as JSON in every zoo file, so it is the contract between ``zoo`` (which writes
weights) and ``wsl`` (which learns on them).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from .errors import InputError, UnknownNameError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "sine", "identity", "leaky_relu")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of the network (per model, without the population axis)."""

    name: str
    shape: tuple[int, ...]
    role: str  # "weight" or "bias"
    axes: tuple[str | None, ...]  # neuron group per axis; None for fixed axes (kernel taps)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: a linear map or a convolution from ``in_group`` neurons to ``out_group`` neurons."""

    name: str  # module path, e.g. "layers.0"; parameters are "<name>.weight" and "<name>.bias"
    kind: str  # "linear", "conv1d" or "conv2d"
    in_group: str
    out_group: str
    in_features: int
    out_features: int
    kernel: tuple[int, ...] = ()
    stride: int = 1
    padding: int = 0
    bias: bool = True

    @property
    def weight(self) -> ParamSpec:
        shape = (self.out_features, self.in_features, *self.kernel)
        axes = (self.out_group, self.in_group, *([None] * len(self.kernel)))
        return ParamSpec(f"{self.name}.weight", shape, "weight", axes)

    @property
    def bias_param(self) -> ParamSpec | None:
        if not self.bias:
            return None
        return ParamSpec(f"{self.name}.bias", (self.out_features,), "bias", (self.out_group,))


@dataclass(frozen=True, eq=False)
class WeightSpaceSpec:
    """An architecture family's weight space: ordered layers, neuron groups, activation.

    A spec is a value: two specs are equal (and hash alike) when their JSON is, so specs read
    from different files compare with ``==`` and key caches. ``groups`` and ``options`` are dicts
    for reading; never change them in place (the hash is computed once).
    """

    architecture: str
    layers: tuple[LayerSpec, ...]
    groups: dict[str, int]  # neuron group name -> size
    permutable: tuple[str, ...]  # names of hidden groups that may be permuted
    input_shape: tuple[int, ...]
    activation: str | None  # None when the activation varies per model (see the zoo's hparams)
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"omega_0": 30.0} for SIREN

    def _canonical(self) -> str:
        """The JSON text that identifies the spec, made on first use and kept (the spec is frozen)."""
        key = self.__dict__.get("_canonical_json")
        if key is None:
            key = self.to_json()
            object.__setattr__(self, "_canonical_json", key)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightSpaceSpec):
            return NotImplemented
        return self is other or self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    @property
    def params(self) -> list[ParamSpec]:
        out = []
        for layer in self.layers:
            out.append(layer.weight)
            if layer.bias_param is not None:
                out.append(layer.bias_param)
        return out

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def num_params(self) -> int:
        return sum(p.numel for p in self.params)

    @property
    def output_dim(self) -> int:
        return self.layers[-1].out_features

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise UnknownNameError(f"weight space {self.architecture!r} has no parameter {name!r}; "
                       f"expected one of {self.param_names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "layers": [
                {"name": l.name, "kind": l.kind, "in_group": l.in_group, "out_group": l.out_group,
                 "in_features": l.in_features, "out_features": l.out_features,
                 "kernel": list(l.kernel), "stride": l.stride, "padding": l.padding, "bias": l.bias}
                for l in self.layers
            ],
            "groups": dict(self.groups),
            "permutable": list(self.permutable),
            "input_shape": list(self.input_shape),
            "activation": self.activation,
            "options": dict(self.options),
            "params": [{"name": p.name, "shape": list(p.shape), "role": p.role, "axes": list(p.axes)}
                       for p in self.params],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeightSpaceSpec":
        layers = tuple(
            LayerSpec(name=l["name"], kind=l["kind"], in_group=l["in_group"], out_group=l["out_group"],
                      in_features=int(l["in_features"]), out_features=int(l["out_features"]),
                      kernel=tuple(int(k) for k in l["kernel"]), stride=int(l["stride"]),
                      padding=int(l["padding"]), bias=bool(l["bias"]))
            for l in d["layers"]
        )
        return cls(architecture=d["architecture"], layers=layers,
                   groups={k: int(v) for k, v in d["groups"].items()},
                   permutable=tuple(d["permutable"]), input_shape=tuple(int(s) for s in d["input_shape"]),
                   activation=d["activation"], options=dict(d.get("options", {})))

    @classmethod
    def from_json(cls, text: str) -> "WeightSpaceSpec":
        return cls.from_dict(json.loads(text))

    def check_chain(self, user: str) -> None:
        """Raise unless each layer reads the group the previous one writes, all groups distinct:
        the shape that NFN and DWSNet layers assume (``user`` names the encoder in the error)."""
        for prev, layer in zip(self.layers, self.layers[1:]):
            if layer.in_group != prev.out_group:
                raise InputError(f"{user} needs a chain of layers: {layer.name!r} reads group {layer.in_group!r} "
                                 f"but {prev.name!r} writes {prev.out_group!r}")
        groups = [self.layers[0].in_group] + [l.out_group for l in self.layers]
        if len(set(groups)) != len(groups):
            raise InputError(f"{user} needs distinct neuron groups along the chain, found {groups}")

    def check_state_dict(self, state_dict: dict[str, Any], source: str = "state_dict") -> None:
        """Raise a ValueError naming every missing, unexpected or mis-shaped parameter."""
        expected = {p.name: tuple(p.shape) for p in self.params}
        found = {k: tuple(v.shape) for k, v in state_dict.items()}
        problems = []
        for name, shape in expected.items():
            if name not in found:
                problems.append(f"missing {name} {list(shape)}")
            elif found[name] != shape:
                problems.append(f"{name}: expected shape {list(shape)}, found {list(found[name])}")
        for name in found:
            if name not in expected:
                problems.append(f"unexpected {name} {list(found[name])}")
        if problems:
            exp = ", ".join(f"{k} {list(v)}" for k, v in expected.items())
            raise InputError(f"{source} does not match weight space {self.architecture!r}: "
                             + "; ".join(problems) + f". Expected: {exp}")
