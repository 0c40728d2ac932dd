"""Sharpness-aware minimization (SAM) and its adaptive variant (ASAM).

SAM, Foret et al., ICLR 2021, eq. 2: ε̂(w) = ρ·g/‖g‖₂ with g = ∇L(w); the update applies
∇L(w)|_{w+ε̂} at w.

ASAM, Kwon et al., ICML 2021, eq. 9 with the element-wise operator T_w = |w| + η:
ε̂ = ρ·T_w²·g / ‖T_w·g‖₂. With η → ∞ relative to |w| it reduces to SAM up to the scale of ρ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import (
    BatchClosure,
    PassCost,
    Regularizer,
    StepReport,
    global_norm,
    gradients,
    perturbed_weights,
    rescale_,
    zero_grads,
)
from regularizers.registry import register
from regularizers.space import Float, hparam

GRAD_NORM = "grad_norm"


def ascend_and_regrad(closure: BatchClosure, ascent: list[torch.Tensor]) -> None:
    """Evaluate the gradient at w + ascent, leave it in ``p.grad``, restore w exactly.

    The shared second half of every "gradient at a perturbed point" method.
    """
    with perturbed_weights(closure.parameters):
        with torch.no_grad():
            torch._foreach_add_(closure.parameters, ascent)
        zero_grads(closure.parameters)
        closure(update_bn=False)


@register("sam")
@dataclass
class SAM(Regularizer):
    """Foret et al. 2021, eq. 2: the gradient at w + ρ·∇L/‖∇L‖₂, applied at w. Cost: 2 passes."""

    perturbation_radius: float = hparam(0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step", minimum=0.0)

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        norm = global_norm(grads)
        # The clean gradient is not needed again: scale it in place into the ascent step.
        rescale_(grads, self.perturbation_radius, norm)
        ascend_and_regrad(closure, grads)
        return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)


@register("asam")
@dataclass
class ASAM(Regularizer):
    """Kwon et al. 2021, eq. 9: ε = ρ·T²g/‖Tg‖₂ with T = |w| + η (element-wise). Cost: 2 passes."""

    perturbation_radius: float = hparam(0.5, Float(0.05, 2.0, log=True), "ρ: radius in the normalized space", minimum=0.0)
    eta: float = hparam(0.01, Float(1e-3, 0.1, log=True), "η: offset in T = |w| + η", searched=False, minimum=0.0)

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        with torch.no_grad():
            operator = [p.detach().abs().add_(self.eta) for p in closure.parameters]
            scaled = torch._foreach_mul(grads, operator)  # T·g
            norm = global_norm(scaled)
            ascent = torch._foreach_mul(scaled, operator)  # T²·g
            rescale_(ascent, self.perturbation_radius, norm)
        del operator, scaled
        ascend_and_regrad(closure, ascent)
        return self.report(closure, clean.loss, **{GRAD_NORM: global_norm(grads).detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
