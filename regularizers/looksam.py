"""LookSAM: SAM's gradient every k-th step, its flat-region component reused in between.

Liu, Mai, Chen, Hsieh and You, "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022
(arXiv 2203.02714), Algorithm 1 (number not verified) and Fig. 3. With g = ∇L(w) on the step's batch:

    every k-th step (steps 0, k, 2k, ...): g_s = ∇L(w + ρ·g/‖g‖)            SAM's gradient, applied
                                         g_v = g_s − (⟨g_s, g⟩/‖g‖²)·g      stored (= g_s − ‖g_s‖cos θ·g/‖g‖)
    other steps:                          g + α·(‖g‖/‖g_v‖)·g_v             applied, one pass

g_v, the component of SAM's gradient orthogonal to the SGD direction, is what biases SAM towards flat
regions; the paper finds it changes slowly and reuses it, rescaled to the current gradient's norm.
The first step is a SAM step (there is no g_v before it). k = 1 is SAM bit for bit (the same ops).

State (:attr:`LookSAM.state`): the step counter and g_v, saved with every trial checkpoint.
Cost: k + 1 forward and k + 1 backward passes per k steps, ``PassCost(k + 1, k + 1, period=k)``:
1 + 1/k of each per step (2.4 passes per step at k = 5 instead of SAM's 4).

Sources: equation and algorithm numbers not verified: the paper text was not available offline.
"Algorithm 1" is the number Leminhbinh0209/LookSAM's README uses; Fig. 3 is the paper's picture of g_s,
its component g_h parallel to the SGD gradient and g_v orthogonal to it (its caption, as quoted on a
review page). The update was checked against reimplementations, not the paper: rollovd/LookSAM
(``looksam.py``) and MarlonBecker/MSAM (``optimizer/looksam.py``) compute the same g_v and
g + α·(‖g‖/‖g_v‖)·g_v. No official code is known (the paper links none); defaults follow the
reimplementations: α = 0.7 is rollovd/LookSAM's documented default (its docstring and README; the
signature has none), Leminhbinh0209/LookSAM's README value and MarlonBecker/MSAM's configs' value
(``lookSAMalpha = 0.7``, there with k = 10); the paper's own α is not verified. The decomposition here
is global (one vector over all tensors), as in MarlonBecker/MSAM; rollovd/LookSAM decomposes and
rescales per tensor; which one the paper means is not verified. The SAM ascent uses SAM's
guard ‖g‖ + 1e-12; the projection divides exactly (a zero g gives g_v = g_s) and a zero g_v gives
the plain gradient. The paper's layer-wise variant (Look-LayerSAM) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients, rescale_
from regularizers.gsam import orthogonal_part
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Float, Int, hparam


@register("looksam")
@dataclass
class LookSAM(Regularizer):
    """Liu et al. 2022, Alg. 1: SAM every k-th step storing g_v ⊥ g; else g + α·(‖g‖/‖g_v‖)·g_v.

    >>> import regularizers
    >>> cost = regularizers.create("looksam", period=5).cost(has_batchnorm=True)
    >>> cost, cost.per_step
    (PassCost(forward=6, backward=6, period=5), 2.4)
    """

    perturbation_radius: float = hparam(
        0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step on SAM steps (as sam)", minimum=0.0
    )
    reuse_weight: float = hparam(
        0.7,
        Float(0.1, 1.0),
        "α: weight of the reused g_v, rescaled to ‖g‖ (0.7: rollovd/LookSAM, MarlonBecker/MSAM configs; "
        "the paper's value not verified)",
        minimum=0.0,
    )
    period: int = hparam(
        5,
        Int(2, 10),
        "k: a SAM step every k steps (LookSAM-5, the paper's main setting; k = 1 is SAM)",
        searched=False,
        minimum=1,
    )

    state = ("steps_done", "orthogonal_gradient")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.steps_done = 0
        self.orthogonal_gradient: list[torch.Tensor] | None = None  # g_v of the last SAM step

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        clean = closure(update_bn=True)
        grads = gradients(parameters)  # g
        norm = global_norm(grads)
        if self.steps_done % self.period == 0 or self.orthogonal_gradient is None:
            ascent = [g.clone() for g in grads]
            rescale_(ascent, self.perturbation_radius, norm)  # exactly SAM's ascent
            ascend_and_regrad(closure, ascent)  # p.grad = g_s, applied
            del ascent
            self.orthogonal_gradient = orthogonal_part(gradients(parameters), grads)
        else:
            with torch.no_grad():
                reused = self.orthogonal_gradient
                reused_norm = global_norm(reused)
                factor = torch.where(
                    reused_norm > 0, self.reuse_weight * norm / reused_norm, torch.zeros_like(reused_norm)
                )
                torch._foreach_add_(grads, torch._foreach_mul(reused, factor))
                for p, g in zip(parameters, grads, strict=True):
                    p.grad = g
        self.steps_done += 1
        return self.report(closure, clean.loss, **{GRAD_NORM: norm.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=self.period + 1, backward=self.period + 1, period=self.period)
