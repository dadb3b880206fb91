"""Encoders: plain ``nn.Module``s that map a ``WeightBatch`` to ``[B, out_dim]``.

| name | module | what |
|---|---|---|
| ``flat`` | ``flat.FlatMLP`` | MLP on the flattened weights (no symmetry: a baseline) |
| ``statnn`` | ``statnn.StatNN`` | per-layer weight statistics into an MLP (Unterthiner et al. 2020) |
| ``deepsets`` | ``deepsets.DeepSetsEncoder`` | neurons as sets, per-layer pooling |
| ``np`` / ``hnp`` | ``nfn.NFNEncoder`` | NFN NP / HNP equivariant layers, invariant pooling (Zhou et al. 2023) |
| ``dwsnet`` | ``dwsnet.DWSNetEncoder`` | DWSNet equivariant layers, MLP weight spaces (Navon et al. 2023) |
| ``ngnn`` | ``ngnn.NGGNN`` | message passing on the neural graph with edge features (Kofinas et al. 2024) |
| ``probe`` | ``probe.ProbeEncoder`` | the network's outputs on learned probe inputs into an MLP (raw weights) |
"""
from __future__ import annotations

import importlib

from torch import nn

from zoo.weight_space import WeightSpaceSpec

ENCODERS: dict[str, tuple[str, str, dict]] = {
    "flat": ("wsl.nn.flat", "FlatMLP", {}),
    "statnn": ("wsl.nn.statnn", "StatNN", {}),
    "deepsets": ("wsl.nn.deepsets", "DeepSetsEncoder", {}),
    "np": ("wsl.nn.nfn", "NFNEncoder", {"mode": "np"}),
    "hnp": ("wsl.nn.nfn", "NFNEncoder", {"mode": "hnp"}),
    "dwsnet": ("wsl.nn.dwsnet", "DWSNetEncoder", {}),
    "ngnn": ("wsl.nn.ngnn", "NGGNN", {}),
    "probe": ("wsl.nn.probe", "ProbeEncoder", {}),
}


def build_encoder(name: str, spec: WeightSpaceSpec, out_dim: int, **kwargs) -> nn.Module:
    """The encoder called ``name`` for a weight space, with ``out_dim`` outputs."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(ENCODERS)}")
    module, cls, fixed = ENCODERS[name]
    return getattr(importlib.import_module(module), cls)(spec, out_dim, **fixed, **kwargs)
