"""Neighborhood region smoothing (NRS).

Zhao and Zhang, "Neighborhood Region Smoothing Regularization for Finding Flat Minima In Deep
Neural Networks", arXiv 2201.06064 (2022), the NRS objective: the empirical loss plus the divergence between
the predictions of the model and of a neighbour in weight space,

    L(w) + λ·KL( p_w(x) ‖ p_{w+Δ}(x) ),     ‖Δ‖₂ = r.

The clean distribution p_w is detached, so the KL term pulls only the neighbour's predictions
towards the model's; its gradient is taken at the perturbed weights w + Δ and applied at w, as SAM
applies its ascent gradient (Foret et al. 2021). The KL is averaged over the batch.

Neighbours (``neighbour``):

* ``"random"`` (default): Δ = r·z/‖z‖₂ with z ~ N(0, I) over all trainable tensors. 2 passes.
* ``"adversarial"``: one VAT-style power-iteration step (Miyato et al., TPAMI 2019): from the
  random point Δ₀ above, Δ = r·∇_v KL(p_w ‖ p_v)|_{v=w+Δ₀} / ‖·‖₂. Near Δ₀ = 0 that gradient is
  the Fisher information times Δ₀, so Δ leans towards the most sensitive direction. 3 passes.
  (VAT starts from a tiny ξ; we start at the neighbourhood's own radius r, so no extra knob.)

Precision: every pass whose logits enter the KL (clean, perturbed, adversarial search) runs in
full precision (``BatchClosure(full_precision=True)``: outside autocast, in the parameters' dtype).
Under bf16 autocast the two forward passes differ by bf16 rounding (about 2⁻⁸ relative per
activation), which at small r is larger than the effect of Δ itself: measured on a small MLP, the
bf16 KL was 1.3× the float32 value at r = 0.05 and 18× at r = 0.005. The price on a GPU is that
NRS's passes run at float32 speed.

Randomness comes from the global torch RNG (``torch.randn_like``): the training loop seeds torch
once per trial, which makes a trial reproducible without a generator per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regularizers.base import (
    BatchClosure,
    Objective,
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
from regularizers.space import Choice, Float, hparam

#: Metric: KL(p_w ‖ p_{w+Δ}) at the neighbour the gradient was taken at.
NEIGHBOUR_KL = "neighbour_kl"

RANDOM = "random"
ADVERSARIAL = "adversarial"


def gaussian_direction(parameters: Sequence[nn.Parameter], radius: float) -> list[Tensor]:
    """z/‖z‖₂·r with z ~ N(0, I) over all tensors (global torch RNG): a uniform point on the sphere."""
    with torch.no_grad():
        direction = [torch.randn_like(p) for p in parameters]
        rescale_(direction, radius, global_norm(direction))
    return direction


def kl_to_clean(clean_logits: Tensor, weight: float = 1.0, record: list[Tensor] | None = None) -> Objective:
    """``objective(logits, _) = weight·KL(softmax(clean_logits) ‖ softmax(logits))``, batch mean.

    The clean distribution is a constant (detached). The softmaxes are computed in float32 or wider
    whatever the logits' dtype; for the KL to measure Δ rather than rounding, the logits themselves
    must come from full-precision passes (:class:`NRS` runs them so). ``record`` receives the detached
    unweighted KL, so reading it needs no division by ``weight``.
    """
    dtype = torch.promote_types(clean_logits.dtype, torch.float32)
    clean_log_probs = F.log_softmax(clean_logits.detach().to(dtype), dim=-1)

    def objective(logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits.to(dtype), dim=-1)
        kl = F.kl_div(log_probs, clean_log_probs, reduction="batchmean", log_target=True)
        if record is not None:
            record.append(kl.detach())
        return kl * weight

    return objective


@register("nrs")
@dataclass
class NRS(Regularizer):
    """Zhao & Zhang 2022: ∇L(w) + λ·∇_v KL(p_w ‖ p_v)|_{v=w+Δ}, ‖Δ‖ = r. Cost: 2 passes (3 adversarial).

    >>> import regularizers
    >>> regularizers.create("nrs", neighbour="adversarial").cost(has_batchnorm=True)
    PassCost(forward=3, backward=3)
    """

    perturbation_radius: float = hparam(0.05, Float(0.005, 0.5, log=True), "r: L2 norm of the neighbour Δ", minimum=0.0)
    penalty_weight: float = hparam(1.0, Float(0.1, 10.0, log=True), "λ: weight of the KL term", minimum=0.0)
    neighbour: str = hparam(
        RANDOM,
        Choice((RANDOM, ADVERSARIAL)),
        "how Δ is drawn: random direction or one VAT-style ascent step",
        searched=False,
    )

    def find_neighbour(self, closure: BatchClosure, clean_logits: Tensor) -> list[Tensor]:
        """Δ with ‖Δ‖₂ = r; the adversarial search runs one extra pass and leaves ``p.grad`` as found."""
        parameters = closure.parameters
        start = gaussian_direction(parameters, self.perturbation_radius)
        if self.neighbour == RANDOM:
            return start
        clean_grads = [p.grad for p in parameters]
        zero_grads(parameters)
        with perturbed_weights(parameters):
            with torch.no_grad():
                torch._foreach_add_(parameters, start)
            del start
            closure(update_bn=False, objective=kl_to_clean(clean_logits), full_precision=True)
        direction = gradients(parameters)
        with torch.no_grad():
            rescale_(direction, self.perturbation_radius, global_norm(direction))
        for p, g in zip(parameters, clean_grads, strict=True):
            p.grad = g
        return direction

    def step(self, closure: BatchClosure) -> StepReport:
        # ∇L(w) stays in p.grad; the KL gradient accumulates onto it. Full precision: the clean
        # logits are one side of the KL (module docstring).
        clean = closure(update_bn=True, full_precision=True)
        parameters = closure.parameters
        delta = self.find_neighbour(closure, clean.logits)
        kl: list[Tensor] = []
        with perturbed_weights(parameters):
            with torch.no_grad():
                torch._foreach_add_(parameters, delta)
            del delta
            closure(
                update_bn=False,
                objective=kl_to_clean(clean.logits, self.penalty_weight, record=kl),
                full_precision=True,
            )
        return self.report(closure, clean.loss, **{NEIGHBOUR_KL: kl[0]})

    def cost(self, has_batchnorm: bool) -> PassCost:
        passes = 3 if self.neighbour == ADVERSARIAL else 2
        return PassCost(forward=passes, backward=passes)
