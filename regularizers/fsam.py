"""Friendly sharpness-aware minimization (F-SAM): perturb along the batch-specific part of the gradient.

Li, Zhou, He, Cheng and Huang, "Friendly Sharpness-Aware Minimization", CVPR 2024 (arXiv
2403.12350). SAM's ascent direction, the batch gradient g_t, mixes the full-data gradient (which
the paper finds harmful to generalization) with the batch's stochastic noise. F-SAM estimates the
full gradient by an exponential moving average m of past batch gradients and perturbs along the rest:

    ε_t = ρ·(g_t − σ·m_{t−1}) / ‖g_t − σ·m_{t−1}‖₂,    m_t = λ·m_{t−1} + (1 − λ)·g_t,

then applies ∇L(w_t + ε_t) at w_t. σ = 0 is SAM (Foret et al. 2021), run with SAM's very ops and
no average kept.

This follows the authors' code (nblt/F-SAM, ``utils.py``, ``FriendlySAM.first_step``), in its
names (σ scales the subtraction, λ is the average's decay) and its order: the direction uses the
average *before* it takes in g_t, and the first step sets m_0 = g_0 without subtracting it (so
step 0 is SAM's). Secondary summaries of the paper subtract the average after the update,
g_t − σ·m_t (not verified against the paper's text); at σ = 1 (the summaries' and the code's setting)
g_t − m_t = λ·(g_t − m_{t−1}), so the normalized ε is the same and the two orders differ only for σ ≠ 1.
Equation and algorithm numbers not verified: the paper text was not available offline, so no equation
of the paper is cited here; the update was checked against the authors' code only.

Defaults: σ = 1 and λ = 0.95 (the code's ``train.py``; its ``run.sh`` example uses λ = 0.6 with ρ = 0.2
on CIFAR-100), ρ = 0.1 (``train.py``). Norm guard 1e-12, as the authors' code and
:class:`regularizers.sam.SAM`. The average m is the method's state (one buffer the size of the
weights), saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients, rescale_
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Float, hparam


@register("fsam")
@dataclass
class FSAM(Regularizer):
    """Li et al. 2024: the gradient at w + ρ·(g − σm)/‖g − σm‖, then m ← λm + (1 − λ)g (m₀ = g₀). Cost: 2 passes.

    >>> import regularizers
    >>> cost = regularizers.create("fsam").cost(has_batchnorm=False)
    >>> cost.forward, cost.backward, cost.per_step
    (2, 2, 4)
    """

    state = ("average",)

    perturbation_radius: float = hparam(
        0.1, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step (authors' train.py: 0.1)", minimum=0.0
    )
    average_decay: float = hparam(
        0.95,
        Float(0.5, 0.99),
        "λ: decay of the gradient average m ← λm + (1 − λ)g (authors' train.py: 0.95; run.sh: 0.6)",
        minimum=0.0,
        maximum=1.0,
    )
    subtraction_weight: float = hparam(
        1.0,
        Float(0.0, 1.0),
        "σ: share of the average removed from the ascent direction, g − σm (authors: 1; 0 is SAM)",
        searched=False,
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.average: list[Tensor] | None = None  # m_{t−1}; None before the first step (and when σ = 0)

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        grad_norm = global_norm(grads)
        sigma = self.subtraction_weight
        with torch.no_grad():
            if sigma == 0.0:
                ascent = grads  # SAM: the clean gradient is scaled in place
                norm = grad_norm
            elif self.average is None:
                ascent, norm = grads, grad_norm
                self.average = [g.detach().clone() for g in grads]
            else:
                ascent = torch._foreach_add(grads, self.average, alpha=-sigma)
                norm = global_norm(ascent)
                # lerp(m, g, 1 − λ) = m + (1 − λ)·(g − m) = λ·m + (1 − λ)·g
                torch._foreach_lerp_(self.average, grads, 1.0 - self.average_decay)
            rescale_(ascent, self.perturbation_radius, norm)
        ascend_and_regrad(closure, ascent)
        return self.report(closure, clean.loss, **{GRAD_NORM: grad_norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
