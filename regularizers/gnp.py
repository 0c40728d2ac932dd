"""Gradient-norm penalty (GNP), computed with one extra pass by a finite difference.

Zhao, Zhang and Hu, "Penalizing Gradient Norm for Efficiently Improving Generalization in Deep
Learning", ICML 2022: the gradient of L(w) + λ·‖∇L(w)‖₂, with the Hessian-vector product
replaced by a finite difference of step r along g/‖g‖, is

    g = (1 − α)·∇L(w) + α·∇L(w + r·∇L(w)/‖∇L(w)‖₂),      α = λ/r.

α = 1 is SAM (Foret et al. 2021) with ρ = r, and this implementation reproduces
:class:`regularizers.sam.SAM` bit for bit there (same ascent, same ops); α = 0 is ERM and then the
perturbed pass is skipped. The paper's best settings have α ∈ (0, 1], so the search covers
[0.1, 1] while any α ≥ 0 is valid (α > 1 extrapolates, as the paper's λ > r would).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients, rescale_
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Float, hparam


@register("gnp")
@dataclass
class GNP(Regularizer):
    """Zhao et al. 2022: (1−α)∇L(w) + α∇L(w + r·g/‖g‖). Cost: 2 passes (1 when α = 0).

    >>> import regularizers
    >>> regularizers.create("gnp", perturbed_gradient_weight=0.0).cost(has_batchnorm=False)
    PassCost(forward=1, backward=1)
    """

    perturbation_radius: float = hparam(0.1, Float(0.01, 0.5, log=True), "r: finite-difference step along g/‖g‖", minimum=0.0)
    perturbed_gradient_weight: float = hparam(
        0.8, Float(0.1, 1.0), "α = λ/r: weight of the perturbed gradient (1 − α on the clean one; α = 1 is SAM)",
        minimum=0.0,
    )

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        norm = global_norm(grads)
        if self.perturbed_gradient_weight == 0.0:
            return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})
        # Exactly SAM's ascent (on a copy: the clean gradient is mixed in below), so that α = 1
        # reproduces SAM bit for bit.
        ascent = [g.clone() for g in grads]
        rescale_(ascent, self.perturbation_radius, norm)
        ascend_and_regrad(closure, ascent)
        del ascent
        if self.perturbed_gradient_weight != 1.0:
            with torch.no_grad():
                perturbed = gradients(closure.parameters)
                # lerp(a, b, α) = a + α(b − a): exact at α = 0 and α = 1.
                torch._foreach_lerp_(grads, perturbed, self.perturbed_gradient_weight)
                for p, g in zip(closure.parameters, grads):
                    p.grad = g
        return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        passes = 1 if self.perturbed_gradient_weight == 0.0 else 2
        return PassCost(forward=passes, backward=passes)
