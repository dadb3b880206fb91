"""Weight matching (Ainsworth et al. 2023, "Git Re-Basin"): permute networks' hidden neurons onto a reference.

Networks that compute the same function can sit at different points of weight space, one per
permutation of their hidden neurons. Aligning every network to one reference removes most of this
arbitrariness, so that averaging, interpolating (``wsl.data.augment.AlignedMixUp``) or comparing weights
entry by entry becomes meaningful.

For a network ``W`` and the reference ``R``, weight matching maximises

    sum over layers  < R_l, P_out(l) W_l P_in(l)^T >  +  < r_l, P_out(l) b_l >

over the hidden permutations (convolution kernels: summed over taps). Jointly this is NP-hard; it
is solved by coordinate descent: with all other groups fixed, the best permutation of one group is
a linear assignment problem (``scipy.optimize.linear_sum_assignment``). Groups are visited in a
random order until a full pass changes nothing. Each step can only raise the objective.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from wsl.weights.symmetry import permute
from wsl.weights import WeightBatch
from zoo.errors import InputError


def matching_objective(reference: WeightBatch, wb: WeightBatch) -> Tensor:
    """``[B]``: the inner product of each network's weights and biases with the reference's."""
    ref = reference.flatten().to(wb.weights[0])
    return (wb.flatten() * ref).sum(1)


def _assignment_costs(reference: WeightBatch, wb: WeightBatch, group: str,
                      settled: set[str] | None = None) -> Tensor:
    """``[B, n, n]``: entry ``[b, j, k]`` is the gain of placing network b's neuron ``k`` at the
    reference's position ``j`` of ``group`` (the reference: one for all, or network b's own), with
    every other axis as ``wb`` has it now.
    ``settled``: count only the weights whose other axis is fixed (not permutable, or a group in
    ``settled``); None: all of them."""
    n = wb.spec.groups[group]

    def counted(other: str) -> bool:
        return settled is None or other not in wb.spec.permutable or other in settled

    B, R = len(wb), len(reference)  # R: 1 (one reference) or B (one per network)
    cost = wb.weights[0].new_zeros(B, n, n)
    for i, layer in enumerate(wb.spec.layers):
        w, r = wb.weights[i], reference.weights[i]
        if layer.out_group == group:  # the neuron's incoming weights and bias
            if counted(layer.in_group):
                cost += r.reshape(R, n, -1) @ w.reshape(B, n, -1).transpose(1, 2)
            if layer.bias:
                cost += reference.biases[i][:, :, None] * wb.biases[i][:, None, :]
        if layer.in_group == group and counted(layer.out_group):  # its outgoing weights
            cost += r.transpose(1, 2).reshape(R, n, -1) @ w.transpose(1, 2).reshape(B, n, -1).transpose(1, 2)
    return cost


def _check_reference(reference: WeightBatch, wb: WeightBatch, per_network: bool = False) -> None:
    if len(reference) != 1 and not (per_network and len(reference) == len(wb)):
        raise InputError(f"the reference must be one network{f' or one per network ({len(wb)})' if per_network else ''}, "
                         f"found a batch of {len(reference)}")
    if reference.spec.to_dict() != wb.spec.to_dict():
        raise InputError("the reference and the networks to permute have different weight spaces")


def match_permutations(reference: WeightBatch, wb: WeightBatch, max_iter: int = 50,
                       seed: int = 0, per_network: bool = False) -> dict[str, Tensor]:
    """Per network, the hidden permutations (group -> ``[B, n]``, as ``wsl.weights.symmetry.permute`` takes
    them) that bring ``wb`` closest to the single network ``reference`` by weight matching.

    ``max_iter`` bounds the passes over all groups; ``seed`` fixes the random group order. A network
    stops as soon as one full pass leaves all its permutations unchanged. With ``per_network``,
    ``reference`` holds one network per network of ``wb`` (network b matched onto reference b: the
    pairs of ``wsl.landscape.connectivity``), with the result each one-network call would give.
    """
    _check_reference(reference, wb, per_network=per_network)
    spec, B = wb.spec, len(wb)
    device = wb.weights[0].device
    # float64 on CPU: the assignment is solved by scipy, and exact ties between distinct neurons
    # should come only from the weights, not from rounding
    wb64 = wb.to(device="cpu", dtype=torch.float64)
    ref64 = reference.to(device="cpu", dtype=torch.float64)
    perms = {g: torch.arange(spec.groups[g]).repeat(B, 1) for g in spec.permutable}
    active = np.ones(B, dtype=bool)
    groups = list(spec.permutable)
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        if not active.any():
            break
        changed = np.zeros(B, dtype=bool)
        for k in rng.permutation(len(groups)):
            g = groups[k]
            others = {h: p for h, p in perms.items() if h != g}
            cost = _assignment_costs(ref64, permute(wb64, others), g).numpy()
            for b in np.flatnonzero(active):
                _, cols = linear_sum_assignment(cost[b], maximize=True)
                new = torch.from_numpy(cols)
                if not torch.equal(new, perms[g][b]):
                    perms[g][b] = new
                    changed[b] = True
        active &= changed
    return {g: p.to(device) for g, p in perms.items()}


def align(wb: WeightBatch, reference: WeightBatch, max_iter: int = 50, seed: int = 0,
          per_network: bool = False) -> WeightBatch:
    """``wb`` with each network's hidden neurons permuted to match ``reference`` (one network; with
    ``per_network``, one per network of ``wb``): the same functions."""
    return permute(wb, match_permutations(reference, wb, max_iter=max_iter, seed=seed, per_network=per_network))


def canonical_permutations(reference: WeightBatch, wb: WeightBatch) -> dict[str, Tensor]:
    """Per network, the hidden permutations (as ``match_permutations`` returns them) that put it in
    a canonical order: one pass from the input to the output, each group assigned to the
    reference's neurons by the weights whose other axis is already fixed (the previous groups, the
    inputs, the outputs).

    Unlike weight matching's coordinate descent, whose result depends on the order it starts from,
    this is a function of the network alone: permuting ``wb``'s hidden neurons first gives the same
    canonical network (up to exact ties in an assignment, which continuous weights do not have).
    That is what makes ``f(canon(x))`` permutation invariant and ``canon^-1(f(canon(x)))``
    equivariant for any ``f`` (canonicalization, Kaba et al. 2023).
    """
    _check_reference(reference, wb)
    spec = wb.spec
    device = wb.weights[0].device
    wb64 = wb.to(device="cpu", dtype=torch.float64)
    ref64 = reference.to(device="cpu", dtype=torch.float64)
    order = [layer.out_group for layer in spec.layers if layer.out_group in spec.permutable]
    perms: dict[str, Tensor] = {}
    for g in dict.fromkeys(order):  # groups in the order their first layer computes them
        cost = _assignment_costs(ref64, permute(wb64, perms), g, settled=set(perms)).numpy()
        perms[g] = torch.from_numpy(np.stack([linear_sum_assignment(c, maximize=True)[1] for c in cost]))
    return {g: p.to(device) for g, p in perms.items()}
