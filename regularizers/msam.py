"""Momentum-SAM (MSAM): the gradient taken a step ρ along the negative momentum direction, one pass.

Becker, Altrock and Risse, "Momentum-SAM: Sharpness Aware Minimization without Computational
Overhead", arXiv 2401.12033 (2024), Algorithm 1 (SGD with MSAM; number not verified). With v the
momentum vector:

    g = ∇L(w − ρ·v/‖v‖),   applied at w;   then v ← μ·v + g

SAM's fresh ascent gradient (a second pass) is replaced by the accumulated momentum, which the
optimizer already has: the perturbation ε = −ρ·v/‖v‖ points along the negative momentum, the
direction the weights are about to move in.

Sources: equation and algorithm numbers not verified: the paper text was not available offline, so
"Algorithm 1" is not checked. The update was checked against the authors' code (MarlonBecker/MSAM,
``optimizer/msam.py``, ``MSAM.step``), the defaults against its README's run commands and
``configs/*.ini``. The official code keeps the weights at w − ρ·v/(‖v‖ + 1e-12) between steps and
moves them back before its SGD update; here the perturbation is applied and undone inside the step,
with the same 1e-12 guard.

**Own momentum buffer.** A regularizer cannot see the optimizer, so MSAM keeps its own v (declared
state, saved with every trial checkpoint), updated with the gradient it returns: v ← μ·v + g, with
v = g on the first update (as ``torch.optim.SGD`` starts its buffer). It equals the optimizer's
``momentum_buffer`` when that is SGD with momentum μ, dampening 0 and no coupled weight decay
(``weight_decay=0``; Nesterov changes the applied step, not the buffer); the official code's buffer
includes its coupled weight decay, λ·w̃ at the perturbed weights w̃, this one none. With Adam, μ = β₁
gives the direction of Adam's first moment (the official AdamW variant perturbs along it), since
normalization removes the (1 − β₁) scale. **First step:** v = 0 has no direction, so the gradient is taken at w (the
plain gradient), as the official code does with its zero-initialised buffer.

**Passes and the reported loss.** Without BatchNorm: one forward/backward pass, at w − ρ·v/‖v‖;
there is no clean pass, so the reported loss is the loss at the perturbed point (the official code
logs that one too). With BatchNorm: a clean forward-only pass at w first (it updates the running
statistics and gives the reported loss, the clean one), then the gradient pass at the perturbed
point with statistics left alone: 2 forward / 1 backward. The official code updates the statistics
in its single pass, at the perturbed weights, and recomputes them with an extra epoch at the end of
training; the contract here updates them only in a clean pass. The metric ``perturbed_loss`` is the
loss at the perturbed point in both cases. ρ = 0 is ERM bit for bit.
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
)
from regularizers.registry import register
from regularizers.space import Float, hparam

#: Metric: the loss at the perturbed point w − ρ·v/‖v‖ (at w on the first step).
PERTURBED_LOSS = "perturbed_loss"


@register("msam")
@dataclass
class MSAM(Regularizer):
    """Becker et al. 2024, Alg. 1: ∇L(w − ρ·v/‖v‖) applied at w, v ← μv + g its own momentum buffer.

    Cost: 1 pass (a clean forward more with BatchNorm). Reported loss: at the perturbed point without
    BatchNorm, at w with BatchNorm (module docstring).

    >>> import regularizers
    >>> msam = regularizers.create("msam")
    >>> msam.cost(has_batchnorm=False), msam.cost(has_batchnorm=True)
    (PassCost(forward=1, backward=1), PassCost(forward=2, backward=1))
    """

    perturbation_radius: float = hparam(
        3.0,
        Float(0.1, 10.0, log=True),
        "ρ: L2 length of the step along −v/‖v‖ (official configs and run commands: --rho 3)",
        minimum=0.0,
    )
    momentum: float = hparam(
        0.9,
        Float(0.0, 0.99),
        "μ of the method's own buffer v ← μv + g; match the optimizer's SGD momentum (official configs: 0.9)",
        searched=False,
        minimum=0.0,
        maximum=1.0,
    )

    state = ("momentum_buffer",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.momentum_buffer: list[torch.Tensor] | None = None  # v; None before the first step (v = 0)

    def step(self, closure: BatchClosure) -> StepReport:
        parameters = closure.parameters
        clean = closure(update_bn=True, backward=False) if closure.has_batchnorm else None
        buffer = self.momentum_buffer
        if buffer is None:
            perturbed = closure(update_bn=False)  # v = 0: the gradient at w
        else:
            with torch.no_grad():
                ascent = [v.clone() for v in buffer]
                rescale_(ascent, -self.perturbation_radius, global_norm(buffer))  # −ρ·v/(‖v‖ + 1e-12)
            with perturbed_weights(parameters):
                with torch.no_grad():
                    torch._foreach_add_(parameters, ascent)
                perturbed = closure(update_bn=False)
            del ascent
        with torch.no_grad():
            grads = gradients(parameters)
            for p, g in zip(parameters, grads, strict=True):
                p.grad = g
            if buffer is None:
                self.momentum_buffer = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(buffer, self.momentum)
                torch._foreach_add_(buffer, grads)
        loss = clean.loss if clean is not None else perturbed.loss
        return self.report(closure, loss, **{PERTURBED_LOSS: perturbed.loss})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=2 if has_batchnorm else 1, backward=1)
