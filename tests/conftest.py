"""Shared test helpers: small weight spaces, random weights and features, hidden permutations,
small generated zoos.

Helpers are plain functions (``from conftest import random_weights``); fixtures are below them.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from wsl.weights import WeightBatch, WeightFeatures
from wsl.weights.symmetry import random_permutations
from zoo.architectures import build_spec
from zoo.config import parse_config
from zoo.generate import generate

QUIET = dict(progress=False, log=lambda s: None)

SPECS = {
    "mlp": build_spec("mlp", (4,), 3, hidden=[6, 5]),
    "cnn": build_spec("cnn", (1, 8, 8), 3, channels=[3, 4]),
}


def save_checkpoint(model, path, tag: bool = True, **extra):
    """A model checkpoint as Lightning writes one (hyperparameters, state_dict, ``extra`` entries such as
    a data module's), with the core's class tag unless ``tag`` is False (a file written before it); its path."""
    ckpt = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(), **extra}
    if tag:
        model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def save_untrained_predictor(zoo, path, trained_on: str = "/nowhere/src.h5"):
    """An untrained StatNN predictor of test accuracy for ``zoo``'s weight space, saved as ``wsl fit``
    would (its data module named ``trained_on``): for tests where only reading inputs matters."""
    from wsl.prediction.model import PropertyPredictor
    from zoo.store import Zoo

    with Zoo(zoo) as z:
        spec = z.spec
    torch.manual_seed(0)
    model = PropertyPredictor(spec.to_json(), encoder="statnn", target="test_acc").eval()
    return save_checkpoint(model, path, datamodule_hyper_parameters={"zoos": [trained_on]})


def generate_zoo(raw: dict, path) -> str:
    """A zoo generated quietly from a raw config dict (the tests' small zoos); its path."""
    return str(generate(parse_config(raw), path, **QUIET))


def random_weights(spec, seed: int = 0, n: int = 4, dtype=torch.float64, std: float = 1.0) -> WeightBatch:
    gen = torch.Generator().manual_seed(seed)
    return WeightBatch.from_params(spec, [std * torch.randn(n, *p.shape, generator=gen, dtype=dtype)
                                          for p in spec.params])


def random_features(spec, channels: int, seed: int = 0, n: int = 4, dtype=torch.float64) -> WeightFeatures:
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.randn(n, channels, *l.weight.shape, generator=gen, dtype=dtype) for l in spec.layers]
    bs = [torch.randn(n, channels, l.out_features, generator=gen, dtype=dtype) for l in spec.layers]
    return WeightFeatures(spec, ws, bs)


def hidden_perms(spec, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random permutation of every hidden group per network, none of them the identity."""
    perms = random_permutations(spec, n, torch.Generator().manual_seed(seed))
    for g, p in perms.items():
        ident = (p == torch.arange(p.shape[1])).all(1)
        p[ident] = p[ident].roll(1, dims=1)
    return perms


def max_diff(a, b) -> float:
    """Largest absolute difference between two WeightBatch / WeightFeatures (every tensor)."""
    ta = [t for t in [*a.weights, *a.biases] if t is not None]
    tb = [t for t in [*b.weights, *b.biases] if t is not None]
    assert len(ta) == len(tb)
    return max((x - y).abs().max().item() for x, y in zip(ta, tb))


def taps(layer) -> int:
    return math.prod(layer.kernel)


@pytest.fixture
def one_thread():
    """Tiny tensors on shared cores: one thread avoids OpenMP stalls (10x slower steps with two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the benchmarks are scripts, not package modules)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
