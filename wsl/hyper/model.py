"""``HyperNetwork``: a LightningModule that emits full weight sets of a zoo's weight space from
hyperparameters λ, trained functionally on the task or by distillation from a zoo.

- ``signal: functional`` (on a ``TaskDataModule``): each step draws ``networks_per_step`` λ from
  the config's ranges (Lorraine & Duvenaud), emits those networks and trains them on a batch of
  the task's training examples (``wsl.hyper.objectives``). No zoo is needed. With the condition
  ``task`` (the data's ``tasks``: further zoo configs of the same weight space), each network
  also draws a task, an index the emitter embeds, and trains on that task's batch.
- ``signal: weights`` or ``outputs`` (on a ``WeightDataModule`` whose ``conditions`` are the
  hyperparameters): emit at each zoo network's own λ and match its normalized weights (use
  ``align: true`` in the data) or its outputs on the task's training inputs.

Validation runs the networks emitted at ``eval_points`` fixed λ (a scrambled Sobol set over the
ranges, for every task) on the task's validation examples: ``val/loss``, ``val/acc`` and ``val/score`` (mean
accuracy, or minus the loss for regression), what the kept checkpoint is chosen by. Test
examples are never looked at here.
"""
from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsl.core.module import WeightSpaceModule
from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.data.task import TASK, source_task
from wsl.hyper.conditioning import FUNCTIONAL_HPARAMS, LEAKING_HPARAMS, HparamEncoder, LabelEncoder, hparam_range
from wsl.hyper.emitter import WeightEmitter
from wsl.hyper.objectives import ExampleDraws, functional_loss, output_distillation_loss
from wsl.weights import WeightBatch
from zoo.train import evaluate
from zoo.errors import InputError, warn

SIGNALS = ("functional", "weights", "outputs")
PARAMETRIZATIONS = ("plain", "mip")


class HyperNetwork(WeightSpaceModule):
    """Args:
        spec_json, source_json: the weight space and its zoo config (linked from the DataModule).
        conditions: the hyperparameters λ the networks are emitted from, and ``task`` for a
            hypernetwork over several tasks (linked from the DataModule). Emitting takes their
            values in this order, ``task`` last (the task's index).
        signal: ``functional``, ``weights`` or ``outputs`` (see the module's docstring).
        parametrization: ``plain`` or ``mip`` (magnitude-invariant: [cos, sin] inputs, residual
            on learned base weights; ``wsl.hyper.conditioning``, ``wsl.hyper.emitter``).
        heads, hidden, depth, chunk_size, chunk_dim: the emitter (``wsl.hyper.emitter``).
        networks_per_step: λ drawn per functional training step.
        fixed: values of the config's varying functional hyperparameters that are not conditions
            (a functional hypernetwork must know every λ it trains under).
        eval_points: λ at which validation runs emitted networks (per task).
        task_dim: width of the task embedding.
        lr, weight_decay, schedule, warmup_epochs: the optimizer (``WeightSpaceModule``).
    """

    kind = "hypernetwork"

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 signal: str = "functional", parametrization: str = "plain", heads: str = "chunk",
                 hidden: int = 128, depth: int = 2, chunk_size: int = 256, chunk_dim: int = 32,
                 networks_per_step: int = 32, fixed: dict[str, float] | None = None, distill_batch: int = 256,
                 lr: float = 1e-3, weight_decay: float = 0.0, eval_points: int = 32, seed: int = 0,
                 task_dim: int = 16, schedule: str = "constant", warmup_epochs: int = 0):
        if signal not in SIGNALS:
            raise InputError(f"signal must be one of {list(SIGNALS)}, found {signal!r}")
        if parametrization not in PARAMETRIZATIONS:
            raise InputError(f"parametrization must be one of {list(PARAMETRIZATIONS)}, found {parametrization!r}")
        super().__init__(spec_json, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs)
        self.source = json.loads(source_json)
        config = self.source.get("config") or {}
        conditions = list(conditions or [])
        if not conditions:
            raise InputError("a HyperNetwork needs conditions: the hyperparameters it emits networks from "
                             "(data.conditions)")
        self.hparam_names = [c for c in conditions if c != TASK]
        self.num_tasks = 1 + len(self.source.get("tasks") or [])
        self.multitask = TASK in conditions
        self.conditions = self.hparam_names + ([TASK] if self.multitask else [])
        if self.multitask and signal != "functional":
            raise InputError("the condition 'task' is for the functional signal (distillation reads one zoo)")
        if self.multitask and self.num_tasks < 2:
            raise InputError("the condition 'task' needs several tasks: give the data module's tasks")
        bad = [n for n in self.hparam_names if n not in FUNCTIONAL_HPARAMS]
        if signal == "functional" and bad:
            raise InputError(f"conditions {bad} have no meaning for the functional loss (no optimizer trains the "
                             f"emitted networks); functional conditions are {list(FUNCTIONAL_HPARAMS)}; condition on "
                             f"{bad} with signal: weights or outputs (distillation from a zoo)")
        hp = config.get("hparams", {})
        ranges = [hparam_range(hp, name, "hypernetwork conditions").to_dict() for name in self.hparam_names]
        self.encoder = HparamEncoder(ranges, mip=parametrization == "mip")
        self.task_encoder = LabelEncoder(self.num_tasks, task_dim, mip=parametrization == "mip") \
            if self.multitask else None
        cond_dim = self.encoder.out_dim + (task_dim if self.multitask else 0)
        self.emitter = WeightEmitter(self.spec, cond_dim, hidden=hidden, depth=depth, heads=heads,
                                     chunk_size=chunk_size, chunk_dim=chunk_dim, mip=parametrization == "mip",
                                     base_seed=seed)
        self.activation = self.spec.activation
        if self.activation is None:
            raise InputError("the weight space's activation varies per network; a hypernetwork emits networks of one "
                             "activation: select one in the data (e.g. select: {activation: relu})")
        self.fixed = self._fixed_hparams(hp, dict(fixed or {})) if signal == "functional" else {}

    def on_fit_start(self) -> None:
        leaking = [n for n in self.hparam_names if n in LEAKING_HPARAMS]
        if self.hparams.signal == "functional" and leaking:
            warn(f"functional conditions {leaking}: the loss trains each emitted network on its own subset and "
                 f"noisy labels, but one emitter learns from every example across λ, so networks emitted there "
                 f"are better than networks trained there and do not emulate them; to predict what training at λ "
                 f"gives, distil a zoo (signal: outputs)")
        super().on_fit_start()

    def _fixed_hparams(self, hp: dict[str, Any], fixed: dict[str, float]) -> dict[str, float]:
        """The functional λ that are not conditions: given in ``fixed``, or fixed in the config."""
        out = {}
        for name in FUNCTIONAL_HPARAMS:
            if name in self.hparam_names:
                continue
            if name in fixed:
                out[name] = float(fixed.pop(name))
            elif isinstance(hp.get(name), dict):
                raise InputError(f"hyperparameter {name!r} varies in the zoo config ({hp[name]}) but is neither a "
                                 f"condition nor given in fixed: the hypernetwork must know it")
            elif name in hp:
                out[name] = float(hp[name])
        if fixed:
            raise InputError(f"fixed: {sorted(fixed)} are conditions or not functional hyperparameters; "
                             f"fixed takes {[n for n in FUNCTIONAL_HPARAMS if n not in self.hparam_names]}")
        return out

    # --- emitting ---------------------------------------------------------------------------------
    def condition_from_unit(self, u: Tensor, task: Tensor | None = None) -> Tensor:
        """The emitter's input for hyperparameters at unit coordinates ``u`` [B, K] and task indices [B]."""
        c = self.encoder.encode_unit(u)
        if self.task_encoder is not None:
            task = torch.zeros(len(u), dtype=torch.long, device=u.device) if task is None else task
            c = torch.cat([c, self.task_encoder(task)], 1)
        return c

    def emit_flat(self, values: Tensor) -> Tensor:
        """Flat raw weights [B, P] of the networks at ``values`` [B, len(conditions)] (own units)."""
        values = values.to(self.device, torch.float32)
        K = len(self.hparam_names)
        return self.emitter(self.condition_from_unit(self.encoder.to_unit(values[:, :K]), self.task_of(values)))

    def emit(self, values: Tensor) -> WeightBatch:
        """The networks at ``values`` [B, len(conditions)] (the conditions' own units) as raw weights."""
        return WeightBatch.from_flat(self.spec, self.emit_flat(values))

    def task_of(self, values: Tensor) -> Tensor:
        """Each row's task index (0 without the condition ``task``)."""
        if not self.multitask:
            return torch.zeros(len(values), dtype=torch.long, device=values.device)
        return values[:, -1].round().long()

    def sample_values(self, n: int) -> Tensor:
        """``n`` conditions drawn as the zoo draws λ (and a task uniformly)."""
        values = self.encoder.sample(n, device=self.device)
        if self.multitask:
            values = torch.cat([values, torch.randint(self.num_tasks, (n, 1), device=self.device).float()], 1)
        return values

    @cached_property
    def tasks(self) -> list:
        """The tasks the networks are trained and validated on (index 0: the source config's)."""
        configs = [self.source["config"], *(self.source.get("tasks") or [])]
        return [source_task(c).to(self.device) for c in configs]

    @property
    def task(self):
        return self.tasks[0]

    @cached_property
    def draws(self) -> list[ExampleDraws]:
        return [ExampleDraws(t, seed=int(self.source.get("config", {}).get("seed", 0))) for t in self.tasks]

    def lambda_dict(self, values: Tensor) -> dict[str, Tensor]:
        """name -> [M] for every functional λ: the conditions' columns and the fixed values."""
        M = values.shape[0]
        out = {name: values[:, k] for k, name in enumerate(self.hparam_names)}  # all functional (checked)
        out.update({name: torch.full((M,), v, device=values.device) for name, v in self.fixed.items()})
        return out

    # --- training ---------------------------------------------------------------------------------
    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None,
                        target_normalizer: TargetNormalizer | None = None,
                        condition_normalizer: TargetNormalizer | None = None) -> None:
        """Distillation from weights matches in the data's normalized space: take its normalizer
        (the functional signal trains on task examples, which have none)."""
        if weight_normalizer is None and self.hparams.signal != "functional":
            raise InputError(f"signal {self.hparams.signal!r} distils from a zoo: the data must be a WeightDataModule")
        super().set_normalizers(weight_normalizer)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        signal = self.hparams.signal
        if signal == "functional":
            if isinstance(batch[0], WeightBatch):
                raise InputError("signal 'functional' trains on task examples: the data must be a TaskDataModule")
            batches = list(batch) if isinstance(batch[0], (list, tuple)) else [batch]  # one batch per task
            if len(batches) != self.num_tasks:
                raise InputError(f"the hypernetwork trains on {self.num_tasks} task(s), the data serves {len(batches)}")
            values = self.sample_values(int(self.hparams.networks_per_step))
            params, task_of = self.emit(values).params(), self.task_of(values)
            losses = []
            for t, (x, y, idx) in enumerate(batches):
                rows = torch.nonzero(task_of == t).flatten()
                if len(rows):
                    losses.append(functional_loss(self.spec, [p[rows] for p in params], self.tasks[t], x, y, idx,
                                                  self.lambda_dict(values[rows]), self.draws[t], self.activation))
            loss = torch.cat(losses).mean()
        else:
            loss = self._distillation_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _distillation_loss(self, batch) -> Tensor:
        if not isinstance(batch[0], WeightBatch) or len(batch) < 2:
            raise InputError(f"signal {self.hparams.signal!r} distils zoo networks at their λ: the data must be a "
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
        """The fixed conditions of validation: a scrambled Sobol set over the ranges (for every task)."""
        n, K = int(self.hparams.eval_points), len(self.hparam_names)
        u = torch.quasirandom.SobolEngine(K, scramble=True, seed=0).draw(n) if K else torch.zeros(n, 0)
        values = self.encoder.from_unit(u)
        if self.multitask:
            tasks = torch.arange(self.num_tasks, dtype=torch.float32).repeat_interleave(n).unsqueeze(1)
            values = torch.cat([values.repeat(self.num_tasks, 1), tasks], 1)
        return values

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.hparams.signal != "functional" and isinstance(batch[0], WeightBatch) and len(batch) > 1:
            loss = self._distillation_loss(batch)
            self.collect("distill", (float(loss) * len(batch[0]), len(batch[0])))

    @torch.no_grad()
    def evaluate_at(self, values: Tensor, split: str = "val") -> dict[str, np.ndarray]:
        """Loss (and accuracy) [M] on ``split`` of the networks emitted at ``values``, each on its task."""
        values = values.to(self.device, torch.float32)
        params, task_of = self.emit(values).params(), self.task_of(values)
        out: dict[str, np.ndarray] = {}
        for t in torch.unique(task_of).tolist():
            rows = torch.nonzero(task_of == t).flatten()
            task = self.tasks[t]
            res = evaluate(self.spec, [p[rows] for p in params], task, getattr(task, f"x_{split}"),
                           getattr(task, f"y_{split}"), activation=self.activation)
            for k, v in res.items():
                out.setdefault(k, np.full(len(values), np.nan, dtype=np.float32))[rows.cpu().numpy()] = v.cpu().numpy()
        return out

    def on_validation_epoch_end(self) -> None:
        val = self.gathered("distill")
        if val:
            self.log("val/distill_loss", sum(a for a, _ in val) / sum(n for _, n in val))
        res = self.evaluate_at(self.eval_lambdas().to(self.device))
        loss = float(np.nanmean(res["loss"]))
        self.log("val/loss", loss, prog_bar=True)
        if "acc" in res:
            acc = float(np.nanmean(res["acc"]))
            self.log("val/acc", acc, prog_bar=True)
            self.log_score(acc)
        else:
            self.log_score(-loss)
