"""Empirical risk minimization: the plain gradient, one forward/backward pass."""

from __future__ import annotations

from dataclasses import dataclass

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport
from regularizers.registry import register


@register("erm")
@dataclass
class ERM(Regularizer):
    """∇L(w) on the batch; the baseline every other method is compared with."""

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)
