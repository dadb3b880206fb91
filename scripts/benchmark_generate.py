"""Benchmark of the diffusion weight generators: on one zoo, at growing numbers of training
networks (the data-scale study), as initialisations of ordinary training, and their throughput.

For each generator and seed: train it with Lightning on the training runs of the zoo's ReLU
networks (the checkpoint kept: the best validation accuracy of sampled networks on the task's
validation examples, ``val/score``; validation every 5 epochs or ``--val-steps``), sample networks (DDIM, 50 steps,
eta 0; with ``--samplers``, the setting chosen by the sampled networks' quality on the validation
examples, for a conditional generator by how well they meet requests there) with
``wsl sample``'s code path into a generated zoo file, and score them with the memorization suite
(``wsl evaluate-generated``: quality on the task's test examples, weight-space novelty after
alignment, behavioural novelty, beside the noise-added, averaged and Gaussian baselines). Then a
generator conditioned on test accuracy: its classifier-free guidance scale chosen on validation
data (``GUIDANCE``: the Pearson r of requested test accuracy and achieved *validation* accuracy),
requested against achieved test accuracy over a range, and the quality of networks requested at the
best accuracy among the training networks (G.pt's prompt).

On an INR zoo (``--zoo zoos/digits_inr.h5``) the generators learn from the training images' INRs
(the zoo's recorded split), the kept checkpoint is the one whose sampled INRs come closest to the
validation images (PSNR), and quality is the PSNR of a generated INR's rendering to the nearest
test image; the conditional generator is conditioned on the digit (``label``) and asked for each
class in turn, and the report says how often the nearest test image shows the requested digit.

``--scales ZOO ...`` runs the data-scale study instead (Zeng et al. 2025: more training networks
is the lever that moves a generator from replication toward generalization): zoos of one
distribution at growing sizes (``digits_mlp_good``, ``_10k``, ``_100k``: each smaller one the first
runs of the larger), each generator trained on each with the same budget and validation cadence,
scored against *that* zoo's training networks, whose own nearest-neighbour distances shrink as
they grow; one plot per generator. ``--init-epochs E`` then trains from the flat generator's
networks of the largest zoo (Gong et al. 2024), from training networks plus noise at the same
novelty and from random starts, on data the generator never saw (``INIT_SETTINGS``).
``--throughput N`` times ``wsl sample``'s path for N networks (sampled, run on the test examples,
written): networks per minute.

Training is bounded by wall-clock minutes per generator (``--minutes``), so the figures say what
each generator reaches in the same budget on this machine; the steps reached are printed.

    python scripts/benchmark_generate.py                      # all generators, seeds 0 1 2
    python scripts/benchmark_generate.py --generators flat --seeds 0 --minutes 2
    python scripts/benchmark_generate.py --generators flat --seeds 0 --reuse --samplers 50:0 200:1
    python scripts/benchmark_generate.py --generators flat --scales zoos/digits_mlp_good.h5 \
        zoos/digits_mlp_good_10k.h5 zoos/digits_mlp_good_100k.h5 --init-epochs 10 --throughput 10000

The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsl.cli.plots import generator_scale_plot  # noqa: E402
from wsl.data import WeightDataModule  # noqa: E402
from wsl.data.task import source_task  # noqa: E402
from wsl.diffusion.memorization import evaluate_generated, load_generated, load_reference  # noqa: E402
from wsl.diffusion.networks import write_generated_zoo  # noqa: E402
from wsl.diffusion.reference_baselines import noise_baseline  # noqa: E402
from wsl.diffusion.report import GENERATOR  # noqa: E402
from wsl.diffusion.model import LatentDiffusion, WeightDiffusion, WeightGenerator  # noqa: E402
from wsl.core.checkpoint import load_model, read_checkpoint  # noqa: E402
from wsl.diffusion.denoisers import CanonicalDenoiser  # noqa: E402
from wsl.diffusion.sample import run_sample, train_runs  # noqa: E402
from wsl.weights import WeightBatch  # noqa: E402
from wsl.core.trainer import best_checkpoint, make_trainer  # noqa: E402
from zoo.config import load_config, parse_config  # noqa: E402
from zoo.generate import generate  # noqa: E402
from zoo.store import Zoo  # noqa: E402

DATA = {"select": {"activation": "relu"}, "checkpoints": "last", "split": [0.7, 0.1, 0.2], "batch_size": 64}
INR_DATA = {"checkpoints": "last", "split": "recorded", "batch_size": 64}  # the images' own split
# name -> (model class, model options, data options beyond DATA, description)
GENERATORS = {
    "hnp": (WeightDiffusion, {"denoiser": "hnp", "denoiser_kwargs": {"channels": 16, "layers": 3},
                              "prediction": "x0"}, {},
            "weight-space diffusion, equivariant NFN-HNP denoiser (ours)"),
    "canonical": (WeightDiffusion, {"denoiser": "canonical", "denoiser_kwargs": {"hidden": 512, "layers": 4},
                                    "prediction": "x0"}, {},
                  "weight-space diffusion, the flat MLP denoiser in a canonical neuron order (equivariant, ours)"),
    "flat": (WeightDiffusion, {"denoiser": "mlp", "denoiser_kwargs": {"hidden": 512, "layers": 4},
                               "prediction": "x0"}, {"align": True},
             "weight-space diffusion, MLP denoiser on aligned flat weights (HyperDiffusion style)"),
    "latent": (LatentDiffusion, {"autoencoder_kwargs": {"latent_dim": 32, "d_model": 128, "layers": 2, "heads": 4},
                                 "autoencoder_epochs": 60, "denoiser_kwargs": {"hidden": 512, "layers": 4},
                                 "prediction": "x0"},
               {"align": True}, "latent diffusion over a neuron-token autoencoder of aligned weights (p-diff / SANE)"),
}


GUIDANCE = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # classifier-free guidance scales tried, chosen on validation data
SAMPLER = (50, 0.0)  # (DDIM steps, eta) unless --samplers asks for a choice on validation data
SCALE_VAL_STEPS = 500  # the data-scale study validates by steps: an epoch of 70,000 networks outlasts the budget


def _best(scores: dict):
    return max(scores, key=lambda k: -np.inf if not np.isfinite(scores[k]) else scores[k])


def _sampler(text: str) -> tuple[int, float]:
    """``STEPS:ETA`` -> (steps, eta)."""
    try:
        steps, eta = text.split(":")
        return int(steps), float(eta)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a sampler is STEPS:ETA, e.g. 200:1; found {text!r}") from None


def _scores(samplers: dict[str, float]) -> str:
    """The samplers' validation scores for a printed line ('' when none was chosen)."""
    return f" (validation: {', '.join(f'{k}: {v:.3f}' for k, v in samplers.items())})" if samplers else ""


def choose_guidance(gen: WeightGenerator, requested: np.ndarray) -> tuple[float, dict[float, float]]:
    """The guidance scale whose networks best meet ``requested`` conditions on the task's
    validation data (``WeightGenerator.validation_agreement``), and every scale's agreement."""
    req = torch.as_tensor(requested, dtype=torch.float32).view(len(requested), -1)
    scores = {g: gen.validation_agreement(req, guidance=g, seed=0) for g in GUIDANCE}
    return _best(scores), scores


def choose_sampler(gen: WeightGenerator, samplers: list[tuple[int, float]], num: int,
                   requested: np.ndarray | None = None, guidance: float = 1.0) -> tuple[tuple[int, float], dict[str, float]]:
    """Of ``samplers`` ((steps, eta) each), the one best on the task's validation data, and every
    one's score: for an unconditional generator the quality of ``num`` sampled networks
    (``WeightGenerator.validation_quality``); for ``requested`` conditions how well they are met at
    ``guidance``, what the guidance scale is chosen by too (``validation_agreement``). One sampler:
    itself, unscored."""
    if len(samplers) == 1:
        return samplers[0], {}
    if requested is None:
        scores = {s: gen.validation_quality(num, guidance=guidance, seed=0, steps=s[0], eta=s[1]) for s in samplers}
    else:
        req = torch.as_tensor(requested, dtype=torch.float32).view(len(requested), -1)
        scores = {s: gen.validation_agreement(req, guidance=guidance, seed=0, steps=s[0], eta=s[1]) for s in samplers}
    return _best(scores), {f"steps {s[0]} eta {s[1]:g}": v for s, v in scores.items()}


# on INR zoos (configs/diffusion/digits_inr_flat_diffusion.yaml): each parameter standardised over
# the training INRs, whose spread is a fraction of the weights' size; a wider MLP for 1,185 weights
INR_OVERRIDES = {"flat": ({"denoiser_kwargs": {"hidden": 1024, "layers": 4}}, {"normalize": "parameter"})}


def fit(name: str, seed: int, zoo: str, minutes: float, work: Path, conditions: list[str] | None = None,
        checkpoints: str = "last", inr: bool = False, reuse: bool = False,
        val_every_steps: int | None = None) -> tuple[str, dict]:
    """Train one generator; its kept checkpoint and what training reached (``work/fit.json``).
    ``reuse``: take ``work/best.ckpt`` of an earlier run of the same command instead, if there.
    Validation every 5 epochs, or every ``val_every_steps`` optimizer steps (the same cadence
    whatever the number of training networks: the data-scale study)."""
    if reuse and (work / "best.ckpt").exists():
        info = json.loads((work / "fit.json").read_text()) if (work / "fit.json").exists() else {}
        return str(work / "best.ckpt"), {**info, "reused": True}
    cls, model_kw, data_kw, _ = GENERATORS[name]
    if inr and name in INR_OVERRIDES:
        model_kw, data_kw = model_kw | INR_OVERRIDES[name][0], data_kw | INR_OVERRIDES[name][1]
    pl.seed_everything(seed, workers=True, verbose=False)
    data = INR_DATA if inr else DATA
    dm = WeightDataModule([zoo], split_seed=0, conditions=conditions, **{**data, "checkpoints": checkpoints}, **data_kw)
    dm.setup("fit")
    model = cls(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions, lr=1e-3,
                ema_decay=0.999, eval_samples=64, **model_kw)
    model.set_normalizers(**dm.normalizers())
    ckpt = best_checkpoint("best", dirpath=work)
    cadence = ({"check_val_every_n_epoch": 5} if val_every_steps is None else
               {"check_val_every_n_epoch": None, "val_check_interval": val_every_steps})
    trainer = make_trainer(100000, [ckpt], max_minutes=minutes, enable_checkpointing=True, **cadence)
    t = time.perf_counter()
    trainer.fit(model, dm)
    info = {"train_seconds": round(time.perf_counter() - t, 1), "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch), "train_runs": len(dm.split_runs["train"]),
            "best_val_score": float(ckpt.best_model_score)}
    (work / "fit.json").write_text(json.dumps(info))
    return ckpt.best_model_path, info


def headline(report: dict) -> dict:
    """What the issue's targets read from a memorization report."""
    m = report["methods"]
    gen, ref = m[GENERATOR], m["reference (all)"]
    noise = m.get("noise sigma=matched")
    out = {
        "metric": report["metric"],  # test_acc, or test_psnr (dB to the nearest test image) for INRs
        "gen_quality_mean": gen["quality"]["mean"], "gen_quality_median": gen["quality"]["median"],
        "train_quality_mean": ref["quality"]["mean"], "train_quality_median": ref["quality"]["median"],
        "rel_quality": gen["quality"]["mean"] / ref["quality"]["mean"],
        "weight_novelty_median": gen["weight_novelty"]["median"],
        "reference_nn_distance_median": m["reference (nearest other reference)"]["weight_novelty"]["median"],
        "behavioural_novelty_median": gen["behavioural_novelty"]["median"],
        "reference_behavioural_median": m["reference (nearest other reference)"]["behavioural_novelty"]["median"],
    }
    if noise is not None:
        out["matched_noise_sigma"] = noise.get("sigma")
        out["matched_noise_quality_mean"] = noise["quality"]["mean"]
        out["beats_noise"] = bool(gen["quality"]["mean"] > noise["quality"]["mean"])
    for k in ("average k=2 aligned", "gaussian aligned"):
        if k in m:
            out[k.replace(" ", "_").replace("=", "") + "_quality_mean"] = m[k]["quality"]["mean"]
    return out


def conditional_run(args, seed: int, inr: bool, out: Path) -> dict:
    """The conditional generator of one seed: guidance chosen on validation data, then judged on test
    data (INR zoos: each digit asked for in turn; classifiers: accuracies over 0.2..0.95, and G.pt's
    prompt, the best training network's accuracy)."""
    work = out / f"{args.conditional}_conditional_seed{seed}"
    if inr:
        best, info = fit(args.conditional, seed, args.zoo, args.minutes, work, conditions=["label"], inr=True,
                         reuse=args.reuse, val_every_steps=args.val_steps)
        requests = np.resize(np.arange(10.0), args.num)
        gen = load_model(best, WeightGenerator)
        guidance, tried = choose_guidance(gen, requests)
        (steps, eta), samplers = choose_sampler(gen, args.samplers, args.num, requests, guidance)
        classes = ",".join(str(c) for c in range(10))
        per_class = run_sample(best, args.num, work / "classes.h5", [f"label={classes}"], guidance=guidance, seed=seed,
                               steps=steps, eta=eta)
        rep = evaluate_generated(per_class, args.zoo, work / "classes_report", seed=seed)
        agree, head = rep["conditional"]["label"], headline(rep)
        result = {"seed": seed, **info, "condition": "label", "guidance": guidance,
                  "validation_agreement_by_guidance": tried, "sample_steps": steps, "eta": eta,
                  "validation_agreement_by_sampler": samplers, "exact": agree["exact"],
                  "gen_quality_mean": head["gen_quality_mean"], "train_quality_mean": head["train_quality_mean"],
                  "weight_novelty_median": head["weight_novelty_median"],
                  "matched_noise_quality_mean": head.get("matched_noise_quality_mean", float("nan"))}
        print(f"conditional ({args.conditional}) seed {seed}: guidance {guidance} chosen on validation images "
              f"(requested digit met: {', '.join(f'{g:g}: {v:.3f}' for g, v in tried.items())}); "
              f"{steps} steps, eta {eta:g}{_scores(samplers)}; asked for each digit in turn: the nearest "
              f"test image shows the requested digit for {agree['exact']:.3f} of them (chance 0.1); PSNR "
              f"{head['gen_quality_mean']:.2f} dB (train nets {head['train_quality_mean']:.2f})", flush=True)
        return result
    best, info = fit(args.conditional, seed, args.zoo, args.minutes, work, conditions=["test_acc"], checkpoints="all",
                     reuse=args.reuse, val_every_steps=args.val_steps)
    requests = np.linspace(0.2, 0.95, args.num)
    gen = load_model(best, WeightGenerator)
    guidance, tried = choose_guidance(gen, requests)
    (steps, eta), samplers = choose_sampler(gen, args.samplers, args.num, requests, guidance)
    print(f"seed {seed}: guidance {guidance} chosen on validation examples (Pearson of requested test accuracy and "
          f"achieved validation accuracy: {', '.join(f'{g:g}: {v:.3f}' for g, v in tried.items())}); {steps} steps, "
          f"eta {eta:g}{_scores(samplers)}", flush=True)
    sweep = run_sample(best, args.num, work / "sweep.h5", ["test_acc=0.2:0.95"], guidance=guidance, seed=2 * seed,
                       steps=steps, eta=eta)
    rep = evaluate_generated(sweep, args.zoo, work / "sweep_report", seed=seed)
    agree = rep["conditional"]["test_acc"]
    # G.pt's prompt: the best test accuracy among the training networks (the stored property the
    # generator was conditioned on), asked of every network
    high = float(np.round(rep["methods"]["reference (all)"]["quality"]["max"], 3))
    hi_path = run_sample(best, args.num, work / "high.h5", [f"test_acc={high}"], guidance=guidance, seed=2 * seed + 1,
                         steps=steps, eta=eta)
    hi = headline(evaluate_generated(hi_path, args.zoo, work / "high_report", seed=seed))
    if isinstance(gen.net, CanonicalDenoiser):
        info = {**info, "canonical_order_kept": canonical_order_kept(gen, args.zoo, best)}
        print(f"seed {seed}: fraction of hidden neurons the noisy networks' canonical order keeps in place, by "
              f"log-SNR: " + "; ".join(f"{lv:g}: " + "/".join(f"{v:.2f}" for v in per.values())
                                       for lv, per in info["canonical_order_kept"].items()), flush=True)
    result = {"seed": seed, **info, "guidance": guidance, "validation_pearson_by_guidance": tried,
              "sample_steps": steps, "eta": eta, "validation_pearson_by_sampler": samplers,
              "pearson": agree["pearson"], "spearman": agree["spearman"], "mae": agree["mae"], "requested_high": high,
              "high_acc_median": hi["gen_quality_median"], "train_acc_median": hi["train_quality_median"],
              "high_weight_novelty_median": hi["weight_novelty_median"]}
    print(f"conditional ({args.conditional}) seed {seed}: requested vs achieved test acc over 0.2..0.95: Pearson "
          f"{agree['pearson']:.3f}, Spearman {agree['spearman']:.3f}, MAE {agree['mae']:.3f}; requested "
          f"{high}: median achieved {hi['gen_quality_median']:.3f} (train median {hi['train_quality_median']:.3f})",
          flush=True)
    return result


CANONICAL_LEVELS = (8.0, 4.0, 2.0, 0.0, -2.0, -4.0)  # log-SNRs at which the canonical order is checked


def canonical_order_kept(gen: WeightGenerator, zoo: str, best: str, num: int = 500, seed: int = 0) -> dict:
    """For a canonical-order denoiser: at each noise level of ``CANONICAL_LEVELS``, the fraction of
    hidden neurons (per hidden layer) that the canonical order of a noisy training network ``x_t``
    puts where the clean network's own order puts them (chance: 1 / width). Where it is near chance
    the denoiser sees its data in an order set by the noise, not by the network: what it can
    predict there, conditioned or not, is the average over orders."""
    den = gen.net
    runs = train_runs(read_checkpoint(best, WeightGenerator))
    rows = np.sort(np.random.default_rng(seed).choice(runs, min(num, len(runs)), replace=False))
    with Zoo(zoo) as z:
        x0 = gen.weight_normalizer(WeightBatch.from_params(gen.spec, z.batch(rows, -1))).flatten()
    clean = den.canonical_order(x0)
    g = torch.Generator().manual_seed(seed)
    kept = {}
    for level in CANONICAL_LEVELS:
        a, s = gen.diffusion.alpha_sigma(torch.tensor(level))
        noisy = den.canonical_order(a * x0 + s * torch.randn(x0.shape, generator=g))
        kept[level] = {k: float((noisy[k] == clean[k]).float().mean()) for k in clean}
    return kept


def noise_curve(report: dict) -> list[tuple[float, float, float]]:
    """The noise baseline's (sigma, median weight novelty, mean quality) at each sigma of the grid:
    training networks plus noise, the curve a generator must lie above."""
    rows = [(m["sigma"], m["weight_novelty"]["median"], m["quality"]["mean"]) for k, m in report["methods"].items()
            if k.startswith("noise sigma=") and k != "noise sigma=matched"]
    return sorted(rows)


def scale_targets(row: dict) -> dict:
    """The issue's verdict on one generator trained on the largest zoo: mean test accuracy >= 0.90,
    median aligned distance to the nearest training network >= the training networks' own median,
    and training networks plus noise at that distance >= 10 points worse than the training networks."""
    return {"accurate": row["gen_quality_mean"] >= 0.90,
            "as_novel_as_training_networks": row["weight_novelty_median"] >= row["reference_nn_distance_median"],
            "noise_there_loses_10_points": row.get("matched_noise_quality_mean", np.nan)
            <= row["train_quality_mean"] - 0.10}


def scale_run(args, out: Path) -> dict:
    """The data-scale study: every generator of ``--generators`` trained on each zoo of
    ``--scales`` (smallest first) with the same budget (``--minutes``, validation every
    ``--val-steps`` steps), sampled and scored by the memorization suite against *that* zoo's
    training networks. One plot per generator (accuracy against novelty, one colour per size).
    Seeds outside, generators inside: the generators of one seed are scored against one reference
    index (``reference_index``, made once per zoo and seed)."""
    rows: list[dict] = []
    for zoo in args.scales:
        ensure_zoo(zoo)
        for seed in args.seeds:
            for name in args.generators:
                work = out / f"scale_{Path(zoo).stem}" / f"{name}_seed{seed}"
                best, info = fit(name, seed, zoo, args.minutes, work, reuse=args.reuse,
                                 val_every_steps=args.val_steps or SCALE_VAL_STEPS)
                gc.collect()  # the trainer's reference cycles hold the data module: 100,000 networks
                gen_path = run_sample(best, args.num, work / "generated.h5", seed=seed, overwrite=True)
                report = evaluate_generated(gen_path, zoo, work / "report", seed=seed)
                row = {"zoo": zoo, "generator": name, "seed": seed, **info, **headline(report),
                       "noise_curve": noise_curve(report)}
                rows.append(row)
                print(f"{Path(zoo).stem} ({info['train_runs']} training networks) {name} seed {seed}: "
                      f"{info.get('steps', '?')} steps ({info.get('epochs', '?')} epochs); test acc "
                      f"{row['gen_quality_mean']:.3f} (training networks {row['train_quality_mean']:.3f}); weight "
                      f"novelty {row['weight_novelty_median']:.2f} (training networks' own NN "
                      f"{row['reference_nn_distance_median']:.2f}); noise at that novelty "
                      f"{row.get('matched_noise_quality_mean', float('nan')):.3f}", flush=True)
    print("\n| generator | training networks | seeds | test acc (training nets') | weight novelty (training "
          "nets' own NN) | behavioural novelty (training nets') | noise at equal novelty | beats noise |")
    print("|---|---|---|---|---|---|---|---|")
    summary: dict[str, dict[str, dict]] = {}
    for name in args.generators:
        for zoo in args.scales:
            rs = [r for r in rows if r["generator"] == name and r["zoo"] == zoo]
            m = {k: float(np.mean([r.get(k, np.nan) for r in rs])) for k in
                 ("train_runs", "steps", "gen_quality_mean", "train_quality_mean", "weight_novelty_median",
                  "reference_nn_distance_median", "behavioural_novelty_median", "reference_behavioural_median",
                  "matched_noise_quality_mean")}
            m["std_gen_quality_mean"] = float(np.std([r["gen_quality_mean"] for r in rs]))
            m["beats_noise_seeds"] = int(sum(bool(r.get("beats_noise")) for r in rs))
            summary.setdefault(name, {})[zoo] = m
            print(f"| {name} | {m['train_runs']:.0f} | {len(rs)} | {m['gen_quality_mean']:.3f} ± "
                  f"{m['std_gen_quality_mean']:.3f} ({m['train_quality_mean']:.3f}) | {m['weight_novelty_median']:.2f}"
                  f" ({m['reference_nn_distance_median']:.2f}) | {m['behavioural_novelty_median']:.3f} "
                  f"({m['reference_behavioural_median']:.3f}) | {m['matched_noise_quality_mean']:.3f} | "
                  f"{m['beats_noise_seeds']}/{len(rs)} |")
        largest = [r for r in rows if r["generator"] == name and r["zoo"] == args.scales[-1]]
        summary[name]["targets_on_largest"] = [scale_targets(r) for r in largest]
        plot = generator_scale_plot(
            {f"{np.mean([r['train_runs'] for r in rs]):,.0f} training nets": {
                "noise": [(n, q) for _, n, q in rs[0]["noise_curve"]],
                "generated": [(r["weight_novelty_median"], r["gen_quality_mean"]) for r in rs],
                "reference_nn": float(np.mean([r["reference_nn_distance_median"] for r in rs]))}
             for rs in ([r for r in rows if r["generator"] == name and r["zoo"] == z] for z in args.scales)},
            f"{name} generator: test accuracy against novelty by training-set size", out / f"scale_{name}.png")
        print(f"{name}: targets on {Path(args.scales[-1]).stem}, per seed: {summary[name]['targets_on_largest']}; "
              f"plot {plot}")
    return {"scales": args.scales, "minutes_per_fit": args.minutes, "val_steps": args.val_steps, "summary": summary,
            "runs": rows}


def throughput(args, out: Path) -> dict:
    """Sampled and evaluated networks per minute, through ``wsl sample``'s path: ``--throughput``
    networks drawn from the flat generator of the first seed (the study's on the largest zoo; trained
    here if there is none), run on the task's test examples, and written to a zoo file. Timed alone,
    after a warm-up of 100 networks, at the sampler's steps and at half as many (DDIM's cost is the
    number of steps), each with the mean test accuracy it gives, so a faster setting is only
    reported with what it costs in quality."""
    zoo = args.scales[-1] if args.scales else args.zoo
    work = (out / f"scale_{Path(zoo).stem}" if args.scales else out) / f"flat_seed{args.seeds[0]}"
    best, _ = fit("flat", args.seeds[0], zoo, args.minutes, work, reuse=True,
                  val_every_steps=args.val_steps or (SCALE_VAL_STEPS if args.scales else None))
    run_sample(best, 100, work / "warmup.h5", seed=1, overwrite=True)
    rows = {}
    for steps in (SAMPLER[0], SAMPLER[0] // 2):
        t = time.perf_counter()
        path = run_sample(best, args.throughput, work / f"throughput_{steps}.h5", seed=2, steps=steps, overwrite=True)
        seconds = time.perf_counter() - t
        with Zoo(path) as z:
            done, acc = int(z.done.sum()), z.column("test_acc")
        rows[steps] = {"networks": args.throughput, "sample_steps": steps, "seconds": round(seconds, 2),
                       "networks_per_minute": round(args.throughput / seconds * 60), "finite": done,
                       "test_acc_mean": float(np.nanmean(acc))}
        print(f"throughput: {args.throughput} networks sampled ({steps} DDIM steps), run on the test examples and "
              f"written in {seconds:.1f} s: {rows[steps]['networks_per_minute']:,} networks per minute ({done} with "
              f"finite weights, mean test accuracy {rows[steps]['test_acc_mean']:.4f})", flush=True)
    return {**rows[SAMPLER[0]], "half_steps": rows[SAMPLER[0] // 2], "threads": torch.get_num_threads()}


# Gong et al. 2024's use of generated weights: as the initialisation of ordinary training, on data
# settings the generator never saw (the good zoos train on 80-100% of the examples, <= 5% label
# noise), and on the digits with their labels permuted (zoo.tasks: relabel), where a start must be
# retrained rather than kept
INIT_SETTINGS = {"all data": {}, "10% of the data": {"data_fraction": 0.1}, "label noise 0.2": {"label_noise": 0.2},
                 "label noise 0.4": {"label_noise": 0.4}, "labels permuted": {"task_variant": "relabel:1"}}
INIT_RECIPE = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.03, "batch_size": 32}  # the good zoos' median run


def epochs_to(acc: np.ndarray, epochs: list[int], target: float) -> np.ndarray:
    """Per model (rows of ``acc``, one column per checkpoint epoch), the first epoch whose test
    accuracy reaches ``target``; inf where none does."""
    hit = acc >= target
    return np.where(hit.any(1), np.asarray(epochs)[hit.argmax(1)], np.inf)


def init_study(args, out: Path) -> dict:
    """Generated networks as initialisations (``init: {from: generated.h5, run: each}``): per seed,
    the flat generator of the largest zoo's networks, training networks plus noise at the
    generator's weight novelty (the memorization suite's matched sigma), and random
    initialisations, each trained with one recipe (``INIT_RECIPE``) in every setting of
    ``INIT_SETTINGS``; epochs to 0.9 test accuracy and the accuracy reached."""
    zoo, target = args.scales[-1], 0.9
    rows = []
    for seed in args.seeds:
        work = out / f"scale_{Path(zoo).stem}" / f"flat_seed{seed}"
        report = json.loads((work / "report" / "report.json").read_text())
        sigma = float(report["noise_calibration"]["sigma"])
        gen = load_generated(work / "generated.h5")
        ref = load_reference(zoo, gen["generated"])
        config = ref["config"]
        noisy = work / "noise_init.h5"
        write_generated_zoo(noisy, name="training networks + noise", source_config=config, spec=gen["spec"],
                            task=source_task(config), wb=noise_baseline(ref["wb"], len(gen["wb"]), sigma, seed),
                            hparams={}, generated={"baseline": "training networks + Gaussian noise", "sigma": sigma,
                                                   "source_zoo": zoo}, checkpoint_epoch=int(config["epochs"]))
        starts = {"random": None, "generated": work / "generated.h5", f"training nets + noise (sigma {sigma:.2f})": noisy}
        for setting, change in INIT_SETTINGS.items():
            for kind, source in starts.items():
                raw = {"name": f"init_{len(rows)}", "seed": 1000 + seed, "num_models": len(gen["wb"]),
                       "epochs": args.init_epochs, "checkpoints": list(range(args.init_epochs + 1)),
                       "task": config["task"], "architecture": config["architecture"],
                       "hparams": INIT_RECIPE | change}
                if source is not None:
                    raw["init"] = {"from": str(source), "run": "each"}
                path = generate(parse_config(raw), work / "init" / f"{raw['name']}.h5", progress=False)
                with Zoo(path) as z:
                    acc = z.metric("test_acc")[z.done]
                    reached = epochs_to(acc, z.checkpoint_epochs, target)
                rows.append({"seed": seed, "setting": setting, "init": kind.split(" (")[0], "label": kind,
                             "start_acc": float(acc[:, 0].mean()), "final_acc": float(acc[:, -1].mean()),
                             "reached": float(np.isfinite(reached).mean()),
                             "median_epochs": float(np.median(reached)), "curve": acc.mean(0).tolist()})
                r = rows[-1]
                print(f"init seed {seed}, {setting}, {kind}: test acc {r['start_acc']:.3f} at the start, "
                      f"{r['final_acc']:.3f} after {args.init_epochs} epochs; {target} reached by "
                      f"{r['reached']:.0%}, median epoch {r['median_epochs']:g}", flush=True)
    print(f"\n| setting | initialisation | test acc at start | after {args.init_epochs} epochs | reach {target} "
          f"| median epochs to {target} | against random |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for setting in INIT_SETTINGS:
        base = [r for r in rows if r["setting"] == setting and r["init"] == "random"]
        for kind in dict.fromkeys(r["init"] for r in rows):
            rs = [r for r in rows if r["setting"] == setting and r["init"] == kind]
            m = {k: float(np.mean([r[k] for r in rs])) for k in ("start_acc", "final_acc", "reached")}
            m["median_epochs"] = float(np.median([r["median_epochs"] for r in rs]))
            m["epochs_ratio_to_random"] = m["median_epochs"] / float(np.median([r["median_epochs"] for r in base]))
            summary.setdefault(setting, {})[kind] = m
            print(f"| {setting} | {kind} | {m['start_acc']:.3f} | {m['final_acc']:.3f} | {m['reached']:.0%} | "
                  f"{m['median_epochs']:g} | {m['epochs_ratio_to_random']:.2f} |")
    return {"target": target, "recipe": INIT_RECIPE, "epochs": args.init_epochs, "settings": INIT_SETTINGS,
            "summary": summary, "runs": rows}


def ensure_zoo(path: str) -> None:
    """Generate the zoo at ``path`` from the shipped config of its name if it is not there (the
    demo zoo's config for a name with none)."""
    if Path(path).exists():
        return
    shipped = ROOT / "configs" / "zoo" / f"{Path(path).stem}.yaml"
    generate(load_config(shipped if shipped.exists() else ROOT / "configs" / "zoo" / "digits_mlp.yaml"), path,
             progress=False)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; its figures (also the last line printed, as JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(ROOT / "zoos" / "digits_mlp.h5"))
    ap.add_argument("--generators", nargs="*", default=list(GENERATORS), choices=list(GENERATORS),
                    help="unconditional generators (none: only the conditional one)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget per generator and seed")
    ap.add_argument("--num", type=int, default=100, help="networks sampled per generator and seed")
    ap.add_argument("--conditional", default="flat",
                    help="generator conditioned on test accuracy (INR zoos: on the label; '' = none)")
    ap.add_argument("--conditional-seeds", nargs="*", type=int,
                    help="seeds of the conditional generator (default: --seeds)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench_generate"))
    ap.add_argument("--samplers", nargs="+", type=_sampler, default=[SAMPLER], metavar="STEPS:ETA",
                    help="DDIM settings to choose from on validation data, e.g. 50:0 200:0 50:1 200:1 "
                         "(default: 50:0 alone)")
    ap.add_argument("--reuse", action="store_true",
                    help="sample and evaluate the checkpoints an earlier run left in --out-dir instead of training")
    ap.add_argument("--scales", nargs="+", metavar="ZOO",
                    help="the data-scale study instead: zoos of one distribution at growing sizes, e.g. "
                         "zoos/digits_mlp_good.h5 zoos/digits_mlp_good_10k.h5 zoos/digits_mlp_good_100k.h5")
    ap.add_argument("--val-steps", type=int, default=None,
                    help="validate (and keep the best checkpoint) every this many steps (default: every 5 epochs; "
                         f"with --scales every {SCALE_VAL_STEPS} steps)")
    ap.add_argument("--throughput", type=int, default=0, metavar="N",
                    help="also time sampling, evaluating and writing N networks (networks per minute)")
    ap.add_argument("--init-epochs", type=int, default=0, metavar="E",
                    help="with --scales: also train from the flat generator's networks of the largest zoo, from "
                         "training networks plus noise and from random initialisations for E epochs")
    args = ap.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.scales:
        scale = scale_run(args, out)
        speed = throughput(args, out) if args.throughput else None
        init = init_study(args, out) if args.init_epochs else None
        result = {"benchmark": "generate_scale", "num": args.num, "scale": scale, "throughput": speed,
                  "generated_init": init}
        print(json.dumps(result, default=float))
        return result
    ensure_zoo(args.zoo)
    with Zoo(args.zoo) as z:
        inr = z.is_inr
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; zoo {args.zoo}{' (INRs)' if inr else ''}; "
          + ("checkpoints of an earlier run where there are" if args.reuse else f"{args.minutes} min per fit"))

    results: dict[str, list[dict]] = {}
    for name in args.generators:
        for seed in args.seeds:
            work = out / f"{name}_seed{seed}"
            best, info = fit(name, seed, args.zoo, args.minutes, work, inr=inr, reuse=args.reuse,
                             val_every_steps=args.val_steps)
            (steps, eta), samplers = (choose_sampler(load_model(best, WeightGenerator), args.samplers, args.num)
                                      if len(args.samplers) > 1 else (args.samplers[0], {}))
            gen_path = run_sample(best, args.num, work / "generated.h5", seed=seed, steps=steps, eta=eta)
            report = evaluate_generated(gen_path, args.zoo, work / "report", seed=seed)
            row = {"seed": seed, **info, "sample_steps": steps, "eta": eta, "validation_quality_by_sampler": samplers,
                   **headline(report)}
            results.setdefault(name, []).append(row)
            print(f"{name:<7} seed {seed}: {info.get('steps', '?')} steps in {info.get('train_seconds', float('nan')):.0f}"
                  f" s; sampled with {steps} steps, eta {eta:g}{_scores(samplers)}; {row['metric']} "
                  f"{row['gen_quality_mean']:.3f} (train nets {row['train_quality_mean']:.3f}, ratio "
                  f"{row['rel_quality']:.2f}); weight novelty {row['weight_novelty_median']:.2f} (train NN "
                  f"{row['reference_nn_distance_median']:.2f}); behavioural novelty "
                  f"{row['behavioural_novelty_median']:.3f}"
                  f"; matched noise {row.get('matched_noise_quality_mean', float('nan')):.3f} -> beats noise: "
                  f"{row.get('beats_noise')}", flush=True)

    conditional = None
    if args.conditional:
        seeds = args.seeds if args.conditional_seeds is None else args.conditional_seeds
        runs = [conditional_run(args, seed, inr, out) for seed in seeds]
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in ("seed", "guidance")]
        conditional = {"generator": args.conditional, "seeds": seeds, "runs": runs,
                       "mean": {k: float(np.mean([r.get(k, np.nan) for r in runs])) for k in keys},
                       "std": {k: float(np.std([r.get(k, np.nan) for r in runs])) for k in keys}}
        shown = ("exact", "gen_quality_mean") if inr else ("pearson", "mae", "high_acc_median")
        print(f"conditional ({args.conditional}), {len(seeds)} seed(s): " + ", ".join(
            f"{k} {conditional['mean'][k]:.3f} ± {conditional['std'][k]:.3f}" for k in shown), flush=True)

    summary = {}
    for name, rows in results.items():
        summary[name] = {k: float(np.mean([r.get(k, np.nan) for r in rows])) for k in rows[0]
                         if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool) and k != "seed"}
        summary[name]["std_rel_quality"] = float(np.std([r["rel_quality"] for r in rows]))
        summary[name]["beats_noise_seeds"] = int(sum(bool(r.get("beats_noise")) for r in rows))
        summary[name]["description"] = GENERATORS[name][3]
    if results:
        metric = next(iter(results.values()))[0]["metric"]
        print(f"\n| generator | seeds | {metric} / train nets' | weight novelty (train NN) | behavioural novelty "
              f"(train) | matched-noise {metric} | beats noise |")
        print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {len(results[name])} | {s['rel_quality']:.2f} ± {s['std_rel_quality']:.2f} | "
              f"{s['weight_novelty_median']:.2f} ({s['reference_nn_distance_median']:.2f}) | "
              f"{s['behavioural_novelty_median']:.3f} ({s['reference_behavioural_median']:.3f}) | "
              f"{s.get('matched_noise_quality_mean', float('nan')):.3f} vs {s['gen_quality_mean']:.3f} | "
              f"{s['beats_noise_seeds']}/{len(results[name])} |")
    speed = throughput(args, out) if args.throughput else None
    result = {"benchmark": "diffusion", "zoo": args.zoo, "throughput": speed,
              "minutes_per_fit": None if args.reuse else args.minutes, "num": args.num, "generators": summary,
              "runs": results, "conditional": conditional}
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
