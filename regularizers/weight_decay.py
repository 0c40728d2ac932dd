"""L2 regularization added to the gradient (coupled weight decay).

Adds ∇(λ/2·‖w‖²) = λ·w to the data gradient, so the penalty passes through the optimizer's
momentum exactly as ``torch.optim.SGD(weight_decay=λ)`` would apply it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, gradients
from regularizers.registry import register
from regularizers.space import Float, hparam


@register("weight_decay")
@dataclass
class WeightDecay(Regularizer):
    """g = ∇L(w) + λ·w (L2 penalty λ/2·‖w‖² in the gradient)."""

    penalty_weight: float = hparam(5e-4, Float(1e-5, 1e-2, log=True), "L2 coefficient λ", minimum=0.0)

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        with torch.no_grad():
            for p, g in zip(closure.parameters, gradients(closure.parameters), strict=True):
                p.grad = g.add(p, alpha=self.penalty_weight)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)
