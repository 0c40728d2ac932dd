"""Noise stability optimization (NSO): a two-point (antithetic) weight-noise gradient estimator.

Zhang, Li and Ju, "Noise Stability Optimization for Finding Flat Minima: A Hessian-based
Regularization Approach", arXiv 2306.08553 (2023). The method minimises the noise-stable loss
F(W) = E_U[L(W + U)], U ~ N(0, σ²I), whose Taylor expansion is L(W) + (σ²/2)·tr(∇²L(W)) + O(σ⁴),
with the symmetric estimator

    G = 1/(2k) · Σ_{j=1..k} [ ∇L(W + U_j) + ∇L(W − U_j) ],    U_j ~ N(0, σ² I) on every trainable tensor,

all 2k points on the same batch. Pairing +U with −U cancels the first-order term H·U that makes
the one-point estimator ∇L(W + U) noisy, so G has lower variance at the same mean (for a loss
whose gradient is a polynomial of degree ≤ 3, E[G] = ∇L + (σ²/2)·∇tr(H) exactly).

Option ``estimator``: ``"two_point"`` (default) is G above, the paper's Algorithm 1 and what the
authors' run scripts use (VirtuosoResearch/Noise-stability-optimization, ``--use_neg``);
``"one_point"`` is G₁ = 1/k · Σ_j ∇L(W + U_j), the estimator the paper compares against (and the
default of the authors' ``NSMTrainer(use_neg=False)``). Same mean, higher variance: the first-order
term H·U_j no longer cancels. k passes instead of 2k.

Option ``clean_gradient_weight`` = λ mixes in the clean gradient, G' = (1 − λ)·G + λ·∇L(W), as
the authors' code allows (``nsm_lam``; λ = 0, the default, is the paper's estimator).

Passes (``cost``), with m = 2k points (two-point) or m = k (one-point): the clean pass exists only
for BatchNorm statistics, the logged loss and, with λ > 0, the clean gradient. Without BatchNorm
and with λ = 0 it is skipped and the reported loss is the mean of the m perturbed losses: m forward
/ m backward. With BatchNorm and λ = 0 the clean pass is a forward only (``update_bn=True,
backward=False``): m + 1 forward / m backward. With λ > 0: m + 1 / m + 1.

Memory: the k draws reuse one noise buffer, used for +U_j and −U_j; the weights are reset from one
backup before every point. Noise comes from the global torch RNG (:func:`gaussian_noise_`); the training
loop seeds torch once per trial, which makes a trial reproducible without a generator per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, gradients, perturbed_weights, zero_grads
from regularizers.registry import register
from regularizers.space import Choice, Float, Int, hparam


@torch.no_grad()
def gaussian_noise_(buffers: Sequence[Tensor], std: float) -> None:
    """Fill ``buffers`` in place with N(0, std²) noise from the global torch RNG."""
    for buffer in buffers:
        buffer.normal_(0.0, std)


#: Metric: mean training loss over the perturbed points (a Monte Carlo estimate of F(W)).
PERTURBED_LOSS = "perturbed_loss"

#: ``NSO.estimator``: evaluate W + U and W − U per draw, or W + U only.
TWO_POINT = "two_point"
ONE_POINT = "one_point"


@register("nso")
@dataclass
class NSO(Regularizer):
    """Zhang et al. 2023: G = 1/(2k) Σⱼ [∇L(W+Uⱼ) + ∇L(W−Uⱼ)], Uⱼ ~ N(0, σ²I); one-point: 1/k Σⱼ ∇L(W+Uⱼ).

    Cost: 2k passes (k one-point), plus a clean forward with BatchNorm (and a clean backward when λ > 0).

    >>> import regularizers
    >>> nso = regularizers.create("nso", num_samples=2)
    >>> nso.cost(has_batchnorm=False), nso.cost(has_batchnorm=True)
    (PassCost(forward=4, backward=4), PassCost(forward=5, backward=4))
    >>> regularizers.create("nso", num_samples=2, estimator="one_point").cost(has_batchnorm=False)
    PassCost(forward=2, backward=2)
    """

    noise_scale: float = hparam(
        0.01, Float(0.001, 0.05, log=True), "σ: standard deviation of the weight noise U", minimum=0.0
    )
    num_samples: int = hparam(
        1, Int(1, 3), "k: noise draws per step, each evaluated at W + U and W − U (W + U one-point)", minimum=1
    )
    clean_gradient_weight: float = hparam(
        0.0,
        Float(0.0, 1.0),
        "λ: weight of the clean gradient ∇L(W) mixed into the estimate (0 = pure NSO)",
        searched=False,
        minimum=0.0,
        maximum=1.0,
    )
    estimator: str = hparam(
        TWO_POINT,
        Choice((TWO_POINT, ONE_POINT)),
        "'two_point': ∇L(W+U) and ∇L(W−U) per draw (paper's Alg. 1; authors' scripts use --use_neg); "
        "'one_point': ∇L(W+U) only, the baseline the paper compares with",
        searched=False,
    )

    @property
    def _signs(self) -> tuple[float, ...]:
        return (1.0, -1.0) if self.estimator == TWO_POINT else (1.0,)

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        # G is an average of what the passes below accumulate: the closure's first pass clears p.grad.
        mix_clean = self.clean_gradient_weight > 0.0
        clean = None
        clean_grads = None
        if mix_clean:
            clean = closure(update_bn=True)
            clean_grads = gradients(parameters)
            zero_grads(parameters)
        elif closure.has_batchnorm:
            clean = closure(update_bn=True, backward=False)

        losses = []
        with torch.no_grad():
            noise = [torch.empty_like(p) for p in parameters]
        with perturbed_weights(parameters) as backup:
            for _ in range(self.num_samples):
                gaussian_noise_(noise, self.noise_scale)
                for sign in self._signs:
                    with torch.no_grad():
                        torch._foreach_copy_(parameters, backup.saved)
                        torch._foreach_add_(parameters, noise, alpha=sign)
                    losses.append(closure(update_bn=False).loss)
        del noise

        with torch.no_grad():
            estimate = gradients(parameters)  # the sum over the points
            torch._foreach_mul_(estimate, 1.0 / (len(self._signs) * self.num_samples))
            if clean_grads is not None:
                torch._foreach_lerp_(estimate, clean_grads, self.clean_gradient_weight)
            for p, g in zip(parameters, estimate, strict=True):
                p.grad = g
            perturbed_loss = torch.stack(losses).mean()
        loss = clean.loss if clean is not None else perturbed_loss
        return self.report(closure, loss, **{PERTURBED_LOSS: perturbed_loss})

    def cost(self, has_batchnorm: bool) -> PassCost:
        points = len(self._signs) * self.num_samples
        if self.clean_gradient_weight > 0.0:
            return PassCost(forward=points + 1, backward=points + 1)
        if has_batchnorm:
            return PassCost(forward=points + 1, backward=points)
        return PassCost(forward=points, backward=points)
