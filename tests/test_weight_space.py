"""WeightSpaceSpec is a value: specs read back from JSON (a zoo file) equal the original and hash
alike, so callers compare and cache specs with ``==`` and dict keys instead of their JSON."""
import dataclasses
import functools
import pickle

import pytest

from zoo.architectures import build_spec
from zoo.weight_space import LayerSpec, WeightSpaceSpec

SPECS = {
    "mlp": lambda: build_spec("mlp", (64,), 10, hidden=[16, 8], activation="relu"),
    "cnn": lambda: build_spec("cnn", (1, 8, 8), 10, channels=[4, 6], kernel=3, stride=2),
    "siren": lambda: build_spec("siren", (2,), 1, hidden=[16, 16], omega_0=30.0),
}


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_json_round_trip_is_equal_and_hashes_alike(arch):
    spec = SPECS[arch]()
    back = WeightSpaceSpec.from_json(spec.to_json())
    assert back is not spec and back == spec and not back != spec
    assert hash(back) == hash(spec)
    assert SPECS[arch]() == spec and hash(SPECS[arch]()) == hash(spec)  # built twice
    assert pickle.loads(pickle.dumps(spec)) == spec


def _with_layer(spec: WeightSpaceSpec, i: int, **change) -> WeightSpaceSpec:
    layers = list(spec.layers)
    layers[i] = dataclasses.replace(layers[i], **change)
    return dataclasses.replace(spec, layers=tuple(layers))


def variants(spec: WeightSpaceSpec) -> dict[str, WeightSpaceSpec]:
    """The spec changed in one field each."""
    return {
        "architecture": dataclasses.replace(spec, architecture="other"),
        "layer shape": _with_layer(spec, 0, out_features=spec.layers[0].out_features + 1),
        "layer kind": _with_layer(spec, 0, kind="conv1d", kernel=(3,)),
        "layer bias": _with_layer(spec, 1, bias=False),
        "layer name": _with_layer(spec, 1, name="head"),
        "layer group": _with_layer(spec, 1, in_group="other"),
        "group size": dataclasses.replace(spec, groups={**spec.groups, "hidden0": 17}),
        "extra group": dataclasses.replace(spec, groups={**spec.groups, "extra": 3}),
        "permutable": dataclasses.replace(spec, permutable=spec.permutable[:1]),
        "input shape": dataclasses.replace(spec, input_shape=(8, 8)),
        "activation": dataclasses.replace(spec, activation="tanh"),
        "activation per model": dataclasses.replace(spec, activation=None),
        "options": dataclasses.replace(spec, options={"omega_0": 30.0}),
        "option value": dataclasses.replace(dataclasses.replace(spec, options={"omega_0": 30.0}),
                                            options={"omega_0": 1.0}),
    }


def test_specs_differing_in_any_field_are_unequal():
    spec = SPECS["mlp"]()
    found = variants(spec)
    for what, other in found.items():
        assert other != spec and spec != other, what
        assert hash(other) != hash(spec), what
    assert len(set(found.values()) | {spec}) == len(found) + 1  # pairwise distinct as well


def test_group_order_does_not_matter():
    spec = SPECS["mlp"]()
    reordered = dataclasses.replace(spec, groups=dict(reversed(list(spec.groups.items()))))
    assert reordered == spec and hash(reordered) == hash(spec)


def test_not_equal_to_other_types():
    spec = SPECS["mlp"]()
    assert spec != spec.to_json() and spec != spec.to_dict() and spec != LayerSpec("a", "linear", "i", "o", 1, 1)


def test_usable_as_dict_key_and_in_lru_cache():
    a, b = SPECS["mlp"](), SPECS["cnn"]()
    table = {a: "mlp", b: "cnn"}
    assert table[WeightSpaceSpec.from_json(a.to_json())] == "mlp"
    assert table[WeightSpaceSpec.from_json(b.to_json())] == "cnn"

    calls = []

    @functools.lru_cache(maxsize=None)
    def layout(spec: WeightSpaceSpec) -> int:
        calls.append(spec)
        return spec.num_params

    assert layout(a) == layout(WeightSpaceSpec.from_json(a.to_json())) == a.num_params
    assert layout(b) == b.num_params
    assert len(calls) == 2
