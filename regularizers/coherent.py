"""Gradient-coherent strong L1/L2 regularization, with the delayed variant as an option.

Park, Ho, Chang and Zhang, "Gradient-Coherent Strong Regularization for Deep Neural Networks",
arXiv 1811.08056 (2018): strong L1/L2 penalties make SGD fail when the penalty gradient overwhelms
the data gradient, so the penalty is imposed only while the gradients stay *coherent*. Per
parameter tensor t, with data gradient g_t and penalty gradient r_t (λ·w_t for L2, λ·sign(w_t)
for L1), the applied gradient is

    g_t + r_t   if  cos(g_t, g_t + r_t) > τ,     g_t   otherwise.

The same authors' earlier *delayed* strong regularization (Park et al., 2018) imposes no penalty
during the first γ epochs; ``delay_epochs`` = γ turns it on (0, the default, is off) and it
combines with the coherence test.

Choices where the paper leaves room: the penalty is imposed on every trainable tensor (biases and
normalization parameters included, as :mod:`regularizers.weight_decay` does); a tensor whose data
gradient is exactly zero has cosine 0 and so receives no penalty at τ ≥ 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, gradients
from regularizers.registry import register
from regularizers.space import Float, Int, hparam

#: Metric: fraction of parameter tensors that received the penalty this step.
IMPOSED_FRACTION = "imposed_fraction"


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """⟨a, b⟩ as a 0-dim tensor, without a temporary when both are laid out alike."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.view(-1), b.view(-1))
    return torch.sum(a * b)


def _squared_norms(tensors: list[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors)).square()


def coherence(gradients: list[Tensor], directions: list[Tensor], weight: float) -> Tensor:
    """cos∠(g_t, g_t + λ·d_t) for every tensor t at once, without forming g + λ·d (no host sync).

    cos = (⟨g,g⟩ + λ⟨g,d⟩) / (‖g‖·‖g + λd‖) with ‖g + λd‖² = ⟨g,g⟩ + 2λ⟨g,d⟩ + λ²⟨d,d⟩;
    0 where either vector is zero. The inner products are exact per tensor; the rest is one
    vector of scalars, so small models do not pay a dozen kernel launches per tensor.
    """
    gg, dd = _squared_norms(gradients), _squared_norms(directions)
    gd = torch.stack([_dot(g, d) for g, d in zip(gradients, directions, strict=True)])
    combined_sq = (gg + 2 * weight * gd + weight * weight * dd).clamp_min(0)
    denominator = torch.sqrt(gg) * torch.sqrt(combined_sq)
    return (gg + weight * gd) / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


@dataclass
class _GradientCoherent(Regularizer):
    """Shared step of :class:`CoherentL1` and :class:`CoherentL2` (one forward/backward pass)."""

    penalty_weight: float = hparam(1e-3, Float(1e-4, 1e-2, log=True), "penalty coefficient λ", minimum=0.0)
    coherence_threshold: float = hparam(
        0.0,
        Float(0.0, 0.5),
        "τ: impose the penalty on a tensor only if cos(g, g + penalty gradient) > τ",
        minimum=-1.0,
        maximum=1.0,
    )
    delay_epochs: int = hparam(
        0,
        Int(0, 100),
        "γ: no penalty during the first γ epochs (delayed strong regularization; 0 = off)",
        searched=False,
        minimum=0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self._epoch = 0

    def penalty_direction(self, weight: Tensor) -> Tensor:
        """d with penalty gradient λ·d: w for L2, sign(w) for L1."""
        raise NotImplementedError

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        self._epoch = epoch

    @property
    def penalty_active(self) -> bool:
        """False during the delay (epochs 0 … γ-1, counted by :meth:`start_epoch`)."""
        return self._epoch >= self.delay_epochs

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        parameters = closure.parameters
        if not self.penalty_active:
            return self.report(closure, clean.loss, **{IMPOSED_FRACTION: clean.loss.new_zeros(())})
        with torch.no_grad():
            grads = gradients(parameters)
            directions = [self.penalty_direction(p.detach()) for p in parameters]
            coherent = coherence(grads, directions, self.penalty_weight) > self.coherence_threshold
            scales = (coherent.to(grads[0].dtype) * self.penalty_weight).unbind()
            for p, g, direction, scale in zip(parameters, grads, directions, scales, strict=True):
                # g += λ·[coherent]·d in place: one fused op, no parameter-sized temporary for L2.
                p.grad = g.addcmul_(direction, scale)
            fraction = coherent.to(clean.loss.dtype).mean()
        return self.report(closure, clean.loss, **{IMPOSED_FRACTION: fraction})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)


@register("coherent_l2")
@dataclass
class CoherentL2(_GradientCoherent):
    """Park et al. 2018 (arXiv 1811.08056) with the L2 penalty λ/2·‖w‖²: penalty gradient λ·w.

    >>> import regularizers
    >>> regularizers.create("coherent_l2", penalty_weight=1e-3, delay_epochs=5).penalty_active
    False
    """

    penalty_weight: float = hparam(
        1e-3, Float(1e-4, 1e-2, log=True), "L2 coefficient λ (penalty λ/2·‖w‖²)", minimum=0.0
    )

    def penalty_direction(self, weight: Tensor) -> Tensor:
        return weight


@register("coherent_l1")
@dataclass
class CoherentL1(_GradientCoherent):
    """Park et al. 2018 (arXiv 1811.08056) with the L1 penalty λ·‖w‖₁: penalty gradient λ·sign(w)."""

    penalty_weight: float = hparam(1e-4, Float(1e-6, 1e-3, log=True), "L1 coefficient λ (penalty λ·‖w‖₁)", minimum=0.0)

    def penalty_direction(self, weight: Tensor) -> Tensor:
        return torch.sign(weight)
