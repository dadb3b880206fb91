"""``wsl demo``: the whole story on the embedded default, in minutes on a laptop CPU.

1. generate the demo zoo (configs/zoo/digits_mlp.yaml; a zoo already there is resumed or reused),
2. split it by run into train / validation / test runs (``wsl.data.PropertyDataModule``),
3. train predictors of test accuracy from weights with Lightning: an equivariant encoder, the
   StatNN baseline (Unterthiner et al. 2020) and the probe encoder (each network run on learned
   inputs, with its own activation); the checkpoint kept is the best on validation runs,
4. predict the held-out test runs' checkpoints, print Kendall tau / R^2 / MAE side by side, plot
   predicted vs true,
5. export one held-out checkpoint as a plain ``state_dict`` file and run ``wsl predict`` on it.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from scipy.stats import kendalltau
from sklearn.metrics import mean_absolute_error, r2_score

from wsl.cli.plots import prediction_scatter
from wsl.data import PropertyDataModule
from wsl.prediction.fit import fit_predictor
from wsl.prediction.predict import run_predict
from zoo.config import load_config, shipped_configs
from zoo.generate import generate
from zoo.store import Zoo

TARGET = "test_acc"
# (label, encoder, encoder options, learning rate, epochs): sized for a few minutes on 2 CPU cores.
# NFN-HNP, the slowest (~9 s an epoch), plateaus early: validation tau 0.713 at epoch 3, 0.715 at 8
# and 0.721 at 12 on a fresh clone, so 8 epochs keep the demo under 4 minutes on a slow run.
PREDICTORS = [
    ("NFN-HNP (equivariant)", "hnp", {"channels": 16, "layers": 2, "head_hidden": 128}, 3e-3, 8),
    ("StatNN (baseline)", "statnn", {"hidden": 256, "layers": 3}, 3e-3, 12),
    ("Probe (learned inputs)", "probe", {"probes": 128, "hidden": 256, "layers": 3, "weight_stats": True,
                                         "generator_layers": 6, "softmax": True}, 1e-3, 12),
]


class _EpochPrinter(pl.Callback):
    """One line per epoch instead of a progress bar: the demo's output stays readable in a log. At the
    end of a training epoch, which Lightning calls after that epoch's validation has been logged."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        if "val/tau" in m:
            print(f"      epoch {trainer.current_epoch + 1:>2}/{trainer.max_epochs}  train loss "
                  f"{float(m.get('train/loss', float('nan'))):.3f}  validation tau {float(m['val/tau']):.3f}", flush=True)


def run_demo(out_dir: str | Path = "wsl_demo", config: str | Path = shipped_configs("zoo") / "digits_mlp.yaml",
             device: str = "auto") -> dict[str, float]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no accelerator banners
    warnings.filterwarnings("ignore", module="lightning")
    cfg = load_config(config)
    t0 = time.perf_counter()
    print(f"[1/5] generating the zoo {cfg.name}: {cfg.num_models} models x {cfg.epochs} epochs", flush=True)
    zoo_path = generate(cfg, out_dir / f"{cfg.name}.h5", device=device)
    with Zoo(zoo_path) as zoo:
        print(zoo.summary())

    print("[2/5] splitting by run: 70% train / 10% validation / 20% test runs", flush=True)
    dm = PropertyDataModule([str(zoo_path)], target=TARGET, checkpoints="all", batch_size=64,
                       augment={"permutation": True})
    dm.setup("fit")
    print(dm.info())

    truth = dm.items("test")["targets"].numpy()
    results, ckpts = {}, {}
    for k, (label, encoder, kwargs, lr, epochs) in enumerate(PREDICTORS):
        print(f"[3/5] training {label}: {epochs} epochs", flush=True)
        t = time.perf_counter()
        pl.seed_everything(k, verbose=False)  # the same demo every run, whatever ran before in this process
        fitted = fit_predictor(dm, encoder, kwargs, lr, epochs, out_dir / encoder, callbacks=[_EpochPrinter()])
        ckpts[label], results[label] = fitted.checkpoint, fitted.test_predictions
        print(f"      {label} trained in {time.perf_counter() - t:.0f} s", flush=True)

    print(f"[4/5] predicting {len(truth)} checkpoints of {len(dm.split_runs['test'])} held-out test runs")
    taus = {}
    for label, pred in results.items():
        taus[label] = float(kendalltau(truth, pred).statistic)
        print(f"      {label:<24} Kendall tau {taus[label]:.3f}   R2 {r2_score(truth, pred):.3f}   "
              f"MAE {mean_absolute_error(truth, pred):.4f}")
    plot = prediction_scatter({label: (truth, pred, f"Kendall tau {taus[label]:.3f} on test runs")
                               for label, pred in results.items()}, TARGET, out_dir / "predicted_vs_true.png")
    print(f"      plot: {plot}")

    print("[5/5] wsl predict on a held-out checkpoint exported as a plain state_dict file", flush=True)
    run = dm.split_runs["test"][0]
    row = dm.runs.row((0, run))
    with Zoo(zoo_path) as zoo:
        ckpt_file = out_dir / f"model_{run}.pt"
        torch.save(zoo.state_dict(row, -1), ckpt_file)
    stored = float(dm.runs.column(0, TARGET)[row, -1])
    best_label = PREDICTORS[0][0]
    print(f"      $ wsl predict --model {ckpts[best_label]} {ckpt_file}")
    run_predict(str(ckpts[best_label]), [str(ckpt_file)])
    print(f"      stored {TARGET} of that checkpoint: {stored:.4f}")
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {out_dir}/")
    return taus
