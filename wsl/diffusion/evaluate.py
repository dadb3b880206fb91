"""Does a weight generator generate, or memorize? The memorization suite of Zeng et al. 2025
("Generative Modeling of Weights: Generalization or Memorization?").

A generator whose samples are accurate may simply be replaying its training networks. The suite
scores every set of networks (the generator's, the reference networks themselves, and baselines
built from the reference networks) with the same three functions:

- **quality**: the task's metric (test accuracy; test loss for regression) from running each
  network on the task's test data; for INRs, the PSNR of its rendering to the nearest held-out
  (test) signal: does it draw something like a real, unseen image?
- **weight novelty**: the L2 distance to the nearest reference ("training") network, over all
  parameters, after aligning hidden-neuron permutations by weight matching
  (``wsl.weights.align``). Permutations only: ReLU scalings and tanh sign flips are not factored out;
- **behavioural novelty**: the largest IoU between the set of test examples a network gets wrong
  and that of any reference network (1 = it errs exactly like some reference network); for INRs,
  the PSNR of its rendering to the nearest reference INR's rendering (high = it draws a copy).

Baselines that cannot generalize beyond the references by construction set the scale: references
plus Gaussian noise (sigma a multiple of each tensor's RMS, including the sigma whose median weight
novelty matches the generator's), averages of k reference networks (aligned and not), and a
per-parameter Gaussian fitted to the references (aligned and not). A generator is only
interesting where it beats them: as accurate as the references, at a novelty that the noise
baseline reaches only by losing accuracy. The references' own nearest-neighbour distances (each
to the others) say how far apart independently trained networks are.

Weight matching of every pair costs linear assignments per hidden group and pass, so candidates
are pruned first (``ReferenceIndex``): each network is aligned only with the K references nearest
to it in a few common frames (where flat distances bound aligned ones from above) and the K / 4
nearest in permutation-invariant features (which find noisy, permuted copies).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from wsl.data.runs import ZooRuns, check_same_space, run_key
from wsl.data.task import source_task
from wsl.diffusion.networks import evaluate_networks, finite_networks, inr_metrics, nearest_signal, render, wrong_sets
from wsl.weights import WeightBatch
from wsl.weights.align import align, match_permutations
from wsl.weights.symmetry import permute
from zoo.inr import psnr
from zoo.signals import SignalSet
from zoo.store import Zoo
from zoo.train import metric_names
from zoo.errors import InputError

DEFAULT_CANDIDATES = 16
DEFAULT_ANCHORS = 3
DEFAULT_SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_AVERAGE_KS = (2, 4)
#: References whose own nearest-neighbour distances are computed (a seeded subset if more).
DEFAULT_SELF_SUBSET = 100
GENERATOR, REFERENCE = "generator", "reference (nearest other reference)"


@contextmanager
def one_thread():
    """Run a block on one torch thread: weight matching is thousands of operations on 32 x 32
    matrices, which threads only slow down (10x measured with two threads on a shared two-core
    machine). The previous thread count is restored on exit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Weight novelty

def canonical_order(wb: WeightBatch) -> WeightBatch:
    """Each network with its hidden neurons sorted by the norm of their incoming weights and bias
    (largest first). Permuted copies of a network get the same form; the norms ignore the order of
    the input neurons, so the groups are sorted independently."""
    spec, B = wb.spec, len(wb)
    keys: dict[str, Tensor] = {}
    for layer, w, b in zip(spec.layers, wb.weights, wb.biases):
        if layer.out_group in spec.permutable:
            k = w.reshape(B, layer.out_features, -1).double().pow(2).sum(-1)
            if b is not None:
                k = k + b.double().pow(2)
            keys[layer.out_group] = keys.get(layer.out_group, 0) + k
    return permute(wb, {g: k.argsort(dim=1, descending=True, stable=True) for g, k in keys.items()})


def _flat64(wb: WeightBatch) -> Tensor:
    return wb.flatten().detach().to("cpu", torch.float64)


def _pairwise(a: Tensor, b: Tensor, exclude: np.ndarray | None) -> Tensor:
    """L2 distances [n, m] for ranking (matrix-product form: fast, but not exact near 0), with each
    row's excluded column (``exclude[i]``, -1 for none) set to inf."""
    d = torch.cdist(a, b)
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        d[torch.as_tensor(rows), torch.as_tensor(np.asarray(exclude)[rows])] = math.inf
    return d


def _nearest_unaligned(a: Tensor, b: Tensor, exclude: np.ndarray | None) -> Tensor:
    """[n]: each row's plain L2 distance to its nearest row of ``b``, the nearest found by
    ``_pairwise`` and its distance recomputed from the difference (exact: copies are at 0)."""
    nearest = _pairwise(a, b, exclude).argmin(1)
    return (a - b[nearest]).norm(dim=1)


#: Input (or output) axes wider than this are randomly projected before taking Gram matrices.
GRAM_WIDTH = 64


def invariant_features(wb: WeightBatch, seed: int = 0) -> Tensor:
    """[B, F] features that no hidden-neuron permutation changes and that move little when the
    weights move little, so near-copies of a network land next to it whatever their neuron order:
    per layer, the Gram matrix over its permuted axis (the first layer's incoming weights and
    biases, the last layer's outgoing weights; inputs wider than ``GRAM_WIDTH`` projected on seeded
    random directions), singular values of layers between two hidden groups, sorted hidden
    biases. Gram entries are taken as signed square roots, to scale like the weights."""
    spec, B = wb.spec, len(wb)
    gen = torch.Generator().manual_seed(seed)
    out = []

    def gram(m: Tensor) -> Tensor:  # m [B, n_permuted, D] -> [B, D', D'], summed over the permuted axis
        if m.shape[2] > GRAM_WIDTH:
            m = m @ (torch.randn(m.shape[2], GRAM_WIDTH, generator=gen, dtype=m.dtype) / math.sqrt(GRAM_WIDTH))
        g = m.transpose(1, 2) @ m
        return (g.sign() * g.abs().sqrt()).flatten(1) / math.sqrt(g.shape[1])

    for layer, w, b in zip(spec.layers, wb.weights, wb.biases):
        w = w.double()
        b = w.new_zeros(B, w.shape[1]) if b is None else b.double()
        perm_out, perm_in = layer.out_group in spec.permutable, layer.in_group in spec.permutable
        if perm_out and not perm_in:
            out.append(gram(torch.cat([w.reshape(B, w.shape[1], -1), b[:, :, None]], 2)))
        elif perm_in and not perm_out:
            out += [gram(w.transpose(1, 2).reshape(B, w.shape[2], -1)), b]
        elif perm_in and perm_out:
            out += [torch.linalg.svdvals(w.reshape(B, w.shape[1], -1)), b.sort(1).values]
        else:
            out += [w.flatten(1), b]
    return torch.cat(out, 1)


class ReferenceIndex:
    """What ranks the reference networks as candidates for weight matching, made once per reference
    set: the references in common frames, and their permutation-invariant features.

    Frames: the canonical order (``canonical_order``) and, for each of ``anchors`` reference
    networks drawn with ``seed``, every network aligned to that anchor. Two networks in one frame
    differ by a permutation of one of them, so their flat distance there bounds their aligned
    distance from above. Frames rank independently trained networks well but scatter near-copies
    (weight matching onto an unrelated anchor reaches a different local optimum from each start);
    ``invariant_features`` find near-copies but rank unrelated networks poorly. So the candidates
    are the ``candidates`` nearest by frame distance and the ``candidates // 4`` nearest by
    invariant features. Measured on 64-32-32-10 digits MLPs (700 references): permuted noisy
    copies (sigma up to 1 x RMS) have their source at rank 0 by invariant features, while frames
    alone missed it for 40% of them at sigma 0.1; for 20 held-out networks the 16 frame candidates'
    best was 0.2% above the all-pairs weight-matching distance (median; 2% at most), and below it
    for 30% of them, as weight matching starts from a better permutation."""

    def __init__(self, reference: WeightBatch, anchors: int = DEFAULT_ANCHORS, seed: int = 0, max_iter: int = 50):
        if not finite_networks(reference).all():
            raise InputError("the reference networks must have finite weights")
        self.reference = reference.to(torch.float64)
        self.max_iter, self.seed = max_iter, seed
        picks = np.random.default_rng(seed).choice(len(reference), min(anchors, len(reference)), replace=False)
        self.anchors = [self.reference[int(a)] for a in picks]
        with one_thread():
            self.frames = self.put(self.reference)
        self.flat = [_flat64(f) for f in self.frames]
        self.features = invariant_features(self.reference, seed)

    def __len__(self) -> int:
        return len(self.reference)

    def put(self, wb: WeightBatch) -> list[WeightBatch]:
        """``wb`` (float64) in every frame: canonical order, then aligned to each anchor."""
        wb = WeightBatch(self.reference.spec, wb.weights, wb.biases).to(torch.float64)
        return [canonical_order(wb)] + [align(wb, a, max_iter=self.max_iter, seed=self.seed) for a in self.anchors]


def weight_novelty(wb: WeightBatch, reference: WeightBatch, *, candidates: int = DEFAULT_CANDIDATES,
                   anchors: int = DEFAULT_ANCHORS, exclude: Sequence[int] | None = None, seed: int = 0,
                   max_iter: int = 50, index: ReferenceIndex | None = None) -> dict[str, np.ndarray]:
    """Per network of ``wb``, its distance to the nearest network of ``reference``.

    Returns ``distance`` (L2 over all parameters after weight matching, each candidate reference
    network as the reference, starting from the frame where the pair was nearest; candidates as
    ``ReferenceIndex`` says), ``nearest`` (that reference's position, -1 where undefined),
    ``distance_pruning`` (the nearest in the frames alone, an upper bound of ``distance``) and
    ``distance_unaligned`` (nearest by plain L2, no alignment). ``exclude[i]``: a reference
    position network i must not be compared with (itself, when scoring references against each
    other), -1 for none. Networks with non-finite weights get NaN. ``index``: made once for
    ``reference`` and reused (else made here, with ``anchors`` and ``seed``).
    """
    check_same_space(wb.spec, reference.spec)
    n, m = len(wb), len(reference)
    index = index if index is not None else ReferenceIndex(reference, anchors, seed, max_iter)
    if len(index) != m:
        raise InputError(f"the reference index was made for {len(index)} reference networks, not these {m}")
    out = {"distance": np.full(n, np.nan), "nearest": np.full(n, -1, dtype=np.int64),
           "distance_pruning": np.full(n, np.nan), "distance_unaligned": np.full(n, np.nan)}
    ok = np.flatnonzero(finite_networks(wb))
    excl = None if exclude is None else np.asarray(exclude, dtype=np.int64)[ok]
    k = min(candidates, m - (0 if excl is None or not (excl >= 0).any() else 1))
    if not len(ok) or k < 1:
        return out
    wb = wb[torch.as_tensor(ok)]
    out["distance_unaligned"][ok] = _nearest_unaligned(_flat64(wb), _flat64(index.reference), excl).numpy()
    with one_thread():
        mine = index.put(wb)
    mine_flat = [_flat64(f) for f in mine]
    d, frame = torch.stack([_pairwise(x, r, excl) for x, r in zip(mine_flat, index.flat)]).min(0)  # [n_ok, m]
    by_frames = d.topk(k, dim=1, largest=False).indices
    by_features = _pairwise(invariant_features(wb, index.seed), index.features, excl).topk(
        max(1, k // 4), dim=1, largest=False).indices
    cand = torch.cat([by_frames, by_features], 1)  # [n_ok, k + k // 4], repeats are aligned twice, harmlessly
    cand_frame = frame.gather(1, cand)
    aligned = torch.full(cand.shape, math.inf, dtype=torch.float64)
    pairs = torch.unique(torch.stack([cand.flatten(), cand_frame.flatten()], 1), dim=0)
    with one_thread():
        for r, f in pairs.tolist():  # one weight-matching call per reference and frame
            rows, cols = ((cand == r) & (cand_frame == f)).nonzero(as_tuple=True)
            ref_r, x = index.frames[f][r], mine[f][rows]
            moved = permute(x, match_permutations(ref_r, x, max_iter=max_iter, seed=seed))
            aligned[rows, cols] = (_flat64(moved) - index.flat[f][r]).norm(dim=1)
    best = aligned.min(1)
    first = by_frames[:, 0]  # its frame distance recomputed from the difference (exact: 0 for a copy)
    first_frame = frame.gather(1, first[:, None]).squeeze(1)
    diffs = [mine_flat[f][i] - index.flat[f][r] for i, (r, f) in enumerate(zip(first.tolist(), first_frame.tolist()))]
    out["distance_pruning"][ok] = torch.stack(diffs).norm(dim=1).numpy()
    out["distance"][ok] = best.values.numpy()
    out["nearest"][ok] = cand.gather(1, best.indices[:, None]).squeeze(1).numpy()
    return out


# ----------------------------------------------------------------------------------------------
# Behavioural novelty

def wrong_set_iou(wrong: np.ndarray, reference_wrong: np.ndarray) -> np.ndarray:
    """[n, m] IoU of the sets of wrongly classified examples; two empty sets count as equal (1)."""
    a = torch.as_tensor(np.asarray(wrong), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(reference_wrong), dtype=torch.float64)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter)).numpy()


def behavioural_novelty(wrong: np.ndarray, reference_wrong: np.ndarray,
                        exclude: Sequence[int] | None = None) -> np.ndarray:
    """[n]: per network, the largest IoU of its wrong set with a reference network's (lower = more
    novel); ``exclude[i]`` as in ``weight_novelty``."""
    iou = wrong_set_iou(wrong, reference_wrong)
    if exclude is not None:
        ex = np.asarray(exclude)
        rows = np.flatnonzero(ex >= 0)
        iou[rows, ex[rows]] = -np.inf
    return iou.max(1) if iou.shape[1] else np.full(len(iou), np.nan)


# ----------------------------------------------------------------------------------------------
# Baselines: networks built from the references, as many as the generator's, seeded

def _pick(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n reference positions: distinct while n <= m."""
    return rng.choice(m, n, replace=n > m)


def _noise_parts(reference: WeightBatch, n: int, seed: int) -> tuple[WeightBatch, list[Tensor], list[Tensor]]:
    """The sources, unit noise and per-tensor RMS of the noise baseline: noise at sigma is
    ``source + sigma * rms * eps``, the same draws for every sigma (so novelty grows smoothly)."""
    src = reference[torch.as_tensor(_pick(len(reference), n, np.random.default_rng(seed)))].to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    eps = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in src.params()]
    rms = [t.reshape(len(src), -1).pow(2).mean(1).sqrt().view(-1, *[1] * (t.dim() - 1)) for t in src.params()]
    return src, eps, rms


def _noisy(parts, sigma: float) -> WeightBatch:
    src, eps, rms = parts
    return WeightBatch.from_params(src.spec, [t + sigma * s * e for t, e, s in zip(src.params(), eps, rms)])


def noise_baseline(reference: WeightBatch, n: int, sigma: float, seed: int = 0) -> WeightBatch:
    """n reference networks (drawn at random) plus Gaussian noise of ``sigma`` times each tensor's
    RMS (per network and parameter tensor)."""
    return _noisy(_noise_parts(reference, n, seed), sigma)


def average_baseline(reference: WeightBatch, n: int, k: int, aligned: bool, seed: int = 0) -> WeightBatch:
    """n averages of k distinct random reference networks; ``aligned``: the other k - 1 first
    permuted onto the first by weight matching (averaging unaligned networks mixes unrelated
    neurons)."""
    m = len(reference)
    if not 1 <= k <= m:
        raise InputError(f"average of k={k} networks needs 1 <= k <= {m} (the reference networks)")
    rng = np.random.default_rng(seed)
    ref = reference.to(torch.float64)
    out = []
    for _ in range(n):
        pick = torch.as_tensor(rng.choice(m, k, replace=False))
        first, others = ref[pick[:1]], ref[pick[1:]]
        if aligned and k > 1:
            with one_thread():
                others = align(others, first, seed=seed)
        group = WeightBatch.cat([first, others]) if k > 1 else first
        out.append(group.map(lambda t: t.mean(0, keepdim=True)))
    return WeightBatch.cat(out)


def gaussian_baseline(reference: WeightBatch, n: int, aligned: bool = False, seed: int = 0) -> WeightBatch:
    """n draws from a per-parameter Gaussian fitted to the references (mean and std of each
    parameter); ``aligned``: fitted after aligning every reference to one of them (drawn)."""
    ref = reference.to(torch.float64)
    if aligned:
        anchor = int(np.random.default_rng(seed).integers(len(ref)))
        with one_thread():
            ref = align(ref, ref[anchor], seed=seed)
    gen = torch.Generator().manual_seed(seed)
    params = [t.mean(0) + t.std(0, correction=0) * torch.randn((n, *t.shape[1:]), generator=gen, dtype=torch.float64)
              for t in ref.params()]
    return WeightBatch.from_params(ref.spec, params)


def calibrate_noise(reference: WeightBatch, n: int, target: float, novelty: Callable[[WeightBatch], float], *,
                    seed: int = 0, bracket: tuple[float, float] = (1e-4, 10.0), rtol: float = 0.02,
                    max_iter: int = 16, known: dict[float, float] | None = None) -> dict[str, Any]:
    """The sigma whose noise baseline has median weight novelty ``target``, by bisection of log
    sigma; ``novelty(wb)`` is that median. ``known``: sigma -> median already computed (the grid),
    to start from the tightest bracket. The draws are the same at every sigma."""
    parts = _noise_parts(reference, n, seed)
    seen = {s: v for s, v in (known or {}).items() if math.isfinite(v)}
    before = len(seen)

    def f(s: float) -> float:
        if s not in seen:
            seen[s] = novelty(_noisy(parts, s))
        return seen[s]

    def result(sigma: float, **extra) -> dict[str, Any]:
        return {"sigma": sigma, "median_weight_novelty": f(sigma), "target": target,
                "converged": abs(f(sigma) - target) <= rtol * abs(target), "evaluations": len(seen) - before} | extra

    lo = max((s for s, v in seen.items() if v <= target), default=bracket[0])
    hi = min((s for s, v in seen.items() if v >= target), default=bracket[1])
    if f(lo) > target:
        return result(lo, note=f"even sigma {lo:g} gives more novelty than the generator")
    if f(hi) < target:
        return result(hi, note=f"even sigma {hi:g} gives less novelty than the generator")
    sigma = lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi
    for _ in range(max_iter):
        if abs(f(sigma) - target) <= rtol * abs(target):
            break
        sigma = math.sqrt(lo * hi)
        if f(sigma) < target:
            lo = sigma
        else:
            hi = sigma
    return result(sigma)


# ----------------------------------------------------------------------------------------------
# Scores and summaries

def quality_metric(task) -> str:
    """The metric that says how good a network is: test accuracy, test loss for regression, or for
    INRs the PSNR to the nearest test signal."""
    if isinstance(task, SignalSet):
        return "test_psnr"
    return "test_acc" if task.kind == "classification" else "test_loss"


def behaviour_method(task) -> str | None:
    """What behavioural novelty measures on this task (None: not defined, regression)."""
    if isinstance(task, SignalSet):
        return ("max over reference INRs of the PSNR (dB) between their renderings on the task's coordinates "
                "(high = draws what a reference draws; lower = more novel)")
    if task.kind == "classification":
        return ("max over reference networks of the IoU of the sets of test examples each gets wrong (1 = errs "
                "exactly like a reference; lower = more novel)")
    return None


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """Summary statistics of the finite values, and how many were not finite."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(len(v)), "n_nonfinite": int(len(v) - len(fin))}
    if len(fin):
        q = np.quantile(fin, [0.05, 0.25, 0.5, 0.75, 0.95])
        out |= {"mean": float(fin.mean()), "std": float(fin.std()), "min": float(fin.min()), "q05": float(q[0]),
                "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
                "max": float(fin.max())}
    return out


def conditional_agreement(requested: Sequence[float], achieved: Sequence[float]) -> dict[str, Any]:
    """How well achieved values follow the requested ones: Pearson and Spearman correlation, mean
    absolute error (pairs with a non-finite value are left out; a constant side gives NaN)."""
    r, a = np.asarray(requested, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(a)
    r, a = r[keep], a[keep]
    categorical = len(r) > 0 and bool((r == np.round(r)).all())  # class labels: how often they are met

    def pearson(x, y) -> float:
        if len(x) < 2 or x.std() == 0 or y.std() == 0:
            return float("nan")
        return float(((x - x.mean()) * (y - y.mean())).mean() / (x.std() * y.std()))

    return {"n": int(len(r)), "n_left_out": int((~keep).sum()), "pearson": pearson(r, a),
            "spearman": pearson(rankdata(r), rankdata(a)),
            "mae": float(np.abs(r - a).mean()) if len(r) else float("nan"),
            "exact": float((r == a).mean()) if categorical else float("nan")}


class Scorer:
    """Scores sets of networks against one reference set, all run with one ``activation``; the
    references' wrong sets are computed once."""

    def __init__(self, reference: WeightBatch, task, activation: str, *, candidates: int = DEFAULT_CANDIDATES,
                 anchors: int = DEFAULT_ANCHORS, seed: int = 0):
        self.reference, self.task, self.activation = reference, task, activation
        self.candidates, self.seed = candidates, seed
        self.index = ReferenceIndex(reference, anchors, seed)
        self.metric = quality_metric(task)
        self.inr = isinstance(task, SignalSet)
        self.classification = not self.inr and task.kind == "classification"
        self.reference_wrong = (wrong_sets(reference.spec, reference, task, "test", activation)
                                if self.classification else None)
        self.reference_outputs = render(reference.spec, reference, task.coords, activation) if self.inr else None

    def novelty_median(self, wb: WeightBatch) -> float:
        d = weight_novelty(wb, self.reference, candidates=self.candidates, seed=self.seed, index=self.index)["distance"]
        return float(np.nanmedian(d)) if np.isfinite(d).any() else float("nan")

    def score(self, wb: WeightBatch, exclude: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Per network: ``metric``, ``weight_novelty`` (and ``_unaligned``, ``_pruning``),
        ``nearest`` (reference position), ``behavioural_novelty`` (NaN for regression); for INRs
        also ``signal``, the task index of the nearest test signal."""
        act = self.activation
        spec = self.reference.spec
        if self.inr:
            outputs = render(spec, wb, self.task.coords, act)
            near = inr_metrics(spec, wb, self.task, act, ("test",), outputs)
            out = {"metric": near["test_psnr"], "signal": near["test_signal"]}
        else:
            out = {"metric": evaluate_networks(spec, wb, self.task, act, splits=("test",))[self.metric]}
        wn = weight_novelty(wb, self.reference, candidates=self.candidates, exclude=exclude, seed=self.seed,
                            index=self.index)
        out |= {"weight_novelty": wn["distance"], "weight_novelty_unaligned": wn["distance_unaligned"],
                "weight_novelty_pruning": wn["distance_pruning"], "nearest": wn["nearest"]}
        if self.classification:
            bn = behavioural_novelty(wrong_sets(spec, wb, self.task, "test", act), self.reference_wrong, exclude)
            bn[~finite_networks(wb)] = np.nan
        elif self.inr:
            _, mse = nearest_signal(outputs, self.reference_outputs, exclude=exclude)
            bn = psnr(torch.as_tensor(mse), self.task.peak).numpy()
        else:
            bn = np.full(len(wb), np.nan)
        out["behavioural_novelty"] = bn
        return out


def summarize(scores: dict[str, np.ndarray], **extra) -> dict[str, Any]:
    return {"n": int(len(scores["metric"])), **extra, "quality": distribution(scores["metric"]),
            "weight_novelty": distribution(scores["weight_novelty"]),
            "weight_novelty_unaligned": distribution(scores["weight_novelty_unaligned"]),
            "behavioural_novelty": distribution(scores["behavioural_novelty"])}


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
    if generated.get("train_runs") is not None:
        wanted = [run_key(r) for r in generated["train_runs"]]
        if any(fi != 0 for fi, _ in wanted):
            raise InputError(f"the generated zoo's train_runs span several zoo files; {path} is one zoo: evaluate "
                             f"against a merged zoo or give runs of one file")
        missing = sorted(set(wanted) - set(runs.done))
        if missing:
            raise InputError(f"{path}: the generated zoo's train_runs name models {[i for _, i in missing[:10]]} that "
                             f"are not done models of this zoo" + (f" meeting select {select}" if select else "")
                             + ": is this the zoo the generator was trained on?")
        chosen, how = wanted, "the generator's train_runs"
    else:
        chosen, how = list(runs.done), "every done model" + (f" meeting select {select}" if select else "")
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


# ----------------------------------------------------------------------------------------------
# The report

def evaluate_generated(generated_path: str | Path, reference_path: str | Path, out_dir: str | Path, *, seed: int = 0,
                       max_reference: int | None = None, candidates: int = DEFAULT_CANDIDATES,
                       anchors: int = DEFAULT_ANCHORS,
                       sigmas: Sequence[float] = DEFAULT_SIGMAS, average_ks: Sequence[int] = DEFAULT_AVERAGE_KS,
                       self_subset: int = DEFAULT_SELF_SUBSET, data_dir: str | Path | None = None,
                       log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Score a generated zoo against its reference zoo and the baselines; write ``report.json``,
    ``report.md``, ``accuracy_vs_novelty.png`` (and ``conditional.png`` for a conditional
    generator, whose zoo has ``requested_<metric>`` columns) into ``out_dir``; return the report."""
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    out_dir = Path(out_dir)
    gen = load_generated(generated_path)
    provenance = gen["generated"]
    ref = load_reference(reference_path, provenance, max_reference=max_reference, seed=seed)
    check_same_space(gen["spec"], ref["spec"], f"generated zoo {generated_path}", f"reference zoo {reference_path}")
    activation = gen["spec"].activation or (provenance.get("select") or {}).get("activation")
    acts = np.asarray(ref["activations"])
    if activation is None and len(set(acts)) == 1:
        activation = str(acts[0])
    if activation is None:
        raise InputError(f"{generated_path}: its weight space has a per-model activation and its provenance selects "
                         f"none; the reference networks mix {sorted(set(acts))}")
    if (acts != activation).any():  # baselines built from them must be run with the generator's activation
        keep = np.flatnonzero(acts == activation)
        if not len(keep):
            raise InputError(f"{reference_path}: no reference network has the generated networks' activation "
                             f"{activation!r} (they have {sorted(set(acts))})")
        ref["wb"], ref["indices"] = ref["wb"][torch.as_tensor(keep)], ref["indices"][keep]
        ref["stored_metrics"] = {k: v[keep] for k, v in ref["stored_metrics"].items()}
        ref["how"] += f", those with activation {activation} ({len(keep)} of {len(acts)})"
    task = source_task(ref["config"], data_dir)
    G, R = gen["wb"], ref["wb"]
    n, m = len(G), len(R)
    log(f"{n} generated networks, {m} reference networks ({ref['how']}, epoch {ref['epoch']})")
    t = time.perf_counter()
    scorer = Scorer(R, task, activation, candidates=candidates, anchors=anchors, seed=seed)
    seconds["reference index and wrong sets"] = round(time.perf_counter() - t, 3)

    methods: dict[str, dict[str, Any]] = {}
    per_network: dict[str, dict[str, np.ndarray]] = {}

    def run(name: str, wb: WeightBatch, exclude=None, **extra) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        s = scorer.score(wb, exclude)
        seconds[name] = round(time.perf_counter() - t, 3)
        per_network[name] = s
        methods[name] = summarize(s, **extra)
        log(f"{name}: {seconds[name]:.1f} s")
        return s

    g = run(GENERATOR, G, description="the generated networks")
    # every reference network's quality; its agreement with the stored metric checks the rebuilt task
    ref_metric = (inr_metrics(R.spec, R, task, activation, ("test",), scorer.reference_outputs)["test_psnr"]
                  if scorer.inr else evaluate_networks(R.spec, R, task, activation, splits=("test",))[scorer.metric])
    none = np.full(m, np.nan)
    methods["reference (all)"] = summarize({"metric": ref_metric, "weight_novelty": none,
                                            "weight_novelty_unaligned": none, "behavioural_novelty": none},
                                           description="every reference network (quality only)")
    stored = ref["stored_metrics"].get(scorer.metric)
    metric_check = None
    if stored is not None:
        diff = np.abs(stored - ref_metric)
        metric_check = {"max_abs_difference": float(np.nanmax(diff)) if np.isfinite(diff).any() else None,
                        "agrees": bool(np.nanmax(diff) <= 1e-4) if np.isfinite(diff).any() else None}
        if not metric_check["agrees"]:
            log(f"warning: the reference networks' recomputed {scorer.metric} differs from the stored one by up to "
                f"{metric_check['max_abs_difference']:.3g}: is the task rebuilt from other data (data_dir)?")
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(m, min(m, self_subset), replace=False))
    run(REFERENCE, R[torch.as_tensor(subset)], exclude=subset,
        description=f"reference networks ({len(subset)} of {m}, seeded) against the other references")
    grid: dict[float, float] = {}
    for s in sigmas:
        r = run(f"noise sigma={s:g}", noise_baseline(R, n, s, seed), description="reference + Gaussian noise, "
                f"sigma {s:g} x each tensor's RMS", sigma=float(s))
        grid[float(s)] = float(np.nanmedian(r["weight_novelty"]))
    target = methods[GENERATOR]["weight_novelty"].get("median")
    calibration = None
    if target is not None:
        t = time.perf_counter()
        calibration = calibrate_noise(R, n, target, scorer.novelty_median, seed=seed, known=grid)
        seconds["noise calibration"] = round(time.perf_counter() - t, 3)
        run("noise sigma=matched", noise_baseline(R, n, calibration["sigma"], seed),
            description=f"reference + Gaussian noise at the sigma ({calibration['sigma']:.4g}) whose median weight "
            f"novelty matches the generator's", sigma=calibration["sigma"])
    for k in average_ks:
        if k <= m:
            for aligned in (True, False):
                run(f"average k={k}" + (" aligned" if aligned else ""), average_baseline(R, n, k, aligned, seed),
                    description=f"mean of {k} random reference networks" + (", aligned to the first" if aligned else
                                                                            ", not aligned"), k=int(k), aligned=aligned)
    for aligned in (False, True):
        run("gaussian" + (" aligned" if aligned else ""), gaussian_baseline(R, n, aligned, seed),
            description="per-parameter Gaussian fitted to the references" + (" after aligning them to one" if aligned
                                                                               else ""), aligned=aligned)

    conditional = {}
    for col, values in gen["columns"].items():
        metric = col[len("requested_"):]
        if scorer.inr and col.startswith("requested_") and values.dtype.kind in "fiu" and metric in task.fields:
            field = np.asarray(task.fields[metric])  # e.g. the label: that of the nearest test signal
            achieved = np.where(g["signal"] >= 0, field[np.maximum(g["signal"], 0)].astype(np.float64), np.nan)
            conditional[metric] = conditional_agreement(values, achieved) | {"requested": values, "achieved": achieved}
        elif col.startswith("requested_") and values.dtype.kind in "fiu" and metric in metric_names(task):
            achieved = (g["metric"] if metric == scorer.metric
                        else evaluate_networks(G.spec, G, task, activation)[metric])
            conditional[metric] = conditional_agreement(values, achieved) | {"requested": values, "achieved": achieved}

    report = {
        "generated": str(generated_path), "reference": str(reference_path), "is_generated_zoo": gen["is_generated"],
        "provenance": provenance, "task": task.name, "metric": scorer.metric,
        "higher_is_better": not scorer.metric.endswith("loss"), "activation": activation,
        "n_generated": n, "n_reference": m,
        "reference_selection": {"runs": ref["how"], "select": ref["select"], "checkpoint_epoch": ref["epoch"],
                                "max_reference": max_reference},
        "weight_novelty_method": {
            "distance": "L2 over all parameters to the nearest reference network",
            "alignment": "hidden-neuron permutations by weight matching (wsl.weights.align), the reference network "
                         "as the reference; scalings (ReLU) and sign flips (tanh) not factored out",
            "candidates": candidates,
            "anchors": anchors,
            "pruning": f"Only candidates are aligned: the {candidates} references nearest in common frames (hidden "
                       f"neurons sorted by incoming-weight norm; aligned to each of {anchors} anchor references) and "
                       f"the {max(1, candidates // 4)} nearest in permutation-invariant features (Gram matrices, "
                       "singular values, sorted biases); each is aligned from the frame it was nearest in",
            "reference_self_subset": int(len(subset))},
        "behavioural_novelty_method": behaviour_method(task),
        "reference_metric_check": metric_check,
        "methods": methods,
        "noise_calibration": calibration,
        "conditional": {k: {a: b for a, b in v.items() if a not in ("requested", "achieved")}
                        for k, v in conditional.items()} or None,
        "generator_networks": {"metric": g["metric"], "weight_novelty": g["weight_novelty"],
                               "nearest_reference_model": np.where(g["nearest"] >= 0,
                                                                   ref["indices"][np.maximum(g["nearest"], 0)], -1),
                               "behavioural_novelty": g["behavioural_novelty"]},
        "seconds": seconds,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "markdown": out_dir / "report.md",
             "plot": out_dir / "accuracy_vs_novelty.png"}
    plot_accuracy_vs_novelty(per_network, scorer.metric, files["plot"],
                             "max PSNR to a reference's rendering (dB)" if scorer.inr
                             else "max IoU of wrong sets" if scorer.classification else None)
    if conditional:
        files["conditional_plot"] = plot_conditional(conditional, out_dir / "conditional.png")
    report["files"] = {k: str(v) for k, v in files.items()}
    report["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    files["markdown"].write_text(markdown_report(report))
    files["json"].write_text(json.dumps(_plain(report), indent=1, sort_keys=False))
    return _plain(report)


def _plain(x: Any) -> Any:
    """JSON-ready: numpy to Python, non-finite floats to None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def markdown_table(report: dict[str, Any]) -> str:
    """method | n | metric mean / median | weight novelty median | behavioural novelty median."""
    metric = report["metric"]
    lines = [f"| method | n | {metric} mean | {metric} median | weight novelty median | behavioural novelty median |",
             "|---|---|---|---|---|---|"]
    for name, s in report["methods"].items():
        lines.append(f"| {name} | {s['n']} | {_fmt(s['quality'], 'mean')} | {_fmt(s['quality'], 'median')} | "
                     f"{_fmt(s['weight_novelty'], 'median')} | {_fmt(s['behavioural_novelty'], 'median')} |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    wn = report["weight_novelty_method"]
    out = [f"# Memorization report: {report['generated']}", "",
           f"Reference: {report['reference']} — {report['n_reference']} networks "
           f"({report['reference_selection']['runs']}, epoch {report['reference_selection']['checkpoint_epoch']}); "
           f"task {report['task']}, activation {report['activation']}.", "",
           markdown_table(report), "",
           f"Weight novelty: {wn['distance']}, after {wn['alignment']}. {wn['pruning']}.",
           f"Behavioural novelty: {report['behavioural_novelty_method'] or 'not defined for regression tasks'}."]
    check = report.get("reference_metric_check")
    if check and check["agrees"] is False:
        out.append(f"**Warning**: the reference networks' recomputed {report['metric']} differs from the stored one by "
                   f"up to {check['max_abs_difference']:.3g}: the task was not rebuilt as it was trained on.")
    cal = report.get("noise_calibration")
    if cal:
        out.append(f"Noise matched to the generator's median weight novelty ({cal['target']:.4g}): sigma "
                   f"{cal['sigma']:.4g} (median {cal['median_weight_novelty']:.4g}"
                   + ("" if cal["converged"] else f", not converged: {cal.get('note', 'iteration limit')}") + ").")
    if report.get("conditional"):
        out += ["", "## Conditional generation: requested vs achieved", "",
                "| condition | n | Pearson | Spearman | mean abs. error | exactly met |", "|---|---|---|---|---|---|"]
        for metric, c in report["conditional"].items():
            out.append(f"| {metric} | {c['n']} | {_fmt(c, 'pearson')} | {_fmt(c, 'spearman')} | {_fmt(c, 'mae')} | "
                       f"{_fmt(c, 'exact')} |")
    return "\n".join(out) + "\n"


def plot_accuracy_vs_novelty(per_network: dict[str, dict[str, np.ndarray]], metric: str, out: Path,
                             behavioural: str | None = "max IoU of wrong sets") -> Path:
    """Per network (small points) and per method (its medians, large markers), the metric against
    weight novelty and behavioural novelty (``behavioural``: its axis label; None: no such panel):
    the generator beside every baseline and the references' own nearest-neighbour distances.
    Weight novelty on a symmetric-log axis: copies sit at 0 and memorization shows at small
    distances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("weight_novelty", "weight novelty (aligned L2 to nearest reference)")]
    if behavioural:
        panels.append(("behavioural_novelty", f"behavioural novelty ({behavioural})"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    colors = {name: "black" if name == GENERATOR else "gray" if name == REFERENCE else plt.cm.tab20(k % 20)
              for k, name in enumerate(per_network)}
    for ax, (key, label) in zip(axes[0], panels):
        for name, s in per_network.items():
            main = name in (GENERATOR, REFERENCE)
            ax.scatter(s[key], s["metric"], s=10 if main else 5, alpha=0.6 if main else 0.3, color=colors[name],
                       marker="*" if name == GENERATOR else "o", zorder=3 if main else 1, linewidths=0)
            x, y = s[key][np.isfinite(s[key])], s["metric"][np.isfinite(s["metric"])]
            if len(x) and len(y):
                ax.scatter([np.median(x)], [np.median(y)], s=160 if name == GENERATOR else 70, color=colors[name],
                           marker="*" if name == GENERATOR else "o", edgecolors="black", zorder=4, label=name)
        if key == "weight_novelty":
            ref = per_network.get(REFERENCE, {}).get(key)
            scale = np.nanmedian(ref) if ref is not None and np.isfinite(ref).any() else 1.0
            ax.set_xscale("symlog", linthresh=max(1e-6, 0.01 * scale))
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, loc="best", title="medians", title_fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_conditional(conditional: dict[str, dict[str, Any]], out: Path) -> Path:
    """Requested against achieved value, one panel per conditioned metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(conditional), figsize=(5 * len(conditional), 4.6), squeeze=False)
    for ax, (metric, c) in zip(axes[0], conditional.items()):
        r, a = np.asarray(c["requested"], float), np.asarray(c["achieved"], float)
        keep = np.isfinite(r) & np.isfinite(a)
        if keep.any():
            lo, hi = float(min(r[keep].min(), a[keep].min())), float(max(r[keep].max(), a[keep].max()))
            ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
        ax.scatter(r[keep], a[keep], s=8, alpha=0.6)
        ax.set_xlabel(f"requested {metric}")
        ax.set_ylabel(f"achieved {metric}")
        exact = c.get("exact")
        ax.set_title(f"Pearson {c['pearson']:.3f}, Spearman {c['spearman']:.3f}, MAE {c['mae']:.3g}"
                     + (f", exactly met {exact:.3f}" if exact is not None and np.isfinite(exact) else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
