"""Gradient norm aware minimization (GAM), the accelerated first-order form the authors release.

Zhang, Xu, Yu, Zou and Cui, "Gradient Norm Aware Minimization Seeks First-Order Flatness and Improves
Generalization", CVPR 2023 (arXiv 2303.03108), Appendix D, Algorithm 2 ("Accelerated GAM"). GAM
penalizes the first-order flatness R⁽¹⁾_ρ = ρ·max_{‖δ‖≤ρ} ‖∇L(θ + δ)‖; Algorithm 2 replaces its
Hessian-vector products by finite differences of step ρ' along normalized gradients (ξ = 1e-12):

    g₀ = ∇L(θ)                       θ̃₁ = θ + ρ'·g₀/(‖g₀‖ + ξ)      g₁ = ∇L(θ̃₁)   (SAM's gradient)
    h₀ = g₁ − g₀                     θ̃₂ = θ + ρ·h₀/(‖h₀‖ + ξ)       g₂ = ∇L(θ̃₂)   (ascent of ‖∇L‖)
                                     θ̃₃ = θ̃₂ + ρ'·g₂/(‖g₂‖ + ξ)     g₃ = ∇L(θ̃₃)
    h₊ = α·g₁ + (1 − α)·g₃,   h₋ = β·g₀ + (1 − β)·g₂,   h₋ = h₋^∥ + h₋^⊥ (parallel/orthogonal to h₊)
    apply h₊ − γ·h₋^⊥

Algorithm 2 was read in the authors' copy of it (xxgege/GAM, ``images/gam_algorithm.png``, shown in
the README, which places it in Appendix D); the lines above are its lines 5-16.

Cost: 4 forward and 4 backward passes per step, every step, as the official code runs them
(xxgege/GAM, ``gam/gam.py``: four ``get_grad()`` calls in ``GAM.step``); only the first, clean, pass
updates BatchNorm statistics (the code disables them for the other three) and gives the logged loss.

Official code vs Algorithm 2: the default (``descent_reference="code"``) follows the official code,
whose defaults were tuned with it; ``descent_reference="paper"`` is Algorithm 2's line 14,
h₋ = β·g₀ + (1 − β)·g₂. The official ``gam.py`` builds h₋ = g₀ + |1 − β|·g₂: ``main_cifar.py`` sets
grad_beta_2 = 1 − grad_beta_0 and grad_beta_3 = 1 − grad_beta_1, and ``GAM.gradient_decompose`` uses
``pro_m = g_0 + abs(grad_beta_2)·g_2`` and ``grad_beta_1·g_1 + grad_beta_3·g_3``: grad_beta_0 = β itself
never multiplies g₀. h₊ is the same in both; h₋^⊥ differs unless β = 1 (with the CIFAR-100 ResNet
default β = 0.5: g₀ + 0.5·g₂ in the code, 0.5·(g₀ + g₂) in the paper). Its radii schedulers are constant
(``ProportionScheduler`` with max = min). Defaults here are the official
script's defaults (CIFAR-100, ResNet: ρ = 0.2, ρ' = 0.02, β = 0.5, α = 0.6, γ = 0.03; its CIFAR-10
ResNet row is 0.2, 0.03, 0.1, 0.1, 0.05). The code's decomposition adds 1e-12 to two norms; here the
projection divides exactly (a relative difference below 1e-11 for ‖h₊‖ ≥ 0.1). ``adaptive=True`` of
the code (off by default) is not implemented. α = 1 with γ = 0 applies g₁: SAM with ρ = ρ' bit for bit
(same ops), at four passes.
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
from regularizers.gsam import orthogonal_part
from regularizers.registry import register
from regularizers.sam import GRAD_NORM
from regularizers.space import Choice, Float, hparam

#: ``GAM.descent_reference``: how h₋ combines g₀ and g₂ (module docstring).
CODE = "code"
PAPER = "paper"


def _normalized(tensors: list[torch.Tensor], radius: float) -> list[torch.Tensor]:
    """radius·t/(‖t‖ + 1e-12), as new tensors (SAM's ascent on a copy)."""
    scaled = [t.clone() for t in tensors]
    rescale_(scaled, radius, global_norm(tensors))
    return scaled


def _gradient_after_shift(closure: BatchClosure, shift: list[torch.Tensor]) -> list[torch.Tensor]:
    """Add ``shift`` to the weights (on top of any earlier shift), return the gradient there; the
    caller restores the weights (:func:`perturbed_weights`)."""
    with torch.no_grad():
        torch._foreach_add_(closure.parameters, shift)
    zero_grads(closure.parameters)
    closure(update_bn=False)
    return gradients(closure.parameters)


@register("gam")
@dataclass
class GAM(Regularizer):
    """Zhang et al. 2023, Alg. 2 (accelerated GAM): h₊ − γ·h₋^⊥ from four gradients (module docstring).

    Cost: 4 passes per step.

    >>> import regularizers
    >>> regularizers.create("gam").cost(has_batchnorm=True)
    PassCost(forward=4, backward=4)
    """

    perturbation_radius: float = hparam(
        0.02,
        Float(0.005, 0.1, log=True),
        "ρ': finite-difference step along g₀/‖g₀‖ and g₂/‖g₂‖ (official grad_rho; CIFAR defaults 0.02-0.04)",
        minimum=0.0,
    )
    gradient_norm_radius: float = hparam(
        0.2,
        Float(0.05, 0.5, log=True),
        "ρ: ascent radius of the gradient norm, along h₀ = g₁ − g₀ (official grad_norm_rho: 0.2)",
        minimum=0.0,
    )
    sam_gradient_weight: float = hparam(
        0.6,
        Float(0.0, 1.0),
        "α: h₊ = α·g₁ + (1 − α)·g₃ (official grad_beta_1; CIFAR-100 0.6, CIFAR-10 0.1)",
        minimum=0.0,
        maximum=1.0,
    )
    clean_gradient_weight: float = hparam(
        0.5,
        Float(0.0, 1.0),
        "β: h₋ = β·g₀ + (1 − β)·g₂ (official grad_beta_0; CIFAR-100 0.5, CIFAR-10 0.1)",
        minimum=0.0,
        maximum=1.0,
    )
    orthogonal_weight: float = hparam(
        0.03,
        Float(0.01, 0.1, log=True),
        "γ: weight of −h₋^⊥, the part of h₋ orthogonal to h₊ (official grad_gamma: 0.03-0.05)",
        minimum=0.0,
    )

    descent_reference: str = hparam(
        CODE,
        Choice((CODE, PAPER)),
        "h₋: 'code' = g₀ + |1 − β|·g₂ (xxgege/GAM gam.py, what its defaults were tuned with); "
        "'paper' = β·g₀ + (1 − β)·g₂ (Alg. 2, line 14)",
        searched=False,
    )

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        clean = closure(update_bn=True)
        g0 = gradients(parameters)
        norm = global_norm(g0)
        with perturbed_weights(parameters) as backup:
            g1 = _gradient_after_shift(closure, _normalized(g0, self.perturbation_radius))  # at θ̃₁
            with torch.no_grad():
                torch._foreach_copy_(parameters, backup.saved)
                shift = torch._foreach_sub(g1, g0)  # h₀
                rescale_(shift, self.gradient_norm_radius, global_norm(shift))
            g2 = _gradient_after_shift(closure, shift)  # at θ̃₂ = θ + ρ·h₀/‖h₀‖
            del shift
            g3 = _gradient_after_shift(closure, _normalized(g2, self.perturbation_radius))  # at θ̃₃
        with torch.no_grad():
            update = torch._foreach_lerp(g3, g1, self.sam_gradient_weight)  # h₊ = α·g₁ + (1 − α)·g₃
            beta = self.clean_gradient_weight
            if self.descent_reference == PAPER:
                reference = torch._foreach_lerp(g2, g0, beta)  # h₋ = β·g₀ + (1 − β)·g₂
            else:
                reference = torch._foreach_add(g0, g2, alpha=abs(1.0 - beta))  # h₋ = g₀ + |1 − β|·g₂
            torch._foreach_add_(update, orthogonal_part(reference, update), alpha=-self.orthogonal_weight)
            for p, g in zip(parameters, update, strict=True):
                p.grad = g
        return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=4, backward=4)
