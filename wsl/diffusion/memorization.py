"""Does a weight generator generate, or memorize? The memorization suite of Zeng et al. 2025
("Generative Modeling of Weights: Generalization or Memorization?"), run by
``wsl evaluate-generated``.

A generator whose samples are accurate may simply be replaying its training networks. The suite
scores every set of networks (the generator's, the reference networks themselves, and baselines
built from the reference networks) with the same three functions (``wsl.diffusion.scores``):

- **quality**: the task's metric (test accuracy; test loss for regression) from running each
  network on the task's test data; for INRs, the PSNR of its rendering to the nearest held-out
  (test) signal: does it draw something like a real, unseen image?
- **weight novelty**: the L2 distance to the nearest reference ("training") network, over all
  parameters, after aligning hidden-neuron permutations by weight matching
  (``wsl.diffusion.novelty``). Permutations only: ReLU scalings and tanh sign flips are not factored out;
- **behavioural novelty**: the largest IoU between the set of test examples a network gets wrong
  and that of any reference network (1 = it errs exactly like some reference network); for INRs,
  the PSNR of its rendering to the nearest reference INR's rendering (high = it draws a copy).

Baselines that cannot generalize beyond the references by construction set the scale
(``wsl.diffusion.reference_baselines``); the references' own nearest-neighbour distances (each to
the others) say how far apart independently trained networks are. The files written:
``wsl.diffusion.report``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from wsl.data.runs import ZooRuns, check_same_space, run_key
from wsl.data.task import source_task
from wsl.diffusion.networks import evaluate_networks, inr_metrics
from wsl.diffusion.novelty import DEFAULT_ANCHORS, DEFAULT_CANDIDATES
from wsl.diffusion.reference_baselines import average_baseline, calibrate_noise, gaussian_baseline, noise_baseline
from wsl.diffusion.report import GENERATOR, REFERENCE, write_report
from wsl.diffusion.scores import Scorer, behaviour_method, conditional_agreement, summarize
from wsl.weights import WeightBatch
from zoo.errors import InputError
from zoo.store import Zoo
from zoo.train import metric_names

DEFAULT_SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_AVERAGE_KS = (2, 4)
#: References whose own nearest-neighbour distances are computed (a seeded subset if more).
DEFAULT_SELF_SUBSET = 100


# ----------------------------------------------------------------------------------------------
# Reading the two zoos

def load_generated(path: str | Path) -> dict[str, Any]:
    """The networks of a generated zoo at its (last) checkpoint, with its provenance and columns."""
    with Zoo(path) as z:
        wb = WeightBatch.from_params(z.spec, z.batch(np.arange(len(z)), -1))
        return {"wb": wb, "spec": z.spec, "generated": z.generated or {}, "config": z.config,
                "columns": {h: z.hparam(h) for h in z.hparam_names}, "epoch": z.checkpoint_epochs[-1],
                "is_generated": z.generated is not None}


def load_reference(path: str | Path, generated: dict[str, Any], *, max_reference: int | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """The reference ("training") networks of a generated zoo: the ``train_runs`` its provenance
    names (model indices of the reference zoo), else every done model meeting its ``select``; at
    its ``checkpoint_epoch``, else the last checkpoint. ``max_reference``: a seeded subset."""
    select = generated.get("select") or None
    runs = ZooRuns(path, select)
    chosen, how = _reference_runs(runs, generated, path, select)
    if max_reference is not None and len(chosen) > max_reference:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), max_reference, replace=False))
        chosen = [chosen[k] for k in keep]
        how += f", a seeded subset of {max_reference}"
    epoch = generated.get("checkpoint_epoch")
    pos = runs.epoch_positions(0, [int(epoch)])[0] if epoch is not None else runs.checkpoint_position(0, -1)
    items = runs.items(chosen, [[pos]])
    params = runs.read_weights(items)
    order = np.argsort(items["run"])
    wb = WeightBatch.from_params(runs.spec, [p[torch.as_tensor(order)] for p in params])
    rows = runs.rows(0, [i for _, i in chosen])
    stored = {name: runs.column(0, name)[rows, pos] for name in runs.metric_names[0]}
    return {"wb": wb, "spec": runs.spec, "indices": np.asarray([i for _, i in chosen]),
            "activations": runs.activations(chosen), "config": runs.configs[0], "how": how, "select": select,
            "epoch": runs.checkpoint_epochs[0][pos], "stored_metrics": stored}


def _reference_runs(runs: ZooRuns, generated: dict[str, Any], path: str | Path,
                    select: dict[str, Any] | None) -> tuple[list, str]:
    """The runs of the reference zoo that the generator trained on, and how they were chosen in words."""
    if generated.get("train_runs") is None:
        return list(runs.done), "every done model" + (f" meeting select {select}" if select else "")
    wanted = [run_key(r) for r in generated["train_runs"]]
    if any(fi != 0 for fi, _ in wanted):
        raise InputError(f"the generated zoo's train_runs span several zoo files; {path} is one zoo: evaluate "
                         f"against a merged zoo or give runs of one file")
    missing = sorted(set(wanted) - set(runs.done))
    if missing:
        raise InputError(f"{path}: the generated zoo's train_runs name models {[i for _, i in missing[:10]]} that "
                         f"are not done models of this zoo" + (f" meeting select {select}" if select else "")
                         + ": is this the zoo the generator was trained on?")
    return wanted, "the generator's train_runs"


def _activation(gen: dict[str, Any], reference_activations: Sequence[str], generated_path: str | Path) -> str:
    """The activation every network is run with: the generated weight space's, else the one its
    provenance selects, else the references' if they all share one."""
    activation = gen["spec"].activation or (gen["generated"].get("select") or {}).get("activation")
    acts = set(np.asarray(reference_activations).tolist())
    if activation is None and len(acts) == 1:
        activation = str(acts.pop())
    if activation is None:
        raise InputError(f"{generated_path}: its weight space has a per-model activation and its provenance selects "
                         f"none; the reference networks mix {sorted(acts)}")
    return activation


def _keep_activation(ref: dict[str, Any], activation: str, reference_path: str | Path) -> None:
    """Drop the reference networks with another activation: baselines built from them must be run
    with the generator's."""
    acts = np.asarray(ref["activations"])
    if not (acts != activation).any():
        return
    keep = np.flatnonzero(acts == activation)
    if not len(keep):
        raise InputError(f"{reference_path}: no reference network has the generated networks' activation "
                         f"{activation!r} (they have {sorted(set(acts.tolist()))})")
    ref["wb"], ref["indices"] = ref["wb"][torch.as_tensor(keep)], ref["indices"][keep]
    ref["stored_metrics"] = {k: v[keep] for k, v in ref["stored_metrics"].items()}
    ref["how"] += f", those with activation {activation} ({len(keep)} of {len(acts)})"


# ----------------------------------------------------------------------------------------------
# Scoring every method

@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Record how long the block took as ``seconds[step]``."""
    t = time.perf_counter()
    yield
    seconds[step] = round(time.perf_counter() - t, 3)


class Scoreboard:
    """The methods scored so far: each one's summary (a row of the report), its scores per network
    (for the plot), and the seconds each step took."""

    def __init__(self, scorer: Scorer, seconds: dict[str, float], log: Callable[[str], None]):
        self.scorer, self.seconds, self.log = scorer, seconds, log
        self.methods: dict[str, dict[str, Any]] = {}
        self.per_network: dict[str, dict[str, np.ndarray]] = {}

    def run(self, name: str, wb: WeightBatch, exclude: Sequence[int] | None = None, **extra) -> dict[str, np.ndarray]:
        """Score ``wb`` as the method ``name``; ``extra``: how its networks were made, for the report."""
        with timed(self.seconds, name):
            s = self.scorer.score(wb, exclude)
        self.per_network[name] = s
        self.methods[name] = summarize(s, **extra)
        self.log(f"{name}: {self.seconds[name]:.1f} s")
        return s


def _score_reference_quality(board: Scoreboard, ref: dict[str, Any]) -> dict[str, Any] | None:
    """Every reference network's quality (a row without novelty: they are the references); returns
    its agreement with the metric stored in the zoo, which checks that the task was rebuilt right."""
    scorer, R = board.scorer, ref["wb"]
    metric = (inr_metrics(R.spec, R, scorer.task, scorer.activation, ("test",), scorer.reference_outputs)["test_psnr"]
              if scorer.inr else
              evaluate_networks(R.spec, R, scorer.task, scorer.activation, splits=("test",))[scorer.metric])
    none = np.full(len(R), np.nan)
    board.methods["reference (all)"] = summarize({"metric": metric, "weight_novelty": none,
                                                  "weight_novelty_unaligned": none, "behavioural_novelty": none},
                                                 description="every reference network (quality only)")
    return _metric_check(ref["stored_metrics"].get(scorer.metric), metric, scorer.metric, board.log)


def _metric_check(stored: np.ndarray | None, recomputed: np.ndarray, metric: str,
                  log: Callable[[str], None]) -> dict[str, Any] | None:
    """How far the recomputed metric is from the stored one (None: none stored); warns past 1e-4."""
    if stored is None:
        return None
    diff = np.abs(stored - recomputed)
    if not np.isfinite(diff).any():
        return {"max_abs_difference": None, "agrees": None}
    check = {"max_abs_difference": float(np.nanmax(diff)), "agrees": bool(np.nanmax(diff) <= 1e-4)}
    if not check["agrees"]:
        log(f"warning: the reference networks' recomputed {metric} differs from the stored one by up to "
            f"{check['max_abs_difference']:.3g}: is the task rebuilt from other data (data_dir)?")
    return check


def _score_reference_novelty(board: Scoreboard, R: WeightBatch, self_subset: int, seed: int) -> int:
    """The references' own nearest-neighbour distances (a seeded subset, each against the others):
    how far apart independently trained networks are. Returns the subset's size."""
    m = len(R)
    subset = np.sort(np.random.default_rng(seed).choice(m, min(m, self_subset), replace=False))
    board.run(REFERENCE, R[torch.as_tensor(subset)], exclude=subset,
              description=f"reference networks ({len(subset)} of {m}, seeded) against the other references")
    return int(len(subset))


def _score_noise(board: Scoreboard, R: WeightBatch, n: int, sigmas: Sequence[float], seed: int) -> dict[str, Any] | None:
    """The noise baseline at each sigma, then at the sigma whose median weight novelty matches the
    generator's; returns that calibration (None: no generated network has a finite novelty)."""
    grid: dict[float, float] = {}
    for s in sigmas:
        r = board.run(f"noise sigma={s:g}", noise_baseline(R, n, s, seed), description="reference + Gaussian noise, "
                      f"sigma {s:g} x each tensor's RMS", sigma=float(s))
        grid[float(s)] = float(np.nanmedian(r["weight_novelty"]))
    target = board.methods[GENERATOR]["weight_novelty"].get("median")
    if target is None:
        return None
    with timed(board.seconds, "noise calibration"):
        calibration = calibrate_noise(R, n, target, board.scorer.novelty_median, seed=seed, known=grid)
    board.run("noise sigma=matched", noise_baseline(R, n, calibration["sigma"], seed),
              description=f"reference + Gaussian noise at the sigma ({calibration['sigma']:.4g}) whose median weight "
              f"novelty matches the generator's", sigma=calibration["sigma"])
    return calibration


def _score_averages(board: Scoreboard, R: WeightBatch, n: int, average_ks: Sequence[int], seed: int) -> None:
    """Averages of k reference networks, aligned to the first and not."""
    for k in [k for k in average_ks if k <= len(R)]:
        for aligned in (True, False):
            board.run(f"average k={k}" + (" aligned" if aligned else ""), average_baseline(R, n, k, aligned, seed),
                      description=f"mean of {k} random reference networks"
                      + (", aligned to the first" if aligned else ", not aligned"), k=int(k), aligned=aligned)


def _score_gaussians(board: Scoreboard, R: WeightBatch, n: int, seed: int) -> None:
    """Per-parameter Gaussians fitted to the references, as they are and aligned to one of them."""
    for aligned in (False, True):
        board.run("gaussian" + (" aligned" if aligned else ""), gaussian_baseline(R, n, aligned, seed),
                  description="per-parameter Gaussian fitted to the references"
                  + (" after aligning them to one" if aligned else ""), aligned=aligned)


def _conditional(columns: dict[str, np.ndarray], G: WeightBatch, g: dict[str, np.ndarray],
                 scorer: Scorer) -> dict[str, dict[str, Any]]:
    """Per ``requested_<metric>`` column of a conditional generator's zoo: how well the values its
    networks achieve follow the requested ones (``conditional_agreement``, and both values)."""
    out = {}
    for col, requested in columns.items():
        if col.startswith("requested_") and requested.dtype.kind in "fiu":
            metric = col[len("requested_"):]
            achieved = _achieved(metric, G, g, scorer)
            if achieved is not None:
                out[metric] = conditional_agreement(requested, achieved) | {"requested": requested,
                                                                             "achieved": achieved}
    return out


def _achieved(metric: str, G: WeightBatch, g: dict[str, np.ndarray], scorer: Scorer) -> np.ndarray | None:
    """Per generated network, the value of ``metric`` it achieves (``g``: its scores); None: the task
    has no such metric."""
    task = scorer.task
    if scorer.inr and metric in task.fields:
        field = np.asarray(task.fields[metric])  # e.g. the label: that of the nearest test signal
        return np.where(g["signal"] >= 0, field[np.maximum(g["signal"], 0)].astype(np.float64), np.nan)
    if metric in metric_names(task):
        return g["metric"] if metric == scorer.metric else evaluate_networks(G.spec, G, task, scorer.activation)[metric]
    return None


# ----------------------------------------------------------------------------------------------
# The run

def evaluate_generated(generated_path: str | Path, reference_path: str | Path, out_dir: str | Path, *, seed: int = 0,
                       max_reference: int | None = None, candidates: int = DEFAULT_CANDIDATES,
                       anchors: int = DEFAULT_ANCHORS,
                       sigmas: Sequence[float] = DEFAULT_SIGMAS, average_ks: Sequence[int] = DEFAULT_AVERAGE_KS,
                       self_subset: int = DEFAULT_SELF_SUBSET, data_dir: str | Path | None = None,
                       log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Score a generated zoo against its reference zoo and the baselines; write ``report.json``,
    ``report.md``, ``accuracy_vs_novelty.png`` (and ``conditional.png`` for a conditional
    generator, whose zoo has ``requested_<metric>`` columns) into ``out_dir``; return the report."""
    started = time.perf_counter()
    gen = load_generated(generated_path)
    ref = load_reference(reference_path, gen["generated"], max_reference=max_reference, seed=seed)
    check_same_space(gen["spec"], ref["spec"], f"generated zoo {generated_path}", f"reference zoo {reference_path}")
    activation = _activation(gen, ref["activations"], generated_path)
    _keep_activation(ref, activation, reference_path)
    task = source_task(ref["config"], data_dir)
    G, R = gen["wb"], ref["wb"]
    log(f"{len(G)} generated networks, {len(R)} reference networks ({ref['how']}, epoch {ref['epoch']})")
    seconds: dict[str, float] = {}
    with timed(seconds, "reference index and wrong sets"):
        scorer = Scorer(R, task, activation, candidates=candidates, anchors=anchors, seed=seed)
    board = Scoreboard(scorer, seconds, log)
    board.run(GENERATOR, G, description="the generated networks")
    metric_check = _score_reference_quality(board, ref)
    n_self = _score_reference_novelty(board, R, self_subset, seed)
    calibration = _score_noise(board, R, len(G), sigmas, seed)
    _score_averages(board, R, len(G), average_ks, seed)
    _score_gaussians(board, R, len(G), seed)
    conditional = _conditional(gen["columns"], G, board.per_network[GENERATOR], scorer)
    report = _report(generated_path, reference_path, gen, ref, board, max_reference=max_reference,
                     candidates=candidates, anchors=anchors, n_self=n_self, metric_check=metric_check,
                     calibration=calibration, conditional=conditional)
    behavioural = ("max PSNR to a reference network's rendering (dB)" if scorer.inr
                   else "max IoU of wrong sets with a reference network" if scorer.classification else None)
    return write_report(report, board.per_network, conditional, Path(out_dir), behavioural, started)


def _report(generated_path: str | Path, reference_path: str | Path, gen: dict[str, Any], ref: dict[str, Any],
            board: Scoreboard, *, max_reference: int | None, candidates: int, anchors: int, n_self: int,
            metric_check: dict[str, Any] | None, calibration: dict[str, Any] | None,
            conditional: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report: what was compared and how, every method's summary, the generated networks' scores."""
    scorer, g = board.scorer, board.per_network[GENERATOR]
    return {
        "generated": str(generated_path), "reference": str(reference_path), "is_generated_zoo": gen["is_generated"],
        "provenance": gen["generated"], "task": scorer.task.name, "metric": scorer.metric,
        "higher_is_better": not scorer.metric.endswith("loss"), "activation": scorer.activation,
        "n_generated": len(gen["wb"]), "n_reference": len(ref["wb"]),
        "reference_selection": {"runs": ref["how"], "select": ref["select"], "checkpoint_epoch": ref["epoch"],
                                "max_reference": max_reference},
        "weight_novelty_method": _weight_novelty_method(candidates, anchors, n_self),
        "behavioural_novelty_method": behaviour_method(scorer.task),
        "reference_metric_check": metric_check,
        "methods": board.methods,
        "noise_calibration": calibration,
        "conditional": {k: {a: b for a, b in v.items() if a not in ("requested", "achieved")}
                        for k, v in conditional.items()} or None,
        "generator_networks": {"metric": g["metric"], "weight_novelty": g["weight_novelty"],
                               "nearest_reference_model": np.where(g["nearest"] >= 0,
                                                                   ref["indices"][np.maximum(g["nearest"], 0)], -1),
                               "behavioural_novelty": g["behavioural_novelty"]},
        "seconds": board.seconds,
    }


def _weight_novelty_method(candidates: int, anchors: int, n_self: int) -> dict[str, Any]:
    """Weight novelty in words, for the report."""
    return {
        "distance": "L2 over all parameters to the nearest reference network",
        "alignment": "hidden-neuron permutations by weight matching (wsl.weights.align), the reference network "
                     "as the reference; scalings (ReLU) and sign flips (tanh) not factored out",
        "candidates": candidates,
        "anchors": anchors,
        "pruning": f"Only candidates are aligned: the {candidates} references nearest in common frames (hidden "
                   f"neurons sorted by incoming-weight norm; aligned to each of {anchors} anchor references) and "
                   f"the {max(1, candidates // 4)} nearest in permutation-invariant features (Gram matrices, "
                   "singular values, sorted biases); each is aligned from the frame it was nearest in",
        "reference_self_subset": n_self}
