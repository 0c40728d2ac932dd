"""Gradient-norm penalty (GNP), computed with one extra pass by a finite difference.

Zhao, Zhang and Hu, "Penalizing Gradient Norm for Efficiently Improving Generalization in Deep
Learning", ICML 2022 (arXiv 2202.03599), eq. 8 with the Hessian-vector product replaced by a finite
difference of step r along g/‖g‖ (g = ∇L(w), α = λ/r):

    paper, eq. 8:          (1 − α)·g       + α·∇L(w + r·g/‖g‖)
    authors' code default: (1 − α)·g/‖g‖   + α·∇L(w + r·g/‖g‖)

The authors' official code (zhaoyang-0204/gnp, ``training/training_core.py``) interpolates
between the *normalized* clean gradient and the perturbed gradient when
``config.gnp.norm_perturbations`` is true, its default (``config/base_config.py``); it divides by
‖g‖ exactly, with no guard. Both are options here, defaulting to the authors' code:

* ``normalize_clean_gradient`` (default True): the clean term is g/‖g‖; False gives eq. 8.
* ``norm_epsilon`` (default 0): 0 divides by ‖g‖ exactly, as the authors' code and the paper do
  (a zero gradient gives a zero direction instead of 0/0); 1e-12 divides by ‖g‖ + 1e-12 as
  :class:`regularizers.sam.SAM` does.

α = 1 is SAM (Foret et al. 2021) with ρ = r whatever the clean term: with ``norm_epsilon=1e-12``
this implementation reproduces :class:`regularizers.sam.SAM` bit for bit (same ascent, same ops).
α = 0 with the un-normalized clean term is ERM, and then the perturbed pass is skipped. The paper's
best settings have α ∈ (0, 1], so the search covers [0.1, 1] while any α ≥ 0 is valid (α > 1
extrapolates, as the paper's λ > r would).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import (
    NORM_EPSILON,
    BatchClosure,
    PassCost,
    Regularizer,
    StepReport,
    global_norm,
    gradients,
    rescale_,
)
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Choice, Float, hparam


@register("gnp")
@dataclass
class GNP(Regularizer):
    """Zhao et al. 2022: (1−α)·g/‖g‖ + α∇L(w + r·g/‖g‖) (authors' code), or (1−α)·g + ... (paper eq. 8).

    Cost: 2 passes (1 when α = 0 with the un-normalized clean term: that is ERM).

    >>> import regularizers
    >>> regularizers.create(
    ...     "gnp", perturbed_gradient_weight=0.0, normalize_clean_gradient=False
    ... ).cost(has_batchnorm=False)
    PassCost(forward=1, backward=1)
    """

    perturbation_radius: float = hparam(
        0.1, Float(0.01, 0.5, log=True), "r: finite-difference step along g/‖g‖", minimum=0.0
    )
    perturbed_gradient_weight: float = hparam(
        0.8,
        Float(0.1, 1.0),
        "α = λ/r: weight of the perturbed gradient (1 − α on the clean one; α = 1 is SAM)",
        minimum=0.0,
    )
    normalize_clean_gradient: bool = hparam(
        True,
        Choice((True, False)),
        "clean term (1 − α)·g/‖g‖ as in the authors' code (zhaoyang-0204/gnp, norm_perturbations=True); "
        "False: (1 − α)·g, the paper's eq. 8",
        searched=False,
    )
    norm_epsilon: float = hparam(
        0.0,
        Choice((0.0, NORM_EPSILON)),
        "guard added to ‖g‖: 0 divides exactly (paper, authors' code); "
        "1e-12 as SAM here (then α = 1 ≡ sam bit for bit)",
        searched=False,
    )

    @property
    def _is_erm(self) -> bool:
        return self.perturbed_gradient_weight == 0.0 and not self.normalize_clean_gradient

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        norm = global_norm(grads)
        if self._is_erm:
            return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})
        alpha = self.perturbed_gradient_weight
        if alpha != 0.0:
            # Exactly SAM's ascent (on a copy: the clean gradient is mixed in below), so that α = 1
            # reproduces SAM bit for bit with SAM's guard.
            ascent = [g.clone() for g in grads]
            rescale_(ascent, self.perturbation_radius, norm, epsilon=self.norm_epsilon)
            ascend_and_regrad(closure, ascent)
            del ascent
        if alpha != 1.0:
            with torch.no_grad():
                if self.normalize_clean_gradient:
                    rescale_(grads, 1.0, norm, epsilon=self.norm_epsilon)  # g/‖g‖, in place
                if alpha != 0.0:
                    # lerp(a, b, α) = a + α(b − a): exact at α = 0 and α = 1.
                    torch._foreach_lerp_(grads, gradients(closure.parameters), alpha)
                for p, g in zip(closure.parameters, grads, strict=True):
                    p.grad = g
        return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        passes = 1 if self.perturbed_gradient_weight == 0.0 else 2
        return PassCost(forward=passes, backward=passes)
