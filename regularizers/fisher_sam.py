"""Fisher SAM: SAM's ascent inside the ellipsoid of the (diagonal) Fisher information.

Kim, Li, Hu and Hospedales, "Fisher SAM: Information Geometry and Sharpness Aware Minimisation",
ICML 2022 (arXiv 2206.04920). SAM's Euclidean ball ‖ε‖ ≤ γ becomes the Fisher ellipsoid
εᵀF(w)ε ≤ γ², whose first-order worst case is

    ε* = γ · F⁻¹g / sqrt(gᵀF⁻¹g),

with F approximated by the diagonal f = 1 + η·g² built from the batch gradient g (element-wise
square): ε = γ·(g / f) / sqrt(Σ g²/f). The update applies ∇L(w + ε) at w. η = 0 gives f = 1, i.e.
SAM (Foret et al. 2021) with ρ = γ, and then runs SAM's very ops. The norm guard is SAM's (1e-12).

Sources: nothing here was verified against the paper. Its text was not available offline, so no
equation number is cited, and the formula above (the ellipsoid, its worst case and the diagonal
f = 1 + η·g²) and the defaults γ = 0.1 and η = 1 were written from memory of the paper: not verified.
No official code was found to check them against (the paper's abstract pages link none).

Pitfall: f = 1 + η·g² squares the coordinates of the mean batch gradient, often 1e-3 or smaller for a
network's weights, so f ≈ 1 and the ellipsoid barely differs from SAM's ball unless η is large;
``fisher_gain`` reports the mean of η·g² over the trainable coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, global_norm, gradients, rescale_
from regularizers.registry import register
from regularizers.sam import GRAD_NORM, ascend_and_regrad
from regularizers.space import Float, hparam

#: Metric: mean of η·g² over the trainable coordinates (0 is SAM's ball).
FISHER_GAIN = "fisher_gain"


@register("fisher_sam")
@dataclass
class FisherSAM(Regularizer):
    """Kim et al. 2022: the gradient at w + γ·f⁻¹g/sqrt(gᵀf⁻¹g), f = 1 + η·g² (diagonal Fisher). Cost: 2 passes.

    >>> import regularizers
    >>> cost = regularizers.create("fisher_sam").cost(has_batchnorm=True)
    >>> cost.forward, cost.backward, cost.per_step
    (2, 2, 4)
    """

    perturbation_radius: float = hparam(
        0.1,
        Float(0.01, 0.5, log=True),
        "γ: radius of the Fisher ellipsoid εᵀfε ≤ γ² (0.1: not verified against the paper)",
        minimum=0.0,
    )
    fisher_scale: float = hparam(
        1.0,
        Float(0.1, 10.0, log=True),
        "η: weight of g² in the diagonal Fisher f = 1 + η·g² (1: not verified against the paper; 0 is SAM)",
        minimum=0.0,
    )

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        grads = gradients(closure.parameters)
        grad_norm = global_norm(grads)
        eta = self.fisher_scale
        if eta == 0.0:
            # f = 1: SAM's ascent, with SAM's ops (the clean gradient is scaled in place).
            rescale_(grads, self.perturbation_radius, grad_norm)
            gain = torch.zeros_like(grad_norm)
        else:
            with torch.no_grad():
                root = torch._foreach_mul(grads, grads)  # g², then sqrt(f) = sqrt(1 + η·g²)
                gain = sum(t.sum() for t in root) * (eta / sum(t.numel() for t in root))
                torch._foreach_mul_(root, eta)
                torch._foreach_add_(root, 1.0)
                torch._foreach_sqrt_(root)
                torch._foreach_div_(grads, root)  # g/sqrt(f): its squared norm is gᵀf⁻¹g
                norm = global_norm(grads)
                torch._foreach_div_(grads, root)  # f⁻¹g
                del root
                rescale_(grads, self.perturbation_radius, norm)
        ascend_and_regrad(closure, grads)
        return self.report(closure, clean.loss, **{GRAD_NORM: grad_norm.detach(), FISHER_GAIN: gain.detach()})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
