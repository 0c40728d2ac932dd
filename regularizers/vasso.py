"""Variance-suppressed sharpness-aware optimization (VaSSO).

Li and Giannakis, "Enhancing Sharpness-Aware Optimization Through Variance Suppression", NeurIPS
2023 (arXiv 2309.15639): SAM's ascent direction, the noisy batch gradient g_t, is
replaced by an exponential moving average of the batch gradients,

    d_t = (1 − θ)·d_{t−1} + θ·g_t,    ε_t = ρ·d_t / ‖d_t‖₂,

and the update applies ∇L(w_t + ε_t) at w_t. θ = 1 is SAM (Foret et al. 2021); with
``norm_epsilon=1e-12`` it runs SAM's very ops.

Sources: equation and algorithm numbers not verified: the paper text was not available offline, so no
equation of the paper is cited here. The update was checked against the authors' code (BingcongLi/VaSSO,
``solver/vasso.py``, ``VASSO.first_step``), the defaults against its ``configs/defaulf_cfg.py`` (sic)
(``--rho 0.05``, ``--theta 0.9``) and ``train.sh``.

Following the authors' code: the average starts from the
first gradient, d_0 = g_0 (not θ·g_0), so the first step is SAM's whatever θ; the norm guard is
1e-7 (``norm_epsilon``; 1e-12 as :class:`regularizers.sam.SAM`). The average d is the method's
state (one buffer the size of the weights), saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients, rescale_
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Choice, Float, hparam

#: The norm guard of the authors' code (BingcongLi/VaSSO, solver/vasso.py).
VASSO_NORM_EPSILON = 1e-7


@register("vasso")
@dataclass
class VaSSO(Regularizer):
    """Li & Giannakis 2023: the gradient at w + ρ·d/‖d‖, d ← (1 − θ)·d + θ·g (d₀ = g₀). Cost: 2 passes.

    >>> import regularizers
    >>> cost = regularizers.create("vasso").cost(has_batchnorm=False)
    >>> cost.forward, cost.backward, cost.per_step
    (2, 2, 4)
    """

    state = ("direction",)

    perturbation_radius: float = hparam(
        0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step (authors' default 0.05)", minimum=0.0
    )
    averaging_weight: float = hparam(
        0.9,
        Float(0.1, 1.0),
        "θ: weight of the new gradient in d ← (1 − θ)·d + θ·g (authors' default 0.9; 1 is SAM)",
        minimum=0.0,
        maximum=1.0,
    )
    norm_epsilon: float = hparam(
        VASSO_NORM_EPSILON,
        Choice((VASSO_NORM_EPSILON, 1e-12)),
        "guard added to ‖d‖: 1e-7 as the authors' code; 1e-12 as SAM here (θ = 1 is then sam bit for bit)",
        searched=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.direction: list[Tensor] | None = None  # d_{t−1}; None before the first step

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        with torch.no_grad():
            if self.direction is None:
                self.direction = [g.detach().clone() for g in grads]
            else:
                # lerp(d, g, θ) = d + θ·(g − d) = (1 − θ)·d + θ·g, exactly g at θ = 1.
                torch._foreach_lerp_(self.direction, grads, self.averaging_weight)
            norm = global_norm(self.direction)
            grad_norm = global_norm(grads)
            # The clean gradient is not needed again: overwrite it with the ascent step.
            torch._foreach_copy_(grads, self.direction)
            rescale_(grads, self.perturbation_radius, norm, epsilon=self.norm_epsilon)
        ascend_and_regrad(closure, grads)
        return self.report(closure, clean.loss, **{GRAD_NORM: grad_norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
