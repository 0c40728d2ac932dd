"""Random weight perturbation (RWP), the one-point baseline the NSO paper compares with.

Li, Yan, Lei, Wu, Fang, Yang and Huang, "Efficient Generalization Improvement Guided by Random
Weight Perturbation", arXiv 2211.11489 (2022): the mixed objective
α·L(w + ε) + (1 − α)·L(w), i.e. the gradient

    g = α·∇L(w + ε) + (1 − α)·∇L(w),

with *filter-wise* Gaussian noise: for a tensor W with two or more dimensions, each filter
W[i] (the slice along dim 0) gets ε[i] ~ N(0, (γ·‖W[i]‖₂)² I); a 1-d tensor (bias, BatchNorm
affine) uses the norm of the whole tensor. The noise scale is relative, so a zero-initialised
tensor is not perturbed.

Passes: clean forward/backward (the BatchNorm-updating pass) + one perturbed forward/backward.
α = 0 is ERM and skips the perturbed pass (1/1); α = 1 needs no clean gradient, so the clean pass
is a forward only (2 forward / 1 backward). The noise is drawn with the global torch RNG
(``torch.randn_like``) and added in place, tensor by tensor, so no noise buffer is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, gradients, perturbed_weights, zero_grads
from regularizers.registry import register
from regularizers.space import Float, hparam


@torch.no_grad()
def filter_wise_noise(weight: Tensor, relative_scale: float) -> Tensor:
    """ε with ε[i] ~ N(0, (γ·‖W[i]‖₂)²) per filter W[i] (dim 0); whole-tensor norm for ≤ 1-d tensors.

    >>> import torch
    >>> w = torch.zeros(3, 4); w[0] = 1.0
    >>> eps = filter_wise_noise(w, 0.1)
    >>> bool((eps[1:] == 0).all()), bool((eps[0] != 0).all())
    (True, True)
    """
    if weight.dim() >= 2:
        norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)
        std = norms.view(-1, *([1] * (weight.dim() - 1))) * relative_scale
    else:
        std = torch.linalg.vector_norm(weight) * relative_scale
    return torch.randn_like(weight) * std


@register("rwp")
@dataclass
class RWP(Regularizer):
    """Li et al. 2022: α·∇L(w + ε) + (1 − α)·∇L(w), filter-wise ε. Cost: 2 passes (see module doc).

    >>> import regularizers
    >>> regularizers.create("rwp", perturbed_gradient_weight=1.0).cost(has_batchnorm=True)
    PassCost(forward=2, backward=1)
    """

    noise_scale: float = hparam(
        0.01, Float(0.001, 0.05, log=True), "γ: noise std relative to each filter's norm", minimum=0.0
    )
    perturbed_gradient_weight: float = hparam(
        0.5,
        Float(0.0, 1.0),
        "α: weight of the perturbed gradient (1 − α on the clean one; 0 is ERM)",
        minimum=0.0,
        maximum=1.0,
    )

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        alpha = self.perturbed_gradient_weight
        clean = closure(update_bn=True, backward=alpha < 1.0)
        if alpha == 0.0:
            return self.report(closure, clean.loss)
        clean_grads = gradients(parameters) if alpha < 1.0 else None
        zero_grads(parameters)
        with perturbed_weights(parameters):
            with torch.no_grad():
                for p in parameters:
                    p.add_(filter_wise_noise(p, self.noise_scale))
            closure(update_bn=False)
        if clean_grads is not None:
            with torch.no_grad():
                torch._foreach_lerp_(clean_grads, gradients(parameters), alpha)
                for p, g in zip(parameters, clean_grads, strict=True):
                    p.grad = g
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        alpha = self.perturbed_gradient_weight
        if alpha == 0.0:
            return PassCost(forward=1, backward=1)
        return PassCost(forward=2, backward=2 if alpha < 1.0 else 1)
