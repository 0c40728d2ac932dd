"""Adversarial model perturbation (AMP).

Zheng, Zhang and Mao, "Regularizing Neural Networks via Adversarial Model Perturbation",
CVPR 2021, Algorithm 1: starting from δ₀ = 0, N inner steps

    δ ← Π_ε(δ + ζ·∇L(w + δ))

ascend the loss inside a ball of radius ε, then the gradient ∇L(w + δ_N) is applied at w. Π_ε is
the L2 projection onto the ball. As in the authors' official implementation it acts on each
parameter tensor separately (every tensor's δ has norm ≤ ε); ``projection="global"`` projects the
whole perturbation instead (‖δ‖₂ ≤ ε over all tensors).

Cost: N + 1 forward/backward passes. The first inner gradient, at δ = 0, is the clean pass (the
one that updates BatchNorm statistics and gives the logged loss). N = 0 or ε = 0 is ERM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import NORM_EPSILON, BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients
from regularizers.registry import register
from regularizers.sam import ascend_and_regrad
from regularizers.space import Choice, Float, Int, hparam

#: Metric: global L2 norm of the final perturbation δ_N.
PERTURBATION_NORM = "perturbation_norm"

PER_TENSOR = "per_tensor"
GLOBAL = "global"


# Guards the division in the projection, as the official code does.
@torch.no_grad()
def ascent_step(
    delta: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    ascent_step_size: float,
    perturbation_radius: float,
    projection: str = PER_TENSOR,
) -> None:
    """One AMP inner step, in place: δ ← Π_ε(δ + ζ·g) (Zheng et al. 2021, Algorithm 1).

    ``projection="per_tensor"`` scales each tensor's δ back to norm ε when it lies outside the ball;
    ``"global"`` does so for the concatenation of all tensors. Scaling by min(1, ε/‖δ‖) keeps the
    step free of host-device synchronisation.

    >>> import torch
    >>> delta = [torch.zeros(2)]
    >>> ascent_step(delta, [torch.tensor([3.0, 4.0])], ascent_step_size=1.0, perturbation_radius=1.0)
    >>> delta[0]
    tensor([0.6000, 0.8000])
    """
    if projection not in (PER_TENSOR, GLOBAL):
        raise ValueError(f"projection must be {PER_TENSOR!r} or {GLOBAL!r}, got {projection!r}")
    torch._foreach_add_(delta, grads, alpha=ascent_step_size)
    if projection == PER_TENSOR:
        norms = torch._foreach_norm(delta)
        torch._foreach_add_(norms, NORM_EPSILON)
        torch._foreach_reciprocal_(norms)
        torch._foreach_mul_(norms, perturbation_radius)
        torch._foreach_clamp_max_(norms, 1.0)
        torch._foreach_mul_(delta, norms)
    else:
        scale = torch.clamp(perturbation_radius / (global_norm(delta) + NORM_EPSILON), max=1.0)
        torch._foreach_mul_(delta, scale)


@register("amp")
@dataclass
class AMP(Regularizer):
    """Zheng et al. 2021, Alg. 1: N projected ascent steps δ ← Π_ε(δ + ζ∇L(w+δ)), then ∇L(w+δ_N) at w.

    >>> import regularizers
    >>> regularizers.create("amp", inner_steps=2).cost(has_batchnorm=True)
    PassCost(forward=3, backward=3)
    """

    perturbation_radius: float = hparam(
        0.5, Float(0.05, 1.0, log=True), "ε: L2 radius of the perturbation ball", minimum=0.0
    )
    ascent_step_size: float = hparam(1.0, Float(0.1, 1.0, log=True), "ζ: inner gradient-ascent step size", minimum=0.0)
    inner_steps: int = hparam(1, Int(1, 2), "N: inner ascent steps (N = 0 is ERM)", minimum=0)
    projection: str = hparam(
        PER_TENSOR,
        Choice((PER_TENSOR, GLOBAL)),
        "ball the perturbation is projected on: each tensor's or the global one",
        searched=False,
    )

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)  # the gradient at δ₀ = 0
        parameters = closure.parameters
        if self.inner_steps == 0:
            return self.report(closure, clean.loss, **{PERTURBATION_NORM: clean.loss.new_zeros(())})
        with torch.no_grad():
            delta = [torch.zeros_like(p) for p in parameters]
        for _ in range(self.inner_steps):
            grads = gradients(parameters)  # ∇L(w + δ), δ = 0 on the first step
            ascent_step(
                delta,
                grads,
                ascent_step_size=self.ascent_step_size,
                perturbation_radius=self.perturbation_radius,
                projection=self.projection,
            )
            del grads
            ascend_and_regrad(closure, delta)  # p.grad ← ∇L(w + δ), w restored from a copy
        return self.report(closure, clean.loss, **{PERTURBATION_NORM: global_norm(delta).detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=self.inner_steps + 1, backward=self.inner_steps + 1)
