"""Ablate the probe encoder's options on one zoo: one split, one seed per variant, Kendall tau.

    .venv/bin/python scripts/ablate_probe.py zoos/mnist1d_mlp.h5 \\
        'base={}' 'gen3={"generator_layers": 3}' 'gen3_softmax={"generator_layers": 3, "softmax": true}'

Each variant is ``name=JSON``: probe encoder options over ``BASE`` (the session-2 settings), plus
``epochs`` (default 30), ``lr`` (1e-3), ``seed`` (0) and ``rank_target`` (train on the training
split's empirical CDF of the target instead of the target: Kendall tau is rank-based). Training
follows ``scripts/benchmark_predict.py`` (its ``train_encoder``: checkpoint chosen by validation
tau; the split 0.7 / 0.1 / 0.2 of the runs with ``--split-seed``). Prints one line per variant and,
last, one JSON object with every variant's test tau, R² (on the target's own scale, so not for
``rank_target``) and validation tau. Predictions go to ``--out`` as ``<name>.npy`` for ensembling.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_predict import SPLIT, quiet_lightning_on, scores, train_encoder  # noqa: E402

from wsl.data import PropertyDataModule  # noqa: E402
from wsl.data.normalize import TargetNormalizer  # noqa: E402

BASE = {"probes": 256, "hidden": 256, "layers": 3, "weight_stats": True}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("variants", nargs="+", help="name=JSON options (see above)")
    ap.add_argument("--target", default="test_acc")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for each variant's test predictions (default: none kept)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    accelerator = quiet_lightning_on(args.device)
    dm = PropertyDataModule([args.zoo], target=args.target, checkpoints="all", split=SPLIT, split_seed=args.split_seed,
                       batch_size=64, augment={})
    dm.setup("fit")
    truth = dm.items("test")["targets"].numpy().astype(np.float64)
    targets, train = dm._targets.clone(), dm._split_items["train"]
    ordered = np.sort(targets[train].numpy())  # the training split's targets: their empirical CDF
    results = {}
    for item in args.variants:
        name, _, text = item.partition("=")
        opts = json.loads(text or "{}")
        epochs, lr, seed = opts.pop("epochs", 30), opts.pop("lr", 1e-3), opts.pop("seed", 0)
        rank = opts.pop("rank_target", False)
        dm._targets = (torch.as_tensor(np.searchsorted(ordered, targets.numpy(), side="right") / len(ordered),
                                       dtype=torch.float32) if rank else targets.clone())
        dm.target_normalizer = TargetNormalizer()
        dm.target_normalizer.fit(dm._targets[train])
        kwargs = BASE | opts
        pl.seed_everything(seed, verbose=False)
        with tempfile.TemporaryDirectory() as tmp:
            pred, val, fit_s = train_encoder(dm, "probe", {"lr": lr, "encoder_kwargs": kwargs}, epochs, accelerator,
                                             Path(tmp))
        pred = pred.reshape(-1)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.out) / f"{name}.npy", pred)
        r = scores(truth, pred) if not rank else {"tau": float(kendalltau(truth, pred).statistic), "r2": None}
        results[name] = {**r, "val_tau": val, "fit_s": round(fit_s, 1), "options": kwargs, "epochs": epochs,
                         "lr": lr, "seed": seed, "rank_target": rank}
        print(f"{name:20s} test tau {r['tau']:.4f}  val tau {val:.4f}  {fit_s:.0f} s  {kwargs}", flush=True)
    dm._targets = targets
    print(json.dumps({"zoo": args.zoo, "split_seed": args.split_seed, "variants": results}))


if __name__ == "__main__":
    main()
