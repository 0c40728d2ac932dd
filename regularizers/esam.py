"""Efficient sharpness-aware minimization (ESAM): SAM on a random subset of weights and samples.

Du, Yan, Feng, Zhou, Zhen, Goh and Tan, "Efficient Sharpness-aware Minimization for Improved
Training of Neural Networks", ICLR 2022 (arXiv 2110.03141). Two changes to SAM's step:

* **Stochastic Weight Perturbation (SWP).** Only a random subset of the weights is perturbed, each
  kept with probability β, and the ascent is scaled by 1/β:

      ε = (ρ/β) · m ⊙ g / ‖m ⊙ g‖,   m ~ Bernoulli(β)

* **Sharpness-Sensitive Data Selection (SDS).** The gradient at w + ε is taken of the loss of the
  fraction γ of the batch whose per-sample loss rose most under the perturbation,
  B⁺ = top-⌊γ·|B|⌋ of ℓᵢ(w + ε) − ℓᵢ(w), and applied at w: ∇L_{B⁺}(w + ε).

β = 1 and γ = 1 is SAM (Foret et al. 2021); with ``norm_epsilon=1e-12`` it runs SAM's very ops.

Sources: equation and algorithm numbers not verified: the paper text was not available offline, so
no equation of the paper is cited here. The update was checked against the authors' code
(dydjw9/Efficient_SAM, ``utils/Esam.py``: ``ESAM.first_step``, ``ESAM.step``), and the defaults
against its ``utils/options.py`` and ``run.sh``. Secondary summaries of the paper write the mask per
weight and normalize by the whole gradient's norm, ε = (ρ/β)·m ⊙ g/‖g‖; whether the paper writes
‖g‖ or ‖m ⊙ g‖ is to be checked against its text.

Where this follows the authors' code rather than those summaries: m is drawn **per parameter tensor**
(one Bernoulli per tensor, as the code freezes whole tensors), the norm is that of the kept tensors'
gradient ‖m ⊙ g‖, and its guard is 1e-7 (``norm_epsilon``; 1e-12 as :class:`regularizers.sam.SAM`).
The mask is drawn with torch's global RNG (:func:`keep_mask`), at the start of each step (the authors
draw it with Python's ``random`` at the end of the previous step, so their first step perturbs every
tensor).

Where it differs from the authors' code, because a closure runs the whole batch:

* **Passes.** The authors run three forwards: the clean pass, a no-grad forward at w + ε for the
  per-sample losses, and a forward + backward on B⁺ only. Here the perturbed pass is one forward of
  the whole batch at w + ε whose objective selects B⁺ from its own (detached) per-sample losses and
  returns L_{B⁺}: 2 forward / 2 backward, counted as closure calls, like SAM. ESAM's saving is in
  samples (γ) and perturbed tensors (β), not in counted passes: this implementation still computes
  the clean gradient of every tensor and backpropagates through the whole batch, so its wall time
  is SAM's; ``selected_fraction`` and ``perturbed_fraction`` report the shares it selects.
* **BatchNorm.** B⁺'s loss is computed with the whole batch's statistics at w + ε (the authors'
  third forward on B⁺ alone uses B⁺'s statistics); without BatchNorm the gradient is the same.
* **|B⁺|.** Exactly ⌊γ·|B|⌋ samples (at least one). The authors keep the samples whose increase
  is strictly above the ⌊γ·|B|⌋-th largest, i.e. one fewer barring ties, and use the whole batch
  when γ ≥ 0.99.

Per-sample losses apply the closure's training loss (label smoothing included) to each sample
alone (``torch.vmap``), so the loss must be a mean of per-sample terms, as cross-entropy is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

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
from regularizers.sam import GRAD_NORM
from regularizers.space import Choice, Float, hparam

#: Metric: share of the batch the perturbed gradient is taken on (|B⁺| / |B|).
SELECTED_FRACTION = "selected_fraction"
#: Metric: share of the trainable weights (by element count) that were perturbed.
PERTURBED_FRACTION = "perturbed_fraction"

#: The norm guard of the authors' code (dydjw9/Efficient_SAM, utils/Esam.py).
ESAM_NORM_EPSILON = 1e-7


def keep_mask(count: int, keep_probability: float) -> list[bool]:
    """``count`` independent Bernoulli(β) draws from torch's global (CPU) RNG: which tensors to perturb."""
    if keep_probability >= 1.0:
        return [True] * count
    return (torch.rand(count) < keep_probability).tolist()


@torch.no_grad()
def per_sample_losses(loss_fn: Objective, logits: Tensor, targets: Tensor) -> Tensor:
    """``loss_fn`` on each sample alone, in float32 or wider and outside autocast."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return torch.vmap(lambda row, target: loss_fn(row.unsqueeze(0), target.unsqueeze(0)))(logits, targets)


@register("esam")
@dataclass
class ESAM(Regularizer):
    """Du et al. 2022: ∇L_{B⁺}(w + (ρ/β)·m⊙g/‖m⊙g‖), m ~ Bernoulli(β) per tensor, B⁺ = the γ·|B| samples
    whose loss rose most. Cost: 2 passes (module docstring: the saving is in samples, not passes).

    >>> import regularizers
    >>> cost = regularizers.create("esam").cost(has_batchnorm=True)
    >>> cost.forward, cost.backward, cost.per_step
    (2, 2, 4)
    """

    perturbation_radius: float = hparam(
        0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step (authors' default 0.05)", minimum=0.0
    )
    weight_keep_probability: float = hparam(
        0.6,
        Float(0.4, 1.0),
        "β: probability that a parameter tensor is perturbed (SWP; authors' run.sh: 0.6 ResNet-18, 0.5 WRN; 1 = all)",
        minimum=0.0,
        maximum=1.0,
    )
    sample_fraction: float = hparam(
        0.5,
        Float(0.3, 1.0),
        "γ: fraction of the batch, sharpest first, the perturbed gradient is taken on (SDS; authors' run.sh: 0.5)",
        minimum=0.0,
        maximum=1.0,
    )
    norm_epsilon: float = hparam(
        ESAM_NORM_EPSILON,
        Choice((ESAM_NORM_EPSILON, 1e-12)),
        "guard added to ‖m⊙g‖: 1e-7 as the authors' code; 1e-12 as SAM here (β = γ = 1 is then sam bit for bit)",
        searched=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("weight_keep_probability", "sample_fraction"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        clean = closure(update_bn=True)
        grads = gradients(parameters)
        norm = global_norm(grads)
        keep = keep_mask(len(parameters), self.weight_keep_probability)
        kept = [i for i, flag in enumerate(keep) if flag]
        ascent = [grads[i] for i in kept]  # p.grad is cleared below: scaled in place into the ascent
        if ascent:
            kept_norm = norm if len(kept) == len(parameters) else global_norm(ascent)
            rescale_(
                ascent, self.perturbation_radius / self.weight_keep_probability, kept_norm, epsilon=self.norm_epsilon
            )
        size = closure.targets.shape[0]
        count = max(1, math.floor(self.sample_fraction * size))
        with perturbed_weights(parameters):
            if ascent:
                with torch.no_grad():
                    torch._foreach_add_([parameters[i] for i in kept], ascent)
            zero_grads(parameters)
            if count >= size:
                closure(update_bn=False)
            else:
                before = per_sample_losses(closure.loss_fn, clean.logits, closure.targets)
                closure(update_bn=False, objective=self._sharpest_subset_loss(closure.loss_fn, before, count))
        device = clean.loss.device
        # torch.full fills on the device: no host-to-device copy per step.
        selected = torch.full((), count / size, device=device)
        perturbed = torch.full(
            (), sum(parameters[i].numel() for i in kept) / sum(p.numel() for p in parameters), device=device
        )
        metrics = {GRAD_NORM: norm.detach(), SELECTED_FRACTION: selected, PERTURBED_FRACTION: perturbed}
        return self.report(closure, clean.loss, **metrics)

    @staticmethod
    def _sharpest_subset_loss(loss_fn: Objective, before: Tensor, count: int) -> Objective:
        """The objective of the perturbed pass: ``loss_fn`` on the ``count`` samples whose loss rose most."""

        def objective(logits: Tensor, targets: Tensor) -> Tensor:
            rise = per_sample_losses(loss_fn, logits.detach(), targets) - before
            chosen = torch.topk(rise, count, sorted=False).indices
            return loss_fn(logits[chosen], targets[chosen])

        return objective

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2, backward=2)
