"""Diffusion weight generators as LightningModules, trained on ``WeightDataModule`` batches.

- ``WeightDiffusion``: diffusion directly on normalized weights. Its denoiser is an equivariant
  backbone of the core (``denoiser: hnp``, ``np``, ``dwsnet``, ``ngnn``, ``ngt``) or the flat MLP
  in a canonical neuron order (``canonical``), so the generator respects hidden-neuron
  permutations by construction, or ``mlp`` on the flat vector (HyperDiffusion's choice, no symmetry).
- ``LatentDiffusion``: p-diff / SANE: a neuron-token autoencoder (``wsl.diffusion.autoencoder``),
  trained for ``autoencoder_epochs``, then frozen, and a diffusion model over its codes.

Both share ``WeightGenerator``: conditioning on stored properties (``conditions``, standardized
with the training runs' statistics) with classifier-free guidance, an exponential moving average
of the denoiser (what samples come from), and ``sample``, which returns raw weights (the weight
normalizer inverted). Validation uses held-out runs and the task's validation examples only: the
denoising loss at fixed noise on the validation runs (``val/loss``), and ``eval_samples``
networks sampled and run on the task's validation examples (``val/gen_acc``; conditional
generators also ``val/cond_corr``, requested against achieved accuracy, the validation runs'
conditions as requests); for INR zoos ``val/gen_psnr``, the PSNR of sampled INRs to their nearest
validation signal (conditioned on a signal field such as the label also ``val/cond_exact``, how
often that signal has the requested value). ``val/score``, what the kept checkpoint is chosen by,
is ``val/gen_acc`` (``val/gen_psnr``) where the task can be run here, else minus ``val/loss``: a
low denoising loss on held-out runs alone was seen to pick early checkpoints whose samples are poor
networks. Test data is never
looked at here. How often validation runs is the Trainer's ``check_val_every_n_epoch``.
"""
from __future__ import annotations

import json
import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from wsl.core.module import WeightSpaceModule
from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.diffusion.autoencoder import WeightAutoencoder
from wsl.diffusion.denoisers import CanonicalDenoiser, EquivariantDenoiser, MLPDenoiser
from wsl.diffusion.process import Diffusion
from wsl.diffusion.scores import conditional_agreement
from wsl.data.task import source_task
from wsl.diffusion.networks import evaluate_networks, inr_metrics
from zoo.signals import SignalSet
from wsl.nn import BACKBONES
from wsl.weights import WeightBatch
from zoo.errors import InputError


class WeightGenerator(WeightSpaceModule):
    """What every diffusion generator shares; subclasses define the space diffusion runs in.

    Args:
        spec_json, source_json: the weight space and where the data came from (zoo config,
            selection); with ``wsl fit`` both are linked from the DataModule.
        conditions: names of the stored properties the generator is conditioned on (linked from
            the DataModule's ``conditions``); empty: unconditional.
        prediction: ``v``, ``eps`` or ``x0`` (``wsl.diffusion.process``).
        condition_dropout: fraction of training examples whose condition is dropped, so that one
            network is both the conditional and the unconditional model (classifier-free guidance).
        ema_decay: decay of the moving average of the denoiser's parameters (0: none).
        sample_steps: DDIM steps used in validation and as ``sample``'s default.
        eval_samples: networks sampled at each validation (0: none; ``val/score`` is then minus the loss).
        lr, weight_decay, schedule, warmup_epochs: the optimizer (``WeightSpaceModule``).
    """

    kind = "generator"

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 prediction: str = "v", condition_dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.0,
                 ema_decay: float = 0.999, sample_steps: int = 50, eval_samples: int = 64, schedule: str = "constant",
                 warmup_epochs: int = 0):
        if not 0 <= condition_dropout < 1:
            raise InputError(f"condition_dropout must be in [0, 1), found {condition_dropout}")
        super().__init__(spec_json, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs)
        self.source = json.loads(source_json)
        self.conditions = list(conditions or [])
        self.diffusion = Diffusion(prediction)
        self.condition_normalizer = TargetNormalizer(len(self.conditions)) if self.conditions else None

    # --- what subclasses define (and ``self.net``, the denoiser) -----------------------------------
    def diffusion_space(self, x: Tensor) -> Tensor:
        """Normalized flat weights [B, D] -> the flat tensors diffusion runs on."""
        raise NotImplementedError

    def weights_from(self, z: Tensor) -> Tensor:
        """The inverse of ``diffusion_space``: samples -> normalized flat weights."""
        raise NotImplementedError

    def _make_ema(self) -> None:
        decay = float(self.hparams.ema_decay)
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay > 0 else None
        if self.ema is not None:  # averaged, not trained: DDP must not wait for its gradients
            self.ema.requires_grad_(False)

    @property
    def averaged_net(self) -> nn.Module:
        """The denoiser samples and validation use: the moving average where there is one."""
        return self.ema.module if self.ema is not None else self.net

    # --- normalizers ------------------------------------------------------------------------------
    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None,
                        target_normalizer: TargetNormalizer | None = None,
                        condition_normalizer: TargetNormalizer | None = None) -> None:
        """The weight normalizer and, for a conditional generator, the conditions' (``WeightDataModule.normalizers()``)."""
        if weight_normalizer is None:
            raise InputError(f"{type(self).__name__} learns normalized weights: the data must be a WeightDataModule")
        if self.conditions and condition_normalizer is None:
            raise InputError(f"the generator is conditioned on {self.conditions}, but the data serves no conditions")
        super().set_normalizers(weight_normalizer, condition_normalizer=condition_normalizer)

    # --- training ---------------------------------------------------------------------------------
    def _batch(self, batch) -> tuple[Tensor, Tensor | None]:
        wb = batch[0]
        if wb.spec != self.spec:
            raise InputError(f"the data's weight space [{', '.join(wb.spec.param_names)}] is not the generator's "
                             f"[{', '.join(self.spec.param_names)}]")
        cond = None
        if self.conditions:
            if len(batch) < 2:
                raise InputError(f"the generator is conditioned on {self.conditions}: the data module must serve "
                                 f"them (data.conditions)")
            cond = self.condition_normalizer(batch[1].float())
        return wb.flatten(), cond

    def _drop(self, cond: Tensor | None) -> Tensor | None:
        if cond is None:
            return None
        return torch.rand(len(cond), device=cond.device) < self.hparams.condition_dropout

    def diffusion_loss(self, x: Tensor, cond: Tensor | None, drop: Tensor | None = None,
                       denoiser: nn.Module | None = None, **kw) -> Tensor:
        """The mean denoising loss of normalized flat weights ``x`` (``kw``: fixed ``t`` and ``noise``)."""
        with torch.no_grad():
            z = self.diffusion_space(x)
        return self.diffusion.loss(self.net if denoiser is None else denoiser, z, cond, drop, **kw).mean()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, cond = self._batch(batch)
        loss = self.diffusion_loss(x, cond, self._drop(cond))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    # --- validation: held-out runs and the task's validation examples ------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, cond = self._batch(batch)
        g = torch.Generator().manual_seed(batch_idx)  # the same noise every epoch: comparable losses
        t = torch.rand(len(x), generator=g).to(x.device)
        noise = torch.randn(len(x), self.code_dim, generator=g).to(x.device)
        loss = self.diffusion_loss(x, cond, denoiser=self.averaged_net, t=t, noise=noise)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)
        self.collect("losses", (float(loss) * len(x), len(x)))
        if cond is not None:
            self.collect("conditions", batch[1].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        losses, conditions = self.gathered("losses"), self.gathered("conditions")
        requested = torch.cat(conditions) if conditions else None
        if self.trainer.sanity_checking:
            return
        score = -sum(l for l, _ in losses) / max(1, sum(k for _, k in losses)) if losses else float("-inf")
        task = self.task
        n = int(self.hparams.eval_samples)
        inr = isinstance(task, SignalSet)
        if n > 0 and (inr or (task is not None and task.kind == "classification")):
            if requested is not None:  # n of the validation runs' own conditions, drawn seeded
                requested = requested[torch.randperm(len(requested), generator=torch.Generator().manual_seed(0))[:n]]
                n = len(requested)
            quality, agreement = self._validation_scores(self.sample(n, requested, seed=0).to("cpu"), requested)
            score = float(np.mean(quality))
            self.log("val/gen_psnr" if inr else "val/gen_acc", score)
            if agreement is not None and np.isfinite(agreement):
                self.log("val/cond_exact" if inr else "val/cond_corr", agreement)
        self.log_score(score)

    def _validation_scores(self, wb: WeightBatch, requested: Tensor | None) -> tuple[np.ndarray, float | None]:
        """Sampled networks judged on the task's validation data only: their quality (accuracy on
        the validation examples; for INRs the PSNR to the nearest validation signal; non-finite
        networks score 0) and, for ``requested`` conditions, how well they met the first that can
        be checked there: Pearson r of requested accuracy and achieved validation accuracy (an
        ``*_acc`` condition), or the fraction whose nearest validation signal has the requested
        value (a signal field such as ``label``). None when no condition can be checked."""
        task = self.task
        if isinstance(task, SignalSet):
            near = inr_metrics(self.spec, wb, task, splits=("val",))
            quality = np.nan_to_num(near["val_psnr"], nan=0.0)
            fields = [k for k, name in enumerate(self.conditions) if name in task.fields]
            if requested is None or not fields:
                return quality, None
            found = np.asarray(task.fields[self.conditions[fields[0]]])[np.maximum(near["val_signal"], 0)]
            met = (found == requested[:, fields[0]].round().numpy()) & (near["val_signal"] >= 0)
            return quality, float(met.mean())
        quality = np.nan_to_num(evaluate_networks(self.spec, wb, task, splits=("val",))["val_acc"], nan=0.0)
        accuracy = [k for k, name in enumerate(self.conditions) if name.endswith("_acc")]
        if requested is None or not accuracy:
            return quality, None
        return quality, conditional_agreement(requested[:, accuracy[0]].numpy(), quality)["pearson"]

    def validation_agreement(self, requested: Tensor, guidance: float = 1.0, seed: int = 0, steps: int | None = None,
                             eta: float = 0.0) -> float:
        """How well networks sampled for ``requested`` conditions (``[n, K]``, the properties' own
        units) at this ``guidance`` meet them on validation data (``_validation_scores``): what a
        guidance scale is chosen by, never test data. NaN when no condition can be checked."""
        agreement = self._sampled_scores(len(requested), requested, guidance, seed, steps, eta)[1]
        return float("nan") if agreement is None else float(agreement)

    def validation_quality(self, num: int, requested: Tensor | None = None, guidance: float = 1.0, seed: int = 0,
                           steps: int | None = None, eta: float = 0.0) -> float:
        """The mean quality on validation data (accuracy on the task's validation examples; for INRs
        the PSNR to the nearest validation signal) of ``num`` networks sampled with these settings
        (``requested``: ``[num, K]`` conditions, or None): what sampler settings are chosen by."""
        return float(np.mean(self._sampled_scores(num, requested, guidance, seed, steps, eta)[0]))

    def _sampled_scores(self, num: int, requested: Tensor | None, guidance: float, seed: int, steps: int | None,
                        eta: float) -> tuple[np.ndarray, float | None]:
        requested = None if requested is None else torch.as_tensor(requested, dtype=torch.float32)
        wb = self.sample(num, requested, guidance=guidance, seed=seed, steps=steps, eta=eta).to("cpu")
        return self._validation_scores(wb, requested)

    @cached_property
    def task(self):
        """The task the source zoo was trained on (an INR zoo's: its signals); None when it cannot be
        rebuilt here (e.g. its IDX files are missing)."""
        config = self.source.get("config")
        if not config:
            return None
        try:
            return source_task(config)
        except (ValueError, FileNotFoundError):
            return None

    # --- sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int, conditions: Tensor | None = None, guidance: float = 1.0, seed: int = 0,
               steps: int | None = None, eta: float = 0.0, batch_size: int = 256) -> WeightBatch:
        """``num`` networks as raw weights (the weight normalizer inverted). ``conditions``:
        ``[num, K]`` (or ``[K]`` for all) in the properties' own units; ``guidance``: the
        classifier-free guidance scale (1 = the plain conditional model)."""
        cond = None
        if conditions is not None:
            if not self.conditions:
                raise InputError("this generator is unconditional; it takes no conditions")
            c = torch.as_tensor(conditions, dtype=torch.float32)
            c = c.expand(num, -1) if c.dim() == 1 else c
            if tuple(c.shape) != (num, len(self.conditions)):
                raise InputError(f"conditions: expected [{num}, {len(self.conditions)}] values of "
                                 f"{self.conditions}, found {list(c.shape)}")
            cond = self.condition_normalizer(c.to(self.device))
        den = self.averaged_net
        was_training = den.training
        den.eval()
        g = torch.Generator().manual_seed(int(seed))
        parts = []
        for s in range(0, num, batch_size):
            b = min(batch_size, num - s)
            z = self.diffusion.sample(den, (b, self.code_dim), None if cond is None else cond[s:s + b], guidance,
                                      steps or int(self.hparams.sample_steps), eta, g, self.device)
            parts.append(self.weights_from(z))
        den.train(was_training)
        flat = torch.cat(parts)
        return self.weight_normalizer.inverse(WeightBatch.from_flat(self.spec, flat))


class WeightDiffusion(WeightGenerator):
    """Diffusion on normalized weights with an equivariant (or MLP) denoiser.

    Args (beyond ``WeightGenerator``'s): ``denoiser``: a backbone name (``hnp``, ``np``, ``dwsnet``,
    ``ngnn``, ``ngt``), ``canonical`` or ``mlp``; ``denoiser_kwargs``: its options (``channels``,
    ``layers``, ``emb_dim``, ...; for ``mlp`` and ``canonical``: ``hidden``, ``layers``, ``emb_dim``).
    The equivariant denoisers need weights normalized per tensor (which commutes with neuron
    permutations); ``canonical`` takes its reference network from the data module when fitting
    starts (``WeightDataModule.reference_network``)."""

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 denoiser: str = "hnp", denoiser_kwargs: dict | None = None, prediction: str = "v",
                 condition_dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.0,
                 ema_decay: float = 0.999, sample_steps: int = 50, eval_samples: int = 64, schedule: str = "constant",
                 warmup_epochs: int = 0):
        super().__init__(spec_json, source_json, conditions, prediction, condition_dropout, lr, weight_decay,
                         ema_decay, sample_steps, eval_samples, schedule, warmup_epochs)
        kw = dict(denoiser_kwargs or {})
        k = len(self.conditions)
        if denoiser == "mlp":
            self.net = MLPDenoiser(self.spec.num_params, num_conditions=k, **kw)
        elif denoiser == "canonical":
            self.net = CanonicalDenoiser(self.spec, num_conditions=k, **kw)
        elif denoiser in BACKBONES:
            self.net = EquivariantDenoiser(self.spec, denoiser, num_conditions=k, **kw)
        else:
            raise InputError(f"unknown denoiser {denoiser!r}; expected 'mlp', 'canonical' or a backbone "
                             f"{sorted(BACKBONES)}")
        self.code_dim = self.spec.num_params
        self._make_ema()

    def set_normalizers(self, weight_normalizer: WeightNormalizer | None = None,
                        target_normalizer: TargetNormalizer | None = None,
                        condition_normalizer: TargetNormalizer | None = None) -> None:
        if weight_normalizer is not None and weight_normalizer.per_parameter and self.hparams.denoiser != "mlp":
            raise InputError(f"denoiser {self.hparams.denoiser!r} is equivariant to hidden-neuron permutations, which "
                             "per-parameter normalization (data.normalize: parameter) breaks: use normalize: tensor")
        super().set_normalizers(weight_normalizer, target_normalizer, condition_normalizer)

    def set_reference(self, wb: WeightBatch) -> None:
        """The canonical denoiser's reference network (raw weights of one training network)."""
        if not isinstance(self.net, CanonicalDenoiser):
            raise InputError(f"only the canonical denoiser takes a reference network, not {self.hparams.denoiser!r}")
        flat = self.weight_normalizer(wb.to(self.device)).flatten()
        for net in (self.net, self.averaged_net):  # the moving average holds its own copy of the buffers
            net.set_reference(flat)

    def on_fit_start(self) -> None:
        if isinstance(self.net, CanonicalDenoiser) and not bool(self.net.has_reference):
            reference = getattr(getattr(self.trainer, "datamodule", None), "reference_network", None)
            if reference is None:
                raise RuntimeError("the canonical denoiser takes its reference network from a WeightDataModule: "
                                   "fit with one (trainer.fit(model, datamodule))")
            self.set_reference(reference())

    def diffusion_space(self, x: Tensor) -> Tensor:
        return x

    def weights_from(self, z: Tensor) -> Tensor:
        return z


class LatentDiffusion(WeightGenerator):
    """p-diff / SANE: a neuron-token autoencoder, then diffusion over its codes (MLP denoiser).

    Args (beyond ``WeightGenerator``'s): ``autoencoder_kwargs`` (``latent_dim``, ``d_model``,
    ``layers``, ``heads``, ``input_noise``, ``latent_noise``), ``autoencoder_epochs`` (the first
    epochs train the autoencoder alone, the rest the diffusion model on its frozen codes),
    ``denoiser_kwargs`` (``MLPDenoiser``: ``hidden``, ``layers``, ``emb_dim``)."""

    def __init__(self, spec_json: str = "", source_json: str = "{}", conditions: list[str] | None = None,
                 autoencoder_kwargs: dict | None = None, autoencoder_epochs: int = 20,
                 denoiser_kwargs: dict | None = None, prediction: str = "v", condition_dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 0.0, ema_decay: float = 0.999, sample_steps: int = 50,
                 eval_samples: int = 64, schedule: str = "constant", warmup_epochs: int = 0):
        super().__init__(spec_json, source_json, conditions, prediction, condition_dropout, lr, weight_decay,
                         ema_decay, sample_steps, eval_samples, schedule, warmup_epochs)
        self.autoencoder = WeightAutoencoder(self.spec, **(autoencoder_kwargs or {}))
        self.code_dim = math.prod(self.autoencoder.code_shape)
        self.net = MLPDenoiser(self.code_dim, num_conditions=len(self.conditions), **(denoiser_kwargs or {}))
        # the codes' scale, measured on the first diffusion batch (0: not yet), so diffusion sees unit-scale data
        self.register_buffer("code_scale", torch.tensor(0.0))
        self._make_ema()

    @property
    def autoencoder_phase(self) -> bool:
        return self.current_epoch < int(self.hparams.autoencoder_epochs)

    def diffusion_space(self, x: Tensor) -> Tensor:
        was = self.autoencoder.training
        self.autoencoder.eval()
        z = self.autoencoder.encode(x).flatten(1)
        self.autoencoder.train(was)
        if self.code_scale == 0:
            self.code_scale.fill_(z.std().clamp_min(1e-6))
        return z / self.code_scale

    def weights_from(self, z: Tensor) -> Tensor:
        scale = self.code_scale if self.code_scale > 0 else torch.ones_like(self.code_scale)
        return self.autoencoder.decode((z * scale).view(len(z), *self.autoencoder.code_shape))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, cond = self._batch(batch)
        if self.autoencoder_phase:
            loss = self.autoencoder.loss(x).mean()
            self.log("train/recon", loss, prog_bar=True, batch_size=len(x))
            return loss
        self.autoencoder.requires_grad_(False)
        loss = self.diffusion_loss(x, cond, self._drop(cond))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self.autoencoder_phase:
            super().on_train_batch_end(outputs, batch, batch_idx)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, cond = self._batch(batch)
        self.log("val/recon", self.autoencoder.loss(x).mean(), batch_size=len(x))
        if self.autoencoder_phase:  # no diffusion model yet: never the checkpoint to keep
            self.log("val/loss", torch.tensor(float("inf")), prog_bar=True, batch_size=len(x))
            return
        super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if self.autoencoder_phase or self.code_scale == 0:  # no diffusion model yet: the worst score
            self.forget_collected()
            self.log_score(float("-inf"))
            return
        super().on_validation_epoch_end()
