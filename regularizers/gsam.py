"""Surrogate gap guided sharpness-aware minimization (GSAM).

Zhuang, Gong, Yuan, Cui, Adam, Dvornek, Tatikonda, Duncan and Liu, "Surrogate Gap Minimization Improves
Sharpness-Aware Training", ICLR 2022 (arXiv 2203.08065), Algorithm 1. With g = ∇L(w):

    ρ_t = ρ_min + (ρ_max − ρ_min)·(lr_t − lr_min)/(lr_max − lr_min)      step 0
    g_p = ∇L(w + ρ_t·g/(‖g‖ + ε))                                         steps 1-2 (SAM's gradient)
    g = g_∥ + g_⊥, g_∥ the projection of g on g_p                         step 3
    apply g_p − α·g_⊥                                                     step 4

Algorithm 1 and Table 4 were read in the figures the authors reproduce from the paper in
juntang-zhuang/GSAM (``img/gsam_algo2.png``, ``img/gsam_hyperparam2.png``); the steps above are its steps.

Descending g_p minimizes the perturbed loss f_p; −α·g_⊥ ascends the clean loss f orthogonally to g_p,
i.e. descends the surrogate gap h = f_p − f without changing f_p to first order. The sign is that of
Algorithm 1 and of both official codes: the JAX one in google-research/big_vision
(``trainers/proj/gsam/gsam.py``, ``g_robust − alpha·g_clean_residual``) and the authors' PyTorch port
juntang-zhuang/GSAM (``p.grad.add_(vertical, alpha=-alpha)``).

The training loop decays the learning rate to 0 (lr_min = 0), so ρ_t = ρ_min + (ρ_max − ρ_min)·f with
f = lr_t/lr_max, :attr:`StepSchedule.lr_factor` (during warm-up ρ_t ramps with the rate, as the
official ``ProportionScheduler`` does). ρ_min is declared as a fraction of ρ_max (``min_radius_fraction``)
so that every point of the search space is valid (ρ_min ≤ ρ_max always). Without :meth:`start_step`
(a direct ``step`` call) f = 1 and ρ_t = ρ_max.

α = 0 with ρ_min = ρ_max (fraction 1) is SAM bit for bit: the same ascent ops (Algorithm 1 writes
‖g‖ + ε; ε = 1e-12 as in SAM and both official codes), and g_p + (−0)·g_⊥ = g_p. The projection divides by ‖g_p‖²
exactly, as the JAX code does (the PyTorch port adds 1e-12 to two norms: a relative difference below
1e-11 for gradients of norm ≥ 0.1); a zero g_p gives g_⊥ = g. ``adaptive=True`` (ε scaled by |w|,
off in the paper's Table 4 and the JAX config) and the JAX option ``minimize_fp=False`` are not
implemented. Cost: 2 passes, as SAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import (
    BatchClosure,
    PassCost,
    Regularizer,
    StepReport,
    StepSchedule,
    global_norm,
    gradients,
    rescale_,
)
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Float, hparam

#: Metric: the radius ρ_t this step used (its epoch mean traces the schedule).
PERTURBATION_RADIUS = "perturbation_radius"


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """⟨a, b⟩ of two lists of tensors seen as one vector each (0-dim tensor, no host sync)."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b, strict=True)]).sum()


@torch.no_grad()
def orthogonal_part(vector: Sequence[Tensor], direction: Sequence[Tensor]) -> list[Tensor]:
    """vector − (⟨vector, d⟩/‖d‖²)·d: the component of ``vector`` orthogonal to ``direction`` d, as new
    tensors. The division is exact; a zero ``direction`` returns a copy of ``vector``.

    >>> import torch
    >>> orthogonal_part([torch.tensor([3.0, 4.0])], [torch.tensor([2.0, 0.0])])
    [tensor([0., 4.])]
    """
    squared = dot(direction, direction)
    coefficient = torch.where(squared > 0, dot(vector, direction) / squared, torch.zeros_like(squared))
    return list(torch._foreach_sub(list(vector), torch._foreach_mul(list(direction), coefficient)))


@register("gsam")
@dataclass
class GSAM(Regularizer):
    """Zhuang et al. 2022, Alg. 1: g_p − α·g_⊥, g_p = ∇L(w + ρ_t·g/‖g‖), g_⊥ = part of g orthogonal to g_p.

    ρ_t = ρ_min + (ρ_max − ρ_min)·lr_t/lr_max with ρ_min = fraction·ρ_max. Cost: 2 passes.

    >>> import regularizers
    >>> gsam = regularizers.create("gsam", perturbation_radius=0.1, min_radius_fraction=0.5)
    >>> gsam.radius_at(1.0), gsam.radius_at(0.0)
    (0.1, 0.05)
    """

    perturbation_radius: float = hparam(
        0.04,
        Float(0.01, 0.5, log=True),
        "ρ_max: L2 radius at the peak learning rate (paper Table 4, ResNets with SGD: 0.04)",
        minimum=0.0,
    )
    min_radius_fraction: float = hparam(
        0.5,
        Float(0.0, 1.0),
        "ρ_min/ρ_max: radius at learning rate 0 as a fraction of ρ_max (Table 4, ResNets: 0.02/0.04; "
        "1 = constant radius)",
        searched=False,
        minimum=0.0,
        maximum=1.0,
    )
    surrogate_gap_weight: float = hparam(
        0.01,
        Float(0.005, 1.0, log=True),
        "α: weight of −g_⊥, the surrogate-gap step orthogonal to g_p (Table 4: 0.005 … 1; ResNets 0.01; 0 = SAM)",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # lr_t/lr_max of the coming step, set by start_step (a number, not state: the loop sets it
        # before every step, also after a resume).
        self._lr_factor = 1.0

    def start_step(self, schedule: StepSchedule) -> None:
        self._lr_factor = schedule.lr_factor

    def radius_at(self, lr_factor: float) -> float:
        """ρ_t = ρ_min + (ρ_max − ρ_min)·lr_factor (Algorithm 1, step 0, with lr_min = 0)."""
        rho_min = self.min_radius_fraction * self.perturbation_radius
        return rho_min + (self.perturbation_radius - rho_min) * lr_factor

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        clean = closure(update_bn=True)
        grads = gradients(parameters)  # g; the perturbed pass leaves these tensors alone (p.grad is replaced)
        norm = global_norm(grads)
        radius = self.radius_at(self._lr_factor)
        ascent = [g.clone() for g in grads]
        rescale_(ascent, radius, norm)  # SAM's ascent, ρ_t·g/(‖g‖ + 1e-12)
        ascend_and_regrad(closure, ascent)
        del ascent
        with torch.no_grad():
            update = gradients(parameters)  # g_p
            torch._foreach_add_(update, orthogonal_part(grads, update), alpha=-self.surrogate_gap_weight)
            for p, g in zip(parameters, update, strict=True):
                p.grad = g
        return self.report(
            closure,
            clean.loss,
            **{
                GRAD_NORM: norm.detach(),
                PERTURBATION_RADIUS: torch.full((), radius, dtype=norm.dtype, device=norm.device),
            },
        )

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
