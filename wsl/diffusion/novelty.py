"""How novel networks are next to a set of reference ("training") networks: weight novelty, the
L2 distance to the nearest reference after aligning hidden-neuron permutations, and behavioural
novelty, how much the examples a network gets wrong overlap those of a reference network.

Weight matching of every pair costs linear assignments per hidden group and pass, so candidates
are pruned first (``ReferenceIndex``): each network is aligned only with the K references nearest
to it in a few common frames (where flat distances bound aligned ones from above) and the K / 4
nearest in permutation-invariant features (which find noisy, permuted copies).
"""
from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from wsl.data.runs import check_same_space
from wsl.diffusion.networks import finite_networks
from wsl.weights import WeightBatch
from wsl.weights.align import align, match_permutations
from wsl.weights.symmetry import permute
from zoo.errors import InputError

DEFAULT_CANDIDATES = 16
DEFAULT_ANCHORS = 3
INDEX_BLOCK = 8192  # references put in the frames at a time


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
    """[n]: each row of ``a`` (float64)'s plain L2 distance to its nearest row of ``b`` (any
    precision), the nearest found by ``_pairwise`` and its distance recomputed in float64 from the
    difference (exact: copies are at 0)."""
    nearest = _pairwise(a.to(b.dtype), b, exclude).argmin(1)
    return (a - b[nearest].to(a.dtype)).norm(dim=1)


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
        # kept in the references' own precision (a zoo's float32: 100,000 digits MLPs in 4 frames are
        # 5.5 GB, not the 22 GB of float64 copies); every distance is computed in float64 from them
        self.reference = reference
        self.max_iter, self.seed = max_iter, seed
        picks = np.random.default_rng(seed).choice(len(reference), min(anchors, len(reference)), replace=False)
        self.anchors = [reference[int(a)].to(torch.float64) for a in picks]
        parts, features = [], []
        for rows in torch.arange(len(reference)).split(INDEX_BLOCK):  # a block at a time: float64 work stays small
            block = reference[rows]
            with one_thread():
                parts.append([f.flatten().to(block.weights[0].dtype) for f in self.put(block)])
            features.append(invariant_features(block, seed).float())
        #: per frame, every reference's flat weights in it (in the references' precision)
        self.flat = [torch.cat(frame) for frame in zip(*parts)]
        self.features = torch.cat(features)

    def __len__(self) -> int:
        return len(self.reference)

    def in_frame(self, frame: int, r: int) -> WeightBatch:
        """Reference ``r`` in frame ``frame``, float64."""
        return WeightBatch.from_flat(self.reference.spec, self.flat[frame][r:r + 1].to(torch.float64))

    def put(self, wb: WeightBatch) -> list[WeightBatch]:
        """``wb`` (float64) in every frame: canonical order, then aligned to each anchor."""
        wb = WeightBatch(self.reference.spec, wb.weights, wb.biases).to(torch.float64)
        return [canonical_order(wb)] + [align(wb, a, max_iter=self.max_iter, seed=self.seed) for a in self.anchors]


_last_index: tuple[tuple, ReferenceIndex] | None = None


def _fingerprint(wb: WeightBatch) -> str:
    """A digest of the networks' weight space and every parameter's bytes."""
    h = hashlib.blake2b(repr((wb.spec.architecture, len(wb))).encode(), digest_size=16)
    for t in wb.params():
        h.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))
    return h.hexdigest()


def reference_index(reference: WeightBatch, anchors: int = DEFAULT_ANCHORS, seed: int = 0,
                    max_iter: int = 50) -> ReferenceIndex:
    """``ReferenceIndex(reference, anchors, seed, max_iter)``, reused when the last one made in this
    process was made of the same networks (by content) with the same settings: scoring several
    generators against one training set builds it once (6 of the 12 minutes of one scoring run
    against 70,000 references). One index is kept: they are as large as their references, in four
    frames."""
    global _last_index
    key = (_fingerprint(reference), anchors, seed, max_iter)
    if _last_index is None or _last_index[0] != key:
        _last_index = None  # let the previous index go before the next is built
        _last_index = (key, ReferenceIndex(reference, anchors, seed, max_iter))
    return _last_index[1]


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
    out["distance_unaligned"][ok] = _nearest_unaligned(_flat64(wb), index.reference.flatten(), excl).numpy()
    with one_thread():
        mine = index.put(wb)
    mine_flat = [_flat64(f) for f in mine]
    d, frame = torch.stack([_pairwise(x.to(r.dtype), r, excl) for x, r in zip(mine_flat, index.flat)]).min(0)  # [n_ok, m]
    by_frames = d.topk(k, dim=1, largest=False).indices
    by_features = _pairwise(invariant_features(wb, index.seed).float(), index.features, excl).topk(
        max(1, k // 4), dim=1, largest=False).indices
    cand = torch.cat([by_frames, by_features], 1)  # [n_ok, k + k // 4], repeats are aligned twice, harmlessly
    cand_frame = frame.gather(1, cand)
    aligned = torch.full(cand.shape, math.inf, dtype=torch.float64)
    pairs = torch.unique(torch.stack([cand.flatten(), cand_frame.flatten()], 1), dim=0)
    with one_thread():
        for r, f in pairs.tolist():  # one weight-matching call per reference and frame
            rows, cols = ((cand == r) & (cand_frame == f)).nonzero(as_tuple=True)
            ref_r, x = index.in_frame(f, r), mine[f][rows]
            moved = permute(x, match_permutations(ref_r, x, max_iter=max_iter, seed=seed))
            aligned[rows, cols] = (_flat64(moved) - _flat64(ref_r)).norm(dim=1)
    best = aligned.min(1)
    first = by_frames[:, 0]  # its frame distance recomputed from the difference (exact: 0 for a copy)
    first_frame = frame.gather(1, first[:, None]).squeeze(1)
    diffs = [mine_flat[f][i] - index.flat[f][r].double() for i, (r, f) in enumerate(zip(first.tolist(), first_frame.tolist()))]
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
