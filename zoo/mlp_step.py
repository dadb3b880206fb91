"""An MLP population's forward pass and hand-written backward pass, as pure tensor functions.

M networks of linear layers with an elementwise activation, stacked along a leading model axis.
Autograd would keep more activations and launch more kernels; at zoo sizes (64 -> 32 -> 32 -> 10
digits MLPs, 2 -> 32 -> 32 -> 1 SIRENs) the elementwise passes, not the matmuls, bound a training
step. On the CPU, large populations run these functions through ``torch.compile``
(``zoo.fused``), which fuses those passes and the dropout draws into a few loops around the
matmuls; the eager functions give the same numbers to float32 rounding.

Two trainers use it: the INR fitter's full-batch squared error (``loss_and_grads``, zoo.inr) and
the zoo trainer's minibatch cross-entropy or squared error with per-model dropout
(``cross_entropy_and_grads`` / ``squared_error_and_grads``, zoo.train).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from .functional import dropout_mask
from .fused import FusedStep
from .weight_space import WeightSpaceSpec
from .errors import InputError


def _owned(*tensors: Tensor) -> bool:
    """Whether tensors the step made itself may be overwritten: nothing records them for autograd
    (the trainers never do; a test's autograd reference does). In an eager step every fresh
    activation-sized tensor costs a pass through memory that an in-place update saves."""
    return not any(t.requires_grad for t in tensors)


def _sine(u: Tensor, grad: bool) -> tuple[Tensor, Tensor | None]:
    da = torch.cos(u) if grad else None
    return (u.sin_() if _owned(u) else torch.sin(u)), da


def _relu(u: Tensor, grad: bool) -> tuple[Tensor, Tensor | None]:
    da = torch.gt(u, 0, out=torch.empty_like(u)) if grad else None  # 1.0 where u > 0, in one pass
    return (u.relu_() if _owned(u) else torch.relu(u)), da


def _tanh(u: Tensor, grad: bool) -> tuple[Tensor, Tensor | None]:
    a = u.tanh_() if _owned(u) else torch.tanh(u)
    if not grad:
        return a, None
    da = a * a
    return a, (da.neg_().add_(1) if _owned(da) else 1 - da)  # 1 - a^2 (-x + 1 rounds as 1 - x)


def _identity(u: Tensor, grad: bool) -> tuple[Tensor, None]:
    return u, None


def _times(t: Tensor, m: Tensor) -> Tensor:
    """``t * m``, in place when ``t`` may be overwritten."""
    return t.mul_(m) if _owned(t, m) else t * m


#: Activations with a hand-written derivative (``f(u, grad) -> (f(u), f'(u) or None)``, which may
#: overwrite ``u``); other activations train through autograd.
ACTIVATIONS = {"sine": _sine, "relu": _relu, "tanh": _tanh, "identity": _identity}


class Dropout(NamedTuple):
    """A step's dropout: per model keep probability [M] and int32 key [M], the int32 step key [],
    and optionally each hidden layer's ``zoo.functional.position_hashes`` (precomputed once per
    run, they halve an eager step's hashing; a compiled step hashes inline just as fast)."""
    keep: Tensor
    keys: Tensor
    step: Tensor
    positions: list[Tensor] | None = None


class MLPPopulation:
    """Forward and hand-written backward of M linear-layer networks on inputs ``x``: shared
    ``[P, d]`` or per model ``[M, B, d]``.

    Each activation returns its output and its derivative together (``u -> (f(u), f'(u))``), so
    the backward pass only multiplies: for SIREN, sin and cos come out of one fused pass.
    SIREN's ``sin(omega_0 * z)`` is computed as ``sin(u)`` with ``u = (omega_0 W) h + omega_0 b``:
    scaling the small weight matrices instead of the large activations saves two passes over
    every hidden activation per step; the gradients of W and b are scaled back by ``omega_0``.
    """

    def __init__(self, n_layers: int, activation: str, omega: float = 1.0):
        if activation not in ACTIVATIONS:
            raise InputError(f"the hand-written MLP step supports the activations {sorted(ACTIVATIONS)}; "
                             f"found {activation!r}")
        self.f = ACTIVATIONS[activation]
        self.scales = [omega if i < n_layers - 1 else 1.0 for i in range(n_layers)]  # the last layer is linear

    def forward(self, params: list[Tensor], x: Tensor, dropout: Dropout | None = None, grad: bool = True,
                ) -> tuple[Tensor, list[tuple[Tensor | None, Tensor]]]:
        """Outputs [M, P, out] and what the backward pass needs per hidden layer: the activation's
        derivative at the pre-activation (None for the identity, and with ``grad=False``) and its
        output, both times the dropout multipliers (``zoo.functional.dropout_mask``) when
        ``dropout`` is given. A scale of 1 (every activation but SIREN's) multiplies nothing:
        in an eager step each multiplication is one more pass over the weights."""
        saved, h = [], x
        if dropout is not None and not isinstance(dropout, Dropout):
            dropout = Dropout(*dropout)  # (keep, keys, step[, positions])
        for i, s in enumerate(self.scales):
            wt = _scaled(params[2 * i], s).transpose(1, 2)  # [M, in, out]
            b = _scaled(params[2 * i + 1], s).unsqueeze(1)  # [M, 1, out]
            if h.dim() == 2:  # the shared input: [P, d] @ [M, d, out] -> [M, P, out]
                u = torch.matmul(h, wt) + b
            elif wt.shape[2] == 1:  # one output: a reduction the compiled step fuses with f(u) above
                u = (h * wt.transpose(1, 2)).sum(2, keepdim=True) + b
            else:
                u = torch.baddbmm(b, h, wt)
            if i == len(self.scales) - 1:
                return u, saved
            a, da = self.f(u, grad)
            if dropout is not None:
                m = dropout_mask(tuple(a.shape), 0, dropout.keep, dropout.keys, dropout.step, layer=i,
                                 dtype=a.dtype, positions=None if dropout.positions is None else dropout.positions[i])
                a = _times(a, m)
                da = m if da is None else _times(da, m)
            saved.append((da, a))
            h = a

    def backward(self, params: list[Tensor], x: Tensor, saved: list[tuple[Tensor | None, Tensor]],
                 grad_out: Tensor) -> list[Tensor]:
        """Gradients of every parameter given d loss / d output [M, P, out]."""
        grads: list[Tensor] = [None] * (2 * len(self.scales))  # type: ignore[list-item]
        g = grad_out  # d loss / d u of layer i
        for i, s in reversed(list(enumerate(self.scales))):
            inp = x if i == 0 else saved[i - 1][1]
            if inp.dim() == 2:  # sum_p g[m, p, o] x[p, k]
                gw = torch.matmul(inp.t(), g).transpose(1, 2)
            else:
                gw = torch.bmm(g.transpose(1, 2), inp)
            grads[2 * i] = _scaled(gw, s)
            grads[2 * i + 1] = _scaled(g.sum(1), s)
            if i > 0:
                da = saved[i - 1][0]
                w = _scaled(params[2 * i], s)
                g = g * w if g.shape[2] == 1 else torch.bmm(g, w)  # one output: an outer product
                if da is not None:
                    g = _times(g, da)
        return grads

    def loss_and_grads(self, params: list[Tensor], x: Tensor, targets: Tensor,
                       grad_scale: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-model mean squared error [M] and the gradients of ``grad_scale[m] * sum of squares``
        (``grad_scale`` = 1 / elements for the MSE's own gradient, 0 to freeze a model)."""
        out, saved = self.forward(params, x)
        err = out - targets
        mse = err.square().mean((1, 2))
        return mse, self.backward(params, x, saved, err * (2 * grad_scale).view(-1, 1, 1))

    def mse(self, params: list[Tensor], x: Tensor, targets: Tensor) -> Tensor:
        return (self.forward(params, x, grad=False)[0] - targets).square().mean((1, 2))

    def cross_entropy_and_grads(self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor,
                                dropout: Dropout | None) -> tuple[Tensor, list[Tensor]]:
        """A minibatch step of classifiers: ``x`` [M, B, d], labels ``y`` [M, B]; returns the
        weighted loss ``sum_b weight[m, b] * CE[m, b]`` [M] and its gradients. ``weight`` is
        1 / (model m's batch size) on its valid examples and 0 elsewhere (padding, frozen models)."""
        out, saved = self.forward(params, x, dropout)
        lse = out.logsumexp(-1, keepdim=True)
        loss = ((lse - out.gather(-1, y.unsqueeze(-1))).squeeze(-1) * weight).sum(1)
        onehot = torch.arange(out.shape[-1], device=y.device) == y.unsqueeze(-1)
        grad_out = ((out - lse).exp() - onehot.to(out.dtype)) * weight.unsqueeze(-1)
        return loss, self.backward(params, x, saved, grad_out)

    def squared_error_and_grads(self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor,
                                dropout: Dropout | None) -> tuple[Tensor, list[Tensor]]:
        """As ``cross_entropy_and_grads`` for regression: targets ``y`` [M, B, out], the loss of
        an example is its squared error averaged over the outputs."""
        out, saved = self.forward(params, x, dropout)
        err = out - y
        loss = (err.square().mean(-1) * weight).sum(1)
        return loss, self.backward(params, x, saved, err * (2.0 / out.shape[-1]) * weight.unsqueeze(-1))

    def cross_entropy_sums(self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor,
                           ) -> tuple[Tensor, Tensor]:
        """Evaluation on shared inputs ``x`` [N, d] with labels ``y`` [M, N]: per model, the sums
        over examples of ``weight`` [M, N] times the cross-entropy and times correctness."""
        out, _ = self.forward(params, x, grad=False)
        lse = out.logsumexp(-1, keepdim=True)
        loss = (lse - out.gather(-1, y.unsqueeze(-1))).squeeze(-1)
        return (loss * weight).sum(1), ((out.argmax(-1) == y).to(out.dtype) * weight).sum(1)

    def squared_error_sums(self, params: list[Tensor], x: Tensor, y: Tensor, weight: Tensor,
                           ) -> tuple[Tensor, None]:
        """As ``cross_entropy_sums`` for regression targets ``y`` [M, N, out] (no accuracy: None)."""
        out, _ = self.forward(params, x, grad=False)
        return ((out - y).square().mean(-1) * weight).sum(1), None


def _scaled(t: Tensor, s: float) -> Tensor:
    return t if s == 1.0 else t * s


def hand_written_activation(spec: WeightSpaceSpec, activation: str | None = None) -> str | None:
    """The activation name if ``spec`` is an MLP with biases whose activation has a hand-written
    derivative (``ACTIVATIONS``), else None (such networks train through autograd)."""
    name = activation or spec.activation
    if any(layer.kind != "linear" for layer in spec.layers) or not all(layer.bias for layer in spec.layers):
        return None
    return name if name in ACTIVATIONS else None


@functools.cache
def population_step(n_layers: int, activation: str, omega: float, loss: str = "inr",
                    ) -> tuple[MLPPopulation, FusedStep]:
    """The network and one fused function of it (``loss``: "inr" for ``loss_and_grads``,
    "cross_entropy" / "squared_error" for a training step, "cross_entropy_sums" /
    "squared_error_sums" for evaluation), one per architecture and process, so that the compiled
    function is reused by every chunk of a zoo."""
    net = MLPPopulation(n_layers, activation, omega)
    fn = {"inr": net.loss_and_grads, "cross_entropy": net.cross_entropy_and_grads,
          "squared_error": net.squared_error_and_grads, "cross_entropy_sums": net.cross_entropy_sums,
          "squared_error_sums": net.squared_error_sums}[loss]
    what = ("INR fitting step" if loss == "inr" else "evaluation" if loss.endswith("_sums")
            else f"{loss.replace('_', '-')} training step")
    return net, FusedStep(fn, f"the {what} ({n_layers} layers, {activation})")


def mlp_population_step(spec: WeightSpaceSpec, activation: str | None = None, loss: str = "inr",
                        ) -> tuple[MLPPopulation, FusedStep]:
    """``population_step`` for an MLP weight space with biases and a hand-written activation."""
    name = hand_written_activation(spec, activation)
    if name is None:
        raise InputError(f"the hand-written MLP step needs an MLP weight space with biases and one of the "
                         f"activations {sorted(ACTIVATIONS)}; found layers {[(l.name, l.kind) for l in spec.layers]} "
                         f"and activation {activation or spec.activation!r}")
    omega = float(spec.options.get("omega_0", 1.0)) if name == "sine" else 1.0
    return population_step(len(spec.layers), name, omega, loss)
