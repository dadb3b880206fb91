"""``HyperNetwork``: a LightningModule that emits full weight sets of a zoo's weight space from
hyperparameters λ, trained functionally on the task or by distillation from a zoo.

- ``signal: functional`` (on a ``TaskDataModule``): each step draws ``networks_per_step`` λ from
  the config's ranges (Lorraine & Duvenaud), emits those networks and trains them on a batch of
  the task's training examples (``wsl.hyper.objectives``). No zoo is needed.
- ``signal: weights`` or ``outputs`` (on a ``WeightDataModule`` whose ``conditions`` are the
  hyperparameters): emit at each zoo network's own λ and match its normalized weights (use
  ``align: true`` in the data) or its outputs on the task's training inputs.

Validation runs the networks emitted at ``eval_points`` fixed λ (a scrambled Sobol set over the
ranges) on the task's validation examples: ``val/loss``, ``val/acc`` and ``val/score`` (mean
accuracy, or minus the loss for regression), what the kept checkpoint is chosen by. Test
examples are never looked at here.
"""
from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from wsl.data.normalize import WeightNormalizer
from wsl.data.task import source_task
from wsl.hyper.conditioning import FUNCTIONAL_HPARAMS, HparamEncoder, hparam_range
from wsl.hyper.emitter import WeightEmitter
from wsl.hyper.objectives import ExampleDraws, functional_loss, output_distillation_loss
from wsl.weights import WeightBatch
from zoo.train import evaluate
from zoo.weight_space import WeightSpaceSpec

SIGNALS = ("functional", "weights", "outputs")
PARAMETRIZATIONS = ("plain", "mip")


class HyperNetwork(pl.LightningModule):
    """Args:
        spec_json, source_json: the weight space and its zoo config (linked from the DataModule).
        conditions: the hyperparameters λ the networks are emitted from (linked from the DataModule).
        signal: ``functional``, ``weights`` or ``outputs`` (see the module's docstring).
        parametrization: ``plain`` or ``mip`` (magnitude-invariant: [cos, sin] inputs, residual
            on learned base weights; ``wsl.hyper.conditioning``, ``wsl.hyper.emitter``).
        heads, hidden, depth, chunk_size, chunk_dim: the emitter (``wsl.hyper.emitter``).
        networks_per_step: λ drawn per functional training step.
        fixed: values of the config's varying functional hyperparameters that are not conditions
            (a functional hypernetwork must know every λ it trains under).
        eval_points: λ at which validation runs emitted networks.
    """

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 signal: str = "functional", parametrization: str = "plain", heads: str = "chunk",
                 hidden: int = 128, depth: int = 2, chunk_size: int = 256, chunk_dim: int = 32,
                 networks_per_step: int = 32, fixed: dict[str, float] | None = None, distill_batch: int = 256,
                 lr: float = 1e-3, weight_decay: float = 0.0, eval_points: int = 32, seed: int = 0):
        super().__init__()
        if not spec_json:
            raise ValueError("HyperNetwork needs the weight space (spec_json); with `wsl fit` it comes from the "
                             "data module")
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {list(SIGNALS)}, found {signal!r}")
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {list(PARAMETRIZATIONS)}, found {parametrization!r}")
        self.save_hyperparameters()
        self.spec = WeightSpaceSpec.from_json(spec_json)
        self.source = json.loads(source_json)
        config = self.source.get("config") or {}
        self.conditions = list(conditions or [])
        if not self.conditions:
            raise ValueError("a HyperNetwork needs conditions: the hyperparameters it emits networks from "
                             "(data.conditions)")
        bad = [n for n in self.conditions if n not in FUNCTIONAL_HPARAMS]
        if signal == "functional" and bad:
            raise ValueError(f"conditions {bad} have no meaning for the functional loss (no optimizer trains the "
                             f"emitted networks); functional conditions are {list(FUNCTIONAL_HPARAMS)}; condition on "
                             f"{bad} with signal: weights or outputs (distillation from a zoo)")
        hp = config.get("hparams", {})
        ranges = [hparam_range(hp, name, "hypernetwork conditions").to_dict() for name in self.conditions]
        self.encoder = HparamEncoder(ranges, mip=parametrization == "mip")
        self.emitter = WeightEmitter(self.spec, self.encoder.out_dim, hidden=hidden, depth=depth, heads=heads,
                                     chunk_size=chunk_size, chunk_dim=chunk_dim, mip=parametrization == "mip",
                                     base_seed=seed)
        self.activation = self.spec.activation
        if self.activation is None:
            raise ValueError("the weight space's activation varies per network; a hypernetwork emits networks of one "
                             "activation: select one in the data (e.g. select: {activation: relu})")
        self.fixed = self._fixed_hparams(hp, dict(fixed or {})) if signal == "functional" else {}
        self.weight_normalizer = WeightNormalizer(self.spec)
        self._val: list[tuple[float, int]] = []

    def _fixed_hparams(self, hp: dict[str, Any], fixed: dict[str, float]) -> dict[str, float]:
        """The functional λ that are not conditions: given in ``fixed``, or fixed in the config."""
        out = {}
        for name in FUNCTIONAL_HPARAMS:
            if name in self.conditions:
                continue
            if name in fixed:
                out[name] = float(fixed.pop(name))
            elif isinstance(hp.get(name), dict):
                raise ValueError(f"hyperparameter {name!r} varies in the zoo config ({hp[name]}) but is neither a "
                                 f"condition nor given in fixed: the hypernetwork must know it")
            elif name in hp:
                out[name] = float(hp[name])
        if fixed:
            raise ValueError(f"fixed: {sorted(fixed)} are conditions or not functional hyperparameters; "
                             f"fixed takes {[n for n in FUNCTIONAL_HPARAMS if n not in self.conditions]}")
        return out

    # --- emitting ---------------------------------------------------------------------------------
    def emit_flat(self, values: Tensor) -> Tensor:
        """Flat raw weights [B, P] of the networks at λ ``values`` [B, K] (own units)."""
        return self.emitter(self.encoder(values.to(self.device, torch.float32)))

    def emit(self, values: Tensor) -> WeightBatch:
        """The networks at λ ``values`` [B, K] (the conditions' own units) as raw weights."""
        return WeightBatch.from_flat(self.spec, self.emit_flat(values))

    @cached_property
    def task(self):
        return source_task(self.source["config"]).to(self.device)

    @cached_property
    def draws(self) -> ExampleDraws:
        return ExampleDraws(self.task, seed=int(self.source.get("config", {}).get("seed", 0)))

    def lambda_dict(self, values: Tensor) -> dict[str, Tensor]:
        """name -> [M] for every functional λ: the conditions' columns and the fixed values."""
        M = values.shape[0]
        out = {name: values[:, k] for k, name in enumerate(self.conditions) if name in FUNCTIONAL_HPARAMS}
        out.update({name: torch.full((M,), v, device=values.device) for name, v in self.fixed.items()})
        return out

    # --- training ---------------------------------------------------------------------------------
    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None, **_) -> None:
        """Distillation from weights matches in the data's normalized space: take its normalizer."""
        if weight_normalizer is not None:
            self.weight_normalizer.load_state_dict(weight_normalizer.state_dict())
        elif self.hparams.signal != "functional":
            raise ValueError(f"signal {self.hparams.signal!r} distils from a zoo: the data must be a WeightDataModule")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        signal = self.hparams.signal
        if signal == "functional":
            if isinstance(batch[0], WeightBatch):
                raise ValueError("signal 'functional' trains on task examples: the data must be a TaskDataModule")
            x, y, idx = batch
            lam = self.encoder.sample(int(self.hparams.networks_per_step), device=self.device)
            wb = self.emit(lam)
            loss = functional_loss(self.spec, wb.params(), self.task, x, y, idx, self.lambda_dict(lam), self.draws,
                                   self.activation).mean()
        else:
            loss = self._distillation_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _distillation_loss(self, batch) -> Tensor:
        if not isinstance(batch[0], WeightBatch) or len(batch) < 2:
            raise ValueError(f"signal {self.hparams.signal!r} distils zoo networks at their λ: the data must be a "
                             f"WeightDataModule with conditions {self.conditions}")
        teacher, lam = batch[0], batch[1].float()
        student = self.emit(lam)
        if self.hparams.signal == "weights":
            return (self.weight_normalizer(student).flatten() - teacher.flatten()).pow(2).mean()
        task = self.task
        g = torch.randint(len(task.y_train), (int(self.hparams.distill_batch),), device=self.device)
        raw_teacher = self.weight_normalizer.inverse(teacher)
        return output_distillation_loss(self.spec, student.params(), raw_teacher.params(), task.kind,
                                        task.x_train[g], self.activation).mean()

    # --- validation -------------------------------------------------------------------------------
    def eval_lambdas(self) -> Tensor:
        """The fixed λ of validation: a scrambled Sobol set over the ranges."""
        sobol = torch.quasirandom.SobolEngine(len(self.conditions), scramble=True, seed=0)
        return self.encoder.from_unit(sobol.draw(int(self.hparams.eval_points)))

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.hparams.signal != "functional" and isinstance(batch[0], WeightBatch) and len(batch) > 1:
            loss = self._distillation_loss(batch)
            self._val.append((float(loss) * len(batch[0]), len(batch[0])))

    @torch.no_grad()
    def evaluate_at(self, values: Tensor, split: str = "val") -> dict[str, np.ndarray]:
        """Loss (and accuracy) [M] on ``split`` of the networks emitted at λ ``values``."""
        task = self.task
        wb = self.emit(values)
        res = evaluate(self.spec, [p.float() for p in wb.params()], task, getattr(task, f"x_{split}"),
                       getattr(task, f"y_{split}"), activation=self.activation)
        return {k: v.cpu().numpy() for k, v in res.items()}

    def on_validation_epoch_end(self) -> None:
        if self._val:
            self.log("val/distill_loss", sum(a for a, _ in self._val) / sum(n for _, n in self._val))
            self._val.clear()
        res = self.evaluate_at(self.eval_lambdas().to(self.device))
        loss = float(np.nanmean(res["loss"]))
        self.log("val/loss", loss, prog_bar=True)
        if "acc" in res:
            acc = float(np.nanmean(res["acc"]))
            self.log("val/acc", acc, prog_bar=True)
            self.log("val/score", acc)
        else:
            self.log("val/score", -loss)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["wsl_hypernetwork"] = type(self).__name__

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
