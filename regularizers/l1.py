"""L1 regularization added to the gradient: g = ∇L(w) + λ·sign(w).

The subgradient of the penalty λ·‖w‖₁ (Tibshirani, 1996), with sign(0) = 0, added to the data
gradient so that it passes through the optimizer's momentum like coupled weight decay does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, gradients
from regularizers.registry import register
from regularizers.space import Float, hparam


@register("l1")
@dataclass
class L1(Regularizer):
    """g = ∇L(w) + λ·sign(w) on every trainable tensor. Cost: 1 pass.

    >>> import regularizers
    >>> regularizers.create("l1", penalty_weight=1e-4).cost(has_batchnorm=False)
    PassCost(forward=1, backward=1)
    """

    penalty_weight: float = hparam(1e-5, Float(1e-6, 1e-3, log=True), "L1 coefficient λ", minimum=0.0)

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        with torch.no_grad():
            for p, g in zip(closure.parameters, gradients(closure.parameters), strict=True):
                p.grad = g.add(torch.sign(p), alpha=self.penalty_weight)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)
