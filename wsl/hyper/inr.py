"""``INRHyperNetwork``: a LightningModule that emits a SIREN for a signal, from the signal itself (an
image encoder) or from its class (a label embedding), on a ``SignalDataModule`` over an INR zoo.

Training signals:

- ``functional``: the emitted SIRENs run on the zoo's coordinate grid through the population
  forward (``zoo.functional.population_forward``), and their reconstruction MSE against the
  signals is the loss. No fitted network is needed: the zoo only supplies the signals.
- ``weights`` (distillation): the emitted weights match the zoo's fitted SIRENs in the data's
  normalized weight space (``WeightNormalizer``, fitted on training runs), by mean squared error.

Validation runs on validation signals only: the emitted SIRENs' PSNR against their signals, as the
zoo computes it for its fitted INRs (``zoo.inr.psnr``, peak = the width of the value range), is
``val/psnr`` and ``val/score`` (what the kept checkpoint is chosen by). Test signals are only
evaluated by ``test``, never used to choose.

Class conditioning emits one SIREN per class: its PSNR is bounded by how far each image is from
its class's mean image; image conditioning can approach the zoo's fits.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsl.core.module import WeightSpaceModule
from wsl.hyper.conditioning import LabelEncoder
from wsl.hyper.emitter import WeightEmitter
from wsl.hyper.model import PARAMETRIZATIONS
from wsl.weights import WeightBatch
from zoo.functional import population_forward
from zoo.inr import psnr
from zoo.signals import grid_coords
from zoo.errors import InputError

SIGNALS = ("functional", "weights")
CONDITIONS = ("image", "class")


class ImageEncoder(nn.Module):
    """A signal on its grid ``[B, P, C]`` -> an embedding ``[B, dim]``.

    2-D signals (images) go through a small CNN (two 3x3 convolutions, the second with stride 2,
    then average pooling to at most 4x4, so the head's size does not grow with the image);
    other signals through an MLP on the flattened values."""

    def __init__(self, signal_shape: tuple[int, ...] | list[int], channels: int = 1, dim: int = 128,
                 width: int = 32):
        super().__init__()
        self.signal_shape, self.channels = tuple(int(s) for s in signal_shape), int(channels)
        self.points = 1
        for s in self.signal_shape:
            self.points *= s
        if dim < 1 or width < 1 or self.channels < 1:
            raise InputError(f"ImageEncoder: dim, width and channels must be >= 1, found {dim}, {width}, {channels}")
        self.out_dim = int(dim)
        if len(self.signal_shape) == 2:
            h, w = self.signal_shape
            pooled = (min(4, (h + 1) // 2), min(4, (w + 1) // 2))
            self.net = nn.Sequential(
                nn.Conv2d(self.channels, width, 3, padding=1), nn.GELU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
                nn.AdaptiveAvgPool2d(pooled), nn.Flatten(),
                nn.Linear(2 * width * pooled[0] * pooled[1], dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(self.points * self.channels, dim), nn.GELU(),
                                     nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor) -> Tensor:
        if values.dim() != 3 or tuple(values.shape[1:]) != (self.points, self.channels):
            raise InputError(f"ImageEncoder: expected signals [B, {self.points}, {self.channels}] on the "
                             f"{list(self.signal_shape)} grid, found {list(values.shape)}")
        if len(self.signal_shape) == 2:  # grid points are row-major: [B, H*W, C] -> [B, C, H, W]
            values = values.transpose(1, 2).reshape(len(values), self.channels, *self.signal_shape)
        return self.net(values)


class INRHyperNetwork(WeightSpaceModule):
    """Args:
        spec_json, source_json: the SIREN weight space and the zoo's signals (linked from the
            ``SignalDataModule``; ``source_json["signals"]``: grid shape, value range, classes).
        conditions: ``["image"]`` or ``["class"]`` (linked from the data module).
        signal: ``functional`` (reconstruction loss) or ``weights`` (distillation; see the module docstring).
        parametrization: ``plain``, or ``mip`` (Ortiz et al. 2024: the condition embedding on the unit
            sphere, and the emitted weights a residual on learned base weights θ₀).
        heads, hidden, depth, chunk_size, chunk_dim: the emitter (``wsl.hyper.emitter.WeightEmitter``).
        embed_dim: width of the condition embedding (the image encoder's output, or the label embedding).
        encoder_width: channels of the image encoder's first convolution.
        lr, weight_decay, schedule, warmup_epochs: the optimizer (``WeightSpaceModule``).
        seed: seeds the base weights θ₀ with ``mip``.
    """

    kind = "INR hypernetwork"

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 signal: str = "functional", parametrization: str = "plain", heads: str = "chunk",
                 hidden: int = 256, depth: int = 2, chunk_size: int = 256, chunk_dim: int = 32,
                 embed_dim: int = 128, encoder_width: int = 32, lr: float = 1e-3, weight_decay: float = 0.0,
                 seed: int = 0, schedule: str = "constant", warmup_epochs: int = 0):
        if signal not in SIGNALS:
            raise InputError(f"signal must be one of {list(SIGNALS)}, found {signal!r}")
        if parametrization not in PARAMETRIZATIONS:
            raise InputError(f"parametrization must be one of {list(PARAMETRIZATIONS)}, found {parametrization!r}")
        conditions = list(conditions or [])
        if len(conditions) != 1 or conditions[0] not in CONDITIONS:
            raise InputError(f"conditions must be one of {[[c] for c in CONDITIONS]} (data.conditions), "
                             f"found {conditions!r}")
        super().__init__(spec_json, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs)
        if self.spec.activation is None:
            raise InputError("the weight space's activation varies per network; an INR hypernetwork emits networks "
                             "of one activation")
        self.source = json.loads(source_json)
        sig = self.source.get("signals")
        if not isinstance(sig, dict):
            raise InputError(f"source_json: expected a 'signals' entry (grid shape, value range, classes) as "
                             f"SignalDataModule writes it, found keys {sorted(self.source)}")
        self.condition = conditions[0]
        self.signal_shape = tuple(int(s) for s in sig["shape"])
        self.out_channels = int(sig["out_dim"])
        self.peak = float(sig["target_range"][1]) - float(sig["target_range"][0])
        self.num_classes = sig.get("num_classes")
        coords = grid_coords(self.signal_shape)
        if coords.shape[1] != self.spec.layers[0].in_features or self.spec.layers[-1].out_features != self.out_channels:
            raise InputError(f"the weight space maps {self.spec.layers[0].in_features} -> "
                             f"{self.spec.layers[-1].out_features}, the signals {coords.shape[1]} -> {self.out_channels}")
        self.register_buffer("coords", coords, persistent=False)  # rebuilt from the hyperparameters
        mip = parametrization == "mip"
        if self.condition == "image":
            self.cond_encoder = ImageEncoder(self.signal_shape, self.out_channels, embed_dim, encoder_width)
        else:
            if not self.num_classes:
                raise InputError(f"condition 'class': the zoo's signals have no classes (source_json signals: {sig})")
            self.cond_encoder = LabelEncoder(int(self.num_classes), embed_dim, mip=mip)
        self.emitter = WeightEmitter(self.spec, embed_dim, hidden=hidden, depth=depth, heads=heads,
                                     chunk_size=chunk_size, chunk_dim=chunk_dim, mip=mip, base_seed=seed)

    # --- conditions -------------------------------------------------------------------------------
    def as_signals(self, images: Tensor) -> Tensor:
        """Images ``[B, *signal_shape]`` (one channel) or ``[B, *signal_shape, C]``, or signals already on
        the grid ``[B, P, C]`` -> ``[B, P, C]`` float."""
        images = torch.as_tensor(images)
        P = self.coords.shape[0]
        C, shape = self.out_channels, self.signal_shape
        B = images.shape[0] if images.dim() else 0
        if images.dim() == 3 and tuple(images.shape[1:]) == (P, C):
            out = images
        elif C == 1 and tuple(images.shape[1:]) == shape:
            out = images.reshape(B, P, 1)
        elif tuple(images.shape[1:]) == (*shape, C):
            out = images.reshape(B, P, C)
        else:
            raise InputError(f"images: expected [B, {P}, {C}] values on the signal grid, or [B, "
                             f"{', '.join(map(str, shape))}{'' if C == 1 else f', {C}'}] images, "
                             f"found {list(images.shape)}")
        if not out.is_floating_point():
            out = out.float()
        return out.to(self.device, torch.float32)

    def encode(self, cond: Tensor) -> Tensor:
        """The condition embedding ``[B, embed_dim]`` of images (``as_signals``' forms) or class labels ``[B]``."""
        if self.condition == "class":
            labels = torch.as_tensor(cond)
            if labels.is_floating_point() or labels.dim() != 1:
                raise InputError(f"class labels: expected integers [B] in [0, {self.num_classes}), found "
                                 f"{labels.dtype} of shape {list(labels.shape)}")
            try:
                return self.cond_encoder(labels.to(self.device))
            except ValueError as e:
                raise InputError(f"class labels: {e}") from None
        h = self.cond_encoder(self.as_signals(cond))
        return F.normalize(h, dim=1) if self.hparams.parametrization == "mip" else h

    # --- emitting ---------------------------------------------------------------------------------
    def emit_flat(self, cond: Tensor) -> Tensor:
        """Flat raw weights ``[B, spec.num_params]`` of the SIRENs for images or class labels ``cond``."""
        return self.emitter(self.encode(cond))

    def emit(self, cond: Tensor) -> WeightBatch:
        """The SIRENs (raw weights) for images or class labels ``cond``."""
        return WeightBatch.from_flat(self.spec, self.emit_flat(cond))

    def render(self, wb: WeightBatch) -> Tensor:
        """Networks' outputs ``[B, P, C]`` on the signal grid (the population forward, one call)."""
        return population_forward(self.spec, wb.params(), self.coords.to(wb.weights[0].device))

    def signal_mse(self, wb: WeightBatch, values: Tensor) -> Tensor:
        """Per network ``[B]``: the mean squared error of its output on the grid against ``values``."""
        return (self.render(wb) - values).pow(2).mean(dim=(1, 2))

    def signal_psnr(self, wb: WeightBatch, values: Tensor) -> Tensor:
        """Per network ``[B]``: its PSNR in dB, as the zoo computes it for fitted INRs."""
        return psnr(self.signal_mse(wb, values), self.peak)

    # --- training ---------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.hparams.signal == "weights" and not self.normalizers_fitted:
            raise InputError("signal 'weights' matches weights in the data's normalized space: call "
                             "model.set_normalizers(**datamodule.normalizers()) before fitting (wsl fit does)")

    def _unpack(self, batch) -> tuple[WeightBatch, Tensor, Tensor]:
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 3 and isinstance(batch[0], WeightBatch)):
            raise InputError("INRHyperNetwork trains on a SignalDataModule: batches (WeightBatch, values, labels)")
        return batch[0], batch[1].float(), batch[2]

    def _condition_of(self, values: Tensor, labels: Tensor) -> Tensor:
        return values if self.condition == "image" else labels

    def distillation_loss(self, student: WeightBatch, teacher: WeightBatch) -> Tensor:
        """Mean squared error between student and teacher weights, both normalized."""
        return (self.weight_normalizer(student).flatten() - self.weight_normalizer(teacher).flatten()).pow(2).mean()

    def loss(self, batch) -> Tensor:
        """The training loss of a batch: reconstruction MSE (``functional``) or distillation (``weights``)."""
        teacher, values, labels = self._unpack(batch)
        wb = self.emit(self._condition_of(values, labels))
        if self.hparams.signal == "functional":
            return self.signal_mse(wb, values).mean()
        return self.distillation_loss(wb, teacher)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    # --- evaluation -------------------------------------------------------------------------------
    def _eval_step(self, batch, split: str) -> None:
        teacher, values, labels = self._unpack(batch)
        wb = self.emit(self._condition_of(values, labels))
        mse = self.signal_mse(wb, values)
        self.collect(split, torch.stack([mse, psnr(mse, self.peak),
                                         self.distillation_loss(wb, teacher).expand_as(mse)], 1).detach())

    def _eval_epoch_end(self, split: str) -> None:
        parts = self.gathered(split)
        if not parts:
            return
        mse, db, distill = torch.cat(parts).mean(0)
        self.log(f"{split}/mse", mse)
        self.log(f"{split}/psnr", db, prog_bar=True)
        if self.normalizers_fitted:  # only meaningful in the data's normalized space
            self.log(f"{split}/distill_loss", distill)
        if split == "val":
            self.log_score(db)  # the kept checkpoint: best PSNR on validation signals

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
