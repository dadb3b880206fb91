"""Benchmark the INR hypernetwork on digits-INR (issue 16): SIRENs emitted from images against the
zoo's fitted ones, by PSNR and by the class an INR classifier reads from their weights.

    .venv/bin/python scripts/benchmark_hyper_inr.py                        # 2 min per hypernetwork
    .venv/bin/python scripts/benchmark_hyper_inr.py --minutes 0.5 --signals functional

What it does, in order:

1. Uses ``--zoo`` (default ``zoos/digits_inr.h5``; generated from ``configs/zoo/digits_inr.yaml``
   when missing, in seconds).
2. Trains the image-conditioned hypernetwork of ``configs/hyper/digits_inr_image.yaml`` (its data
   and model arguments) once per training signal (``--signals``: ``functional``, the emitted
   SIRENs' reconstruction error; ``weights``, distillation of the fitted SIRENs in the normalized
   weight space) for ``--minutes`` of wall time each, on the zoo's recorded split. The checkpoint
   kept is the best PSNR on the *validation* images.
3. Trains INR classifiers to read ``label`` from the *fitted* SIRENs of the training images,
   keeping the best validation accuracy (``--classifiers``): ``probe``, the probe encoder with
   ``benchmark_inr``'s settings and augmentations (256 learned probe points, off the pixel grid
   too, plus per-layer weight statistics: ~0.96 on digits-INR); ``pixel-probe``, the same encoder
   reading each SIREN only at the image's pixels (fixed probes on the signal grid, no weight
   statistics), i.e. classifying the rendered image; it tells a classifier that does not transfer
   to emitted SIRENs apart from emitted SIRENs that do not show their digit.
4. On the 180 *test* images only: PSNR of the emitted SIRENs against the fitted SIRENs' stored
   PSNR (the zoo's metric at the served checkpoint, and at its earlier checkpoints for scale), and
   each classifier's accuracy on the emitted SIRENs beside its accuracy on the fitted ones; and,
   as a reference that is no INR classifier, a logistic regression on the training *images'*
   pixels applied to the SIRENs' renderings on the pixel grid (does the rendering show its digit?).

Prints a table; the last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_inr as bi  # noqa: E402  (the INR classifier's settings; puts the repository root on sys.path)
import benchmark_predict as bp  # noqa: E402

import lightning.pytorch as pl  # noqa: E402

from wsl.data import PropertyDataModule  # noqa: E402
from wsl.data.signal_datamodule import SignalDataModule  # noqa: E402
from wsl.hyper.inr import INRHyperNetwork  # noqa: E402
from wsl.nn.probe import ProbeEncoder  # noqa: E402
from wsl.prediction.fit import fit_predictor  # noqa: E402
from wsl.core.checkpoint import load_model  # noqa: E402
from wsl.core.trainer import best_checkpoint, make_trainer  # noqa: E402
from zoo.config import load_config  # noqa: E402
from zoo.functional import population_forward  # noqa: E402
from zoo.generate import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = {"functional": "functional (reconstruction)", "weights": "distillation (weights)"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="zoos/digits_inr.h5", help="an image-INR zoo (default zoos/digits_inr.h5)")
    ap.add_argument("--zoo-config", default=str(ROOT / "configs/zoo/digits_inr.yaml"),
                    help="the zoo config that generates --zoo when it is missing")
    ap.add_argument("--config", default=str(ROOT / "configs/hyper/digits_inr_image.yaml"),
                    help="the hypernetwork's LightningCLI config (its data and model arguments are used)")
    ap.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=list(SIGNALS))
    ap.add_argument("--minutes", type=float, default=2.0, help="wall-time budget per hypernetwork (default 2)")
    ap.add_argument("--classifiers", nargs="+", default=["probe", "pixel-probe"], choices=["probe", "pixel-probe"])
    ap.add_argument("--classifier-epochs", type=int, default=10, help="INR classifier epochs (default 10)")
    ap.add_argument("--classifier-minutes", type=float, default=2.0, help="INR classifier wall-time cap (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return ap.parse_args(argv)


def hyper_arguments(path: str | Path) -> tuple[dict, dict, int]:
    """The data and model ``init_args`` and validation interval of a hypernetwork config."""
    raw = yaml.safe_load(Path(path).read_text())
    try:
        data, model = dict(raw["data"]["init_args"]), dict(raw["model"]["init_args"])
    except (KeyError, TypeError):
        raise SystemExit(f"{path}: expected data.init_args and model.init_args (a wsl.hyper config)") from None
    data.pop("zoo", None)
    data.pop("conditions", None)
    every = int((raw.get("trainer") or {}).get("check_val_every_n_epoch", 1))
    return data, model, every


def train_hypernetwork(dm: SignalDataModule, signal: str, model_args: dict, every: int, minutes: float,
                       accelerator: str, work_dir: Path) -> tuple[INRHyperNetwork, dict]:
    """Fit one hypernetwork for ``minutes``; return the checkpoint with the best validation PSNR."""
    model = INRHyperNetwork(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions,
                            **{**model_args, "signal": signal})
    model.set_normalizers(**dm.normalizers())
    ckpt = best_checkpoint(f"hyper_{signal}", dirpath=work_dir, enable_version_counter=False)
    trainer = make_trainer(1_000_000, [ckpt], max_minutes=minutes, accelerator=accelerator,
                           check_val_every_n_epoch=every)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - t0
    if not ckpt.best_model_path:
        raise RuntimeError(f"hypernetwork ({signal}): no validation ran within {minutes} min; raise --minutes")
    best = load_model(ckpt.best_model_path, INRHyperNetwork)
    return best, {"train_s": fit_s, "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
                  "best_val_psnr": float(ckpt.best_model_score)}


def classifier_settings(dm: SignalDataModule) -> dict[str, dict]:
    """The INR classifiers: ``benchmark_inr``'s probe encoder, and one reading the pixels only."""
    pixels = len(dm.coords)
    probe = ProbeEncoder(dm.spec, 1, probes=pixels, init="grid")
    if probe.num_probes != pixels or not torch.allclose(probe.latent, dm.coords):
        raise SystemExit(f"pixel-probe: the probe grid does not fall on the signal grid {list(dm.signal_shape)} "
                         f"(square images only); run with --classifiers probe")
    return {"probe": bi.INR_PROBE,
            "pixel-probe": {"lr": 1e-3, "encoder_kwargs": {"probes": pixels, "init": "grid", "learn_probes": False,
                                                           "hidden": 256, "layers": 3}}}


@torch.no_grad()
def class_accuracy(classifier, wb, class_index: np.ndarray) -> float:
    """The classifier's accuracy on networks ``wb`` whose true classes are ``class_index``."""
    probs = torch.cat([classifier.predict_values(wb[k:k + 256]) for k in range(0, len(wb), 256)])
    return bi.accuracy(class_index, probs.cpu().numpy())


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = bp.quiet_lightning_on(args.device)
    command = shlex.join(["python", *sys.argv] if argv is None else ["python", "scripts/benchmark_hyper_inr.py", *argv])
    print(f"device: {bp.device_name(accelerator)}", flush=True)
    zoo = Path(args.zoo)
    if not zoo.exists():
        print(f"{zoo}: missing; generating it from {args.zoo_config}", flush=True)
        zoo.parent.mkdir(parents=True, exist_ok=True)
        generate(load_config(args.zoo_config), zoo, progress=False)
    data_args, model_args, every = hyper_arguments(args.config)

    dm = SignalDataModule(str(zoo), conditions=["image"], **data_args)
    dm.setup("fit")
    values, labels = dm.signals("test")
    fitted = dm.weights("test")
    items = dm.items("test")
    rows = dm.runs.rows(0, items["runs"])
    stored = dm.runs.column(0, "psnr")[rows]  # [test runs, checkpoints]
    epochs = dm.runs.checkpoint_epochs[0]
    served = np.asarray([epochs.index(e) for e in items["epochs"]])
    fitted_psnr = stored[np.arange(len(rows)), served]
    by_epoch = {int(e): float(stored[:, c].mean()) for c, e in enumerate(epochs) if e > 0}
    print(f"{zoo}: {len(rows)} test images; fitted SIRENs' PSNR {fitted_psnr.mean():.2f} dB at epoch "
          f"{sorted(set(items['epochs']))}", flush=True)

    results: dict[str, dict] = {}
    emitted: dict[str, object] = {}
    renders: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory(prefix="bench_hyper_inr_") as tmp:
        for signal in args.signals:
            pl.seed_everything(args.seed, workers=True, verbose=False)
            print(f"training the hypernetwork, signal {signal}, {args.minutes:g} min ...", flush=True)
            model, info = train_hypernetwork(dm, signal, model_args, every, args.minutes, accelerator, Path(tmp))
            with torch.no_grad():
                wb = model.emit(values)
                db = model.signal_psnr(wb, values).cpu().numpy()
                renders[signal] = model.render(wb).cpu()
            emitted[signal] = wb.to("cpu")
            results[signal] = {**info, "psnr_mean": float(db.mean()), "psnr_median": float(np.median(db)),
                               "psnr_min": float(db.min())}
            print(f"  {signal}: test PSNR {db.mean():.2f} dB after {info['steps']} steps ({info['train_s']:.0f} s), "
                  f"best validation PSNR {info['best_val_psnr']:.2f} dB", flush=True)

        classifiers = classifier_settings(dm)
        fits = {}
        for name in args.classifiers:
            pl.seed_everything(args.seed, workers=True, verbose=False)
            print(f"training the INR classifier {name} ({args.classifier_epochs} epochs) on fitted SIRENs ...",
                  flush=True)
            pdm = PropertyDataModule([str(zoo)], target="label", split="recorded", split_seed=args.seed,
                                     batch_size=64, augment=bi.AUGMENT)
            fits[name] = (pdm, fit_predictor(pdm, "probe", classifiers[name]["encoder_kwargs"],
                                             lr=classifiers[name]["lr"], epochs=args.classifier_epochs,
                                             work_dir=tmp, filename=f"classifier_{name}",
                                             max_minutes=args.classifier_minutes, accelerator=accelerator))
    acc_fitted, classifier_info = {}, {}
    for name, (pdm, fp) in fits.items():
        classifier = fp.model.cpu().eval()
        class_index = np.asarray([pdm.class_names.index(str(v)) for v in labels.tolist()])
        acc_fitted[name] = class_accuracy(classifier, fitted, class_index)
        for signal, wb in emitted.items():
            results[signal].setdefault("class_acc", {})[name] = class_accuracy(classifier, wb, class_index)
        classifier_info[name] = {"val_acc": fp.best_val, "train_s": fp.fit_seconds,
                                 "encoder_kwargs": classifiers[name]["encoder_kwargs"]}

    # the reference: an image classifier on the training images' pixels, reading the SIRENs' renderings
    train_values, train_labels = dm.signals("train")
    pixels = LogisticRegression(max_iter=5000).fit(train_values.flatten(1).numpy(), train_labels.numpy())
    with torch.no_grad():
        fitted_render = population_forward(dm.spec, fitted.params(), dm.coords)
    acc_fitted["image-logreg"] = float(pixels.score(fitted_render.flatten(1).numpy(), labels.numpy()))
    for signal, r in renders.items():
        results[signal].setdefault("class_acc", {})["image-logreg"] = float(
            pixels.score(r.flatten(1).numpy(), labels.numpy()))

    last_epoch = max(items["epochs"])
    names = [*fits, "image-logreg"]
    print()
    print(f"| SIRENs of the {len(rows)} test images | PSNR mean (dB) | median | min | "
          + " | ".join(f"accuracy ({n})" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    print(f"| fitted (zoo, epoch {last_epoch}) | {fitted_psnr.mean():.2f} | {np.median(fitted_psnr):.2f} | "
          f"{fitted_psnr.min():.2f} | " + " | ".join(f"{acc_fitted[n]:.3f}" for n in names) + " |")
    for e, v in by_epoch.items():
        if e != last_epoch:
            print(f"| fitted, epoch {e} (for scale) | {v:.2f} | | |" + " |" * len(names))
    for signal, r in results.items():
        print(f"| emitted, {SIGNALS[signal]}, {r['train_s']:.0f} s / {r['steps']} steps | {r['psnr_mean']:.2f} | "
              f"{r['psnr_median']:.2f} | {r['psnr_min']:.2f} | "
              + " | ".join(f"{r.get('class_acc', {}).get(n, float('nan')):.3f}" for n in names) + " |")
    for name, c in classifier_info.items():
        print(f"classifier {name}: best validation accuracy {c['val_acc']:.3f}, trained {c['train_s']:.0f} s")

    report = {"command": command, "device": bp.device_name(accelerator), "zoo": str(zoo), "test_images": len(rows),
              "minutes": args.minutes, "seed": args.seed, "fitted_epoch": last_epoch,
              "fitted_psnr_mean": float(fitted_psnr.mean()), "fitted_psnr_by_epoch": by_epoch,
              "fitted_class_acc": acc_fitted, "classifiers": classifier_info, "emitted": results}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
