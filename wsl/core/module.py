"""``WeightSpaceModule``: the LightningModule that every model family subclasses.

A predictor, a diffusion generator and a hypernetwork differ in their science; what they share
lives here, once:

- **the weight space** (``spec_json``), linked from the DataModule by ``wsl fit`` and saved with
  the hyperparameters, so a checkpoint rebuilds its model without the zoo;
- **the normalizers** fitted by the DataModule on the training runs, handed over with one
  signature, ``set_normalizers(**datamodule.normalizers())``; they are buffers, so every
  checkpoint carries them (``normalizers_fitted`` says whether they came from data);
- **the optimizer and its schedule** (AdamW; ``constant``, or ``cosine`` decay after a linear
  warm-up of ``warmup_epochs``), set from the config; a config's own ``optimizer:`` /
  ``lr_scheduler:`` sections replace it (LightningCLI);
- **evaluation lists over ranks**: values a model keeps in Python over a validation epoch are
  joined over every process (``gathered``) before they are scored, so each rank scores the whole
  split; ``log_score`` logs ``val/score``, what the kept checkpoint is chosen by;
- **one checkpoint tag** naming the class (``CHECKPOINT_TAG``), which ``wsl.core.checkpoint.load_model``
  reads to rebuild the model tensors-only.
"""
from __future__ import annotations

import inspect
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from wsl.core.trainer import SCORE, gather_lists
from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from zoo.errors import InputError
from zoo.weight_space import WeightSpaceSpec

# The checkpoint entry naming the model's class and what a user calls it ("predictor", ...).
CHECKPOINT_TAG = "wsl_model"
# The checkpoint entry holding the random number generators' states (tensors and plain values only).
RNG_KEY = "wsl_rng_states"
SCHEDULES = ("constant", "cosine")


def rng_states() -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) as tensors and plain values, so that a
    tensors-only reader can load them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                           has_gauss, gauss], "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` recorded."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExtraState(nn.Module):
    """A submodule whose state is a dict of tensors of any size (``get_extra_state`` and
    ``set_extra_state``, which subclasses define): a checkpoint carries it beside the parameters,
    and one written before the submodule existed loads with its state empty instead of failing."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        state_dict.setdefault(prefix + "_extra_state", {})  # load_state_dict reads a copy of the caller's dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class WeightSpaceModule(pl.LightningModule):
    """The base of every model family (see the module docstring).

    Args:
        spec_json: the weight space (``WeightSpaceSpec.to_json``); ``wsl fit`` links it from the data.
        lr, weight_decay: AdamW's.
        schedule: ``constant`` or ``cosine`` (per step, to zero at the end of training).
        warmup_epochs: linear warm-up before the cosine decay.
    """

    #: What the command line calls a checkpoint of this class.
    kind = "weight-space model"

    def __init__(self, spec_json: str = "", lr: float = 1e-3, weight_decay: float = 0.0, schedule: str = "constant",
                 warmup_epochs: int = 0):
        super().__init__()
        if not spec_json:
            raise InputError(f"{type(self).__name__} needs the weight space (spec_json); with `wsl fit` it comes "
                             "from the data module's zoo file")
        if schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {list(SCHEDULES)}, found {schedule!r}")
        self.save_hyperparameters()  # every subclass's arguments too: Lightning walks the __init__ frames
        accepted = inspect.signature(type(self).__init__).parameters
        for name in [k for k in self.hparams if k not in accepted and not k.startswith("_")]:
            del self.hparams[name]  # links from the data this class does not take (LightningCLI records them all)
        self.spec = WeightSpaceSpec.from_json(spec_json)
        # kept here, not read from hparams: a subclass need not expose them as its own arguments
        self.optimizer_settings = {"lr": lr, "weight_decay": weight_decay, "schedule": schedule,
                                   "warmup_epochs": warmup_epochs}
        self.weight_normalizer = WeightNormalizer(self.spec)
        self.normalizers_fitted = False
        self._collected: dict[str, list] = {}

    # --- normalizers ------------------------------------------------------------------------------
    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None,
                        target_normalizer: TargetNormalizer | None = None,
                        condition_normalizer: TargetNormalizer | None = None) -> None:
        """Take the normalizers the DataModule fitted on the training runs: each one this model holds
        (an attribute of the same name) is loaded into its buffers. Subclasses check what they need
        first, then call this."""
        given = {"weight_normalizer": weight_normalizer, "target_normalizer": target_normalizer,
                 "condition_normalizer": condition_normalizer}
        for name, fitted in given.items():
            own = getattr(self, name, None)
            if fitted is not None and isinstance(own, nn.Module):
                own.load_state_dict(fitted.state_dict())
        if weight_normalizer is not None:
            self.normalizers_fitted = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.normalizers_fitted = True  # the checkpoint's buffers are the data's fitted normalizers
        if RNG_KEY in checkpoint:  # resuming continues the random streams where they stopped
            set_rng_states(checkpoint[RNG_KEY])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_TAG] = {"class": f"{cls.__module__}.{cls.__qualname__}", "kind": cls.kind}
        checkpoint[RNG_KEY] = rng_states()

    # --- evaluation over ranks --------------------------------------------------------------------
    def collect(self, key: str, value: Any) -> None:
        """Keep a value of this evaluation epoch under ``key`` (joined over ranks by ``gathered``)."""
        self._collected.setdefault(key, []).append(value)

    def gathered(self, key: str) -> list:
        """The values kept under ``key`` this epoch, joined over every rank in rank order, and forgotten."""
        return gather_lists(self._collected.pop(key, []))

    def forget_collected(self) -> None:
        """Drop what was kept this epoch (e.g. after a sanity check)."""
        self._collected.clear()

    def log_score(self, value: float | torch.Tensor) -> None:
        """Log ``val/score``: higher is better; the kept checkpoint is the best one by it."""
        self.log(SCORE, value)

    # --- optimization -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: parameters that take gradients (not a moving average's copy)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.optimizer_settings
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        if hp["schedule"] == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1000
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1)) if self._trainer is not None else 0
        warm = min(total // 2, int(hp["warmup_epochs"]) * per_epoch)

        def cosine(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
