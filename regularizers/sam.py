"""Sharpness-aware minimization (SAM) and its adaptive variant (ASAM).

SAM, Foret et al., ICLR 2021, eq. 2: ε̂(w) = ρ·g/‖g‖₂ with g = ∇L(w); the update applies
∇L(w)|_{w+ε̂} at w.

ASAM, Kwon et al., ICML 2021, eq. 9 with the element-wise operator T_w = |w| + η:
ε̂ = ρ·T_w²·g / ‖T_w·g‖₂. With η → ∞ relative to |w| it reduces to SAM up to the scale of ρ.

Which tensors get T_w = |w| + η is where implementations differ (``adaptive_tensors``):

* ``"weights"`` (default): the authors' official code (SamsungLabs/ASAM, ``asam.py``) applies it
  to parameters whose name contains ``weight`` (convolution and linear weights, BatchNorm scale)
  and uses T = 1 for the others (biases, BatchNorm shift). Its norm guard is 1e-16.
* ``"all"``: T_w = |w| + η on every tensor. With ``eta = 0`` this is the widely used PyTorch port
  (davda54/sam, ``adaptive=True``), whose norm guard is 1e-12 (a relative difference below 1e-11
  for ‖T·g‖ ≥ 0.1, under float32 resolution).
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
from regularizers.space import Choice, Float, hparam

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

    perturbation_radius: float = hparam(
        0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step", minimum=0.0
    )

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


#: ``ASAM.adaptive_tensors``: T = |w| + η on tensors named ``*weight*`` only (authors' code) or on all.
WEIGHTS = "weights"
ALL = "all"

#: The norm guard of the authors' ASAM code (SamsungLabs/ASAM, asam.py).
ASAM_NORM_EPSILON = 1e-16


def adaptive_mask(closure: BatchClosure) -> list[bool]:
    """For each of ``closure.parameters``: does its name in ``closure.model`` contain ``weight``?

    The authors' ASAM rule for which tensors get T = |w| + η. Raises ``ValueError`` when a
    parameter does not belong to the model (its name cannot be known).
    """
    names = {id(p): name for name, p in closure.model.named_parameters()}
    mask = []
    for p in closure.parameters:
        if id(p) not in names:
            raise ValueError("ASAM: a closure parameter is not a parameter of closure.model; its name is unknown")
        mask.append("weight" in names[id(p)])
    return mask


@register("asam")
@dataclass
class ASAM(Regularizer):
    """Kwon et al. 2021, eq. 9: ε = ρ·T²g/‖Tg‖₂ with T = |w| + η (element-wise). Cost: 2 passes.

    ``adaptive_tensors`` picks the tensors T = |w| + η applies to (T = 1 elsewhere): ``"weights"``
    as in the authors' code, ``"all"`` as in davda54/sam's ``adaptive=True`` (with ``eta=0``).

    >>> import regularizers
    >>> regularizers.create("asam", adaptive_tensors="all", eta=0.0).cost(has_batchnorm=False)
    PassCost(forward=2, backward=2)
    """

    perturbation_radius: float = hparam(
        0.5, Float(0.05, 2.0, log=True), "ρ: radius in the normalized space", minimum=0.0
    )
    eta: float = hparam(
        0.01,
        Float(1e-3, 0.1, log=True),
        "η: offset in T = |w| + η (authors' code: 0.01; davda54/sam's adaptive port: 0)",
        searched=False,
        minimum=0.0,
    )
    adaptive_tensors: str = hparam(
        WEIGHTS,
        Choice((WEIGHTS, ALL)),
        "tensors with T = |w| + η: 'weights' = names containing 'weight', T = 1 for biases "
        "(SamsungLabs/ASAM); 'all' = every tensor (davda54/sam adaptive=True, there with η = 0)",
        searched=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # (parameter list, mask): the loop passes the same list every step, so the name walk
        # runs once per trial.
        self._mask_cache: tuple[list[torch.nn.Parameter], list[bool]] | None = None

    def _adaptive(self, closure: BatchClosure) -> list[bool]:
        if self.adaptive_tensors == ALL:
            return [True] * len(closure.parameters)
        if self._mask_cache is None or self._mask_cache[0] is not closure.parameters:
            self._mask_cache = (closure.parameters, adaptive_mask(closure))
        return self._mask_cache[1]

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        adaptive = [i for i, flag in enumerate(self._adaptive(closure)) if flag]
        with torch.no_grad():
            # T·g and T²·g with T = 1 outside `adaptive`; multi-tensor ops on the adaptive subset
            # (torch's _foreach ops reject an empty list).
            scaled = list(grads)
            operator: list[torch.Tensor] = []
            if adaptive:
                operator = torch._foreach_abs([closure.parameters[i].detach() for i in adaptive])
                torch._foreach_add_(operator, self.eta)
                for i, value in zip(adaptive, torch._foreach_mul([grads[i] for i in adaptive], operator), strict=True):
                    scaled[i] = value
            norm = global_norm(scaled)
            fresh = set(adaptive)  # T·g of these is already a new tensor; the rest still alias `grads`
            ascent = [t if i in fresh else t.clone() for i, t in enumerate(scaled)]
            if adaptive:
                torch._foreach_mul_([ascent[i] for i in adaptive], operator)
            rescale_(ascent, self.perturbation_radius, norm, epsilon=ASAM_NORM_EPSILON)
        del operator, scaled
        ascend_and_regrad(closure, ascent)
        return self.report(closure, clean.loss, **{GRAD_NORM: global_norm(grads).detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
