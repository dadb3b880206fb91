"""Encoders (``WeightBatch -> [B, out_dim]``) and equivariant backbones (weight features -> weight
features), by name.

| encoder | module | what |
|---|---|---|
| ``flat`` | ``flat.FlatMLP`` | MLP on the flattened weights (no symmetry: a baseline) |
| ``statnn`` | ``statnn.StatNN`` | per-layer weight statistics into an MLP (Unterthiner et al. 2020) |
| ``deepsets`` | ``deepsets.DeepSetsEncoder`` | neurons as sets, per-layer pooling |
| ``np`` / ``hnp`` | ``nfn.NFNEncoder`` | NFN NP / HNP backbone, invariant pool, MLP head (Zhou et al. 2023) |
| ``dwsnet`` | ``dwsnet.DWSNetEncoder`` | DWSNet backbone, MLP weight spaces (Navon et al. 2023) |
| ``ngnn`` | ``neural_graph.NGEncoder`` | NG-GNN: message passing on the neural graph (PyG), edge features and updates (Kofinas et al. 2024) |
| ``ngnn-dense`` | ``dense_graph.DenseNGEncoder`` | the same NG-GNN (same parameters and function) on dense edge tensors: less memory, faster on a CPU |
| ``ngt`` | ``neural_graph.NGEncoder`` | NG-T: a transformer on the neural graph (PyG), edges in keys and values (Kofinas et al. 2024) |
| ``ngt-dense`` | ``dense_graph.DenseNGEncoder`` | the same NG-T on dense edge tensors |
| ``scalegmn`` | ``scalegmn.ScaleGMN`` | ScaleGMN: the neural graph with layers equivariant to the activation's scalings too (sign flips, positive rescaling; Kalogeropoulos et al. 2024) |
| ``probe`` | ``probe.ProbeEncoder`` | the network's outputs on learned probe inputs into an MLP (raw weights) |

Backbones (``build_backbone``) are the equivariant part alone: ``np``, ``hnp``, ``dwsnet``, ``ngnn``,
``ngt``. With ``out_channels=1`` a backbone is a weight -> weight map:
``backbone(wb.features()).to_weights()``.
"""
from __future__ import annotations

import importlib

from torch import nn

from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError

ENCODERS: dict[str, tuple[str, str, dict]] = {
    "flat": ("wsl.nn.flat", "FlatMLP", {}),
    "statnn": ("wsl.nn.statnn", "StatNN", {}),
    "deepsets": ("wsl.nn.deepsets", "DeepSetsEncoder", {}),
    "np": ("wsl.nn.nfn", "NFNEncoder", {"mode": "np"}),
    "hnp": ("wsl.nn.nfn", "NFNEncoder", {"mode": "hnp"}),
    "dwsnet": ("wsl.nn.dwsnet", "DWSNetEncoder", {}),
    "ngnn": ("wsl.nn.neural_graph", "NGEncoder", {"conv": "gnn"}),
    "ngnn-dense": ("wsl.nn.dense_graph", "DenseNGEncoder", {"conv": "gnn"}),
    "ngt": ("wsl.nn.neural_graph", "NGEncoder", {"conv": "transformer"}),
    "ngt-dense": ("wsl.nn.dense_graph", "DenseNGEncoder", {"conv": "transformer"}),
    "probe": ("wsl.nn.probe", "ProbeEncoder", {}),
    "scalegmn": ("wsl.nn.scalegmn", "ScaleGMN", {}),
}

BACKBONES: dict[str, tuple[str, str, dict]] = {
    "np": ("wsl.nn.nfn", "NFNBackbone", {"mode": "np"}),
    "hnp": ("wsl.nn.nfn", "NFNBackbone", {"mode": "hnp"}),
    "dwsnet": ("wsl.nn.dwsnet", "DWSBackbone", {}),
    "ngnn": ("wsl.nn.neural_graph", "NGBackbone", {"conv": "gnn"}),
    "ngt": ("wsl.nn.neural_graph", "NGBackbone", {"conv": "transformer"}),
}


def _build(table: dict, what: str, name: str, *args, **kwargs) -> nn.Module:
    if name not in table:
        raise InputError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    module, cls, fixed = table[name]
    return getattr(importlib.import_module(module), cls)(*args, **fixed, **kwargs)


def build_encoder(name: str, spec: WeightSpaceSpec, out_dim: int, **kwargs) -> nn.Module:
    """The encoder called ``name`` for a weight space, with ``out_dim`` outputs."""
    return _build(ENCODERS, "encoder", name, spec, out_dim, **kwargs)


def build_backbone(name: str, spec: WeightSpaceSpec, in_channels: int = 1, out_channels: int | None = None,
                   **kwargs) -> nn.Module:
    """The equivariant backbone called ``name``: ``WeightFeatures`` with ``in_channels`` channels to
    ``out_channels`` channels (``None``: its hidden width, rectified, ready to pool)."""
    return _build(BACKBONES, "backbone", name, spec, in_channels=in_channels, out_channels=out_channels, **kwargs)
