"""Sharpness-aware minimization (SAM) and its adaptive variant (ASAM), with two shared options.

SAM, Foret et al., ICLR 2021, eq. 2: ε̂(w) = ρ·g/‖g‖₂ with g = ∇L(w); the update applies
∇L(w)|_{w+ε̂} at w.

ASAM, Kwon et al., ICML 2021, eq. 9 with the element-wise operator T_w = |w| + η:
ε̂ = ρ·T_w²·g / ‖T_w·g‖₂. With η → ∞ relative to |w| it reduces to SAM up to the scale of ρ.

Which tensors get T_w = |w| + η is where implementations differ (``adaptive_tensors``):

* ``"weights"`` (default): the authors' official code (SamsungLabs/ASAM, ``asam.py``) applies it
  to parameters whose name contains ``weight`` (convolution and linear weights, BatchNorm scale)
  and uses T = 1 for the others (biases, BatchNorm shift). Its norm guard is 1e-16 (``norm_epsilon``).
* ``"all"``: T_w = |w| + η on every tensor. With ``eta = 0`` this is the widely used PyTorch port
  (davda54/sam, ``adaptive=True``), whose norm guard is 1e-12 (a relative difference below 1e-11
  for ‖T·g‖ ≥ 0.1, under float32 resolution).

Options of both (``searched=False``):

* ``micro_batch_size`` = m > 0, m-sharpness (Foret et al. 2021, §4 by the section number recalled
  here, not verified: paper text not available offline; Andriushchenko & Flammarion, ICML 2022,
  "Towards understanding sharpness-aware minimization", m-SAM): the batch is split into
  consecutive micro-batches of m samples (the last may be shorter); micro-batch i gets its own ascent
  ε_i from its own clean gradient, and the applied gradient is Σ_i (m_i/B)·∇L_i(w + ε_i), the mean of
  the perturbed micro-batch gradients (weighted by size when the last one is shorter). Every pass of
  micro-batch i uses its own batch statistics, as m-sharpness on m samples per device does. Cost in
  full-batch-equivalent passes (:meth:`BatchClosure.micro_batches`): 2 forward/2 backward; with
  running statistics one more forward on the whole batch, so that they are updated once from the
  whole batch as with every other method (3/2). Small m runs slower than its pass count: m-sample
  passes use an accelerator poorly. One micro-batch (m ≥ B) gives SAM's gradient bit for bit. With
  m-sharpness the ``grad_norm`` metric is the size-weighted mean of the micro-batch gradient norms.
* ``perturbed_layers = "normalization"``, SAM-ON (Mueller, Vlaar, Rolnick and Hein, NeurIPS 2023,
  "Normalization Layers Are All That Sharpness-Aware Minimization Needs"; github.com/mueller-mp/SAM-ON):
  only the affine parameters of normalization layers are perturbed, with the ascent computed and
  normalized over them alone; the gradient at that point is applied to every parameter. The official
  code picks the tensors by *name* (``norm`` or ``bn`` in it); here they are picked by *module type*
  (BatchNorm/SyncBatchNorm/InstanceNorm, LayerNorm, GroupNorm, RMSNorm), whatever the names. On a model
  without such layers nothing is perturbed and the second pass runs at w itself, returning the clean
  gradient bit for bit: it still runs so that the cost (2/2) does not depend on the model, which
  :meth:`cost` cannot see. The norm guards stay each method's (SAM 1e-12, ASAM ``norm_epsilon``; the
  SAM-ON code adds 1e-16 to both). The radius that suits so few tensors is much larger (the SAM-ON
  README runs ASAM-ON with ρ = 10): set ``perturbation_radius`` and its range for this option.
  Sources: checked against the official code (``sam_on.py``, classes ``SAM_ON`` and ``ASAM_ON``) and
  its README; the paper (arXiv 2306.04226) was not available offline, so no equation of it is cited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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
from regularizers.space import Choice, Float, Int, hparam

GRAD_NORM = "grad_norm"

#: ``perturbed_layers``: every trainable tensor (SAM/ASAM) or normalization layers only (SAM-ON).
#: ``ALL`` is also ASAM's ``adaptive_tensors`` option "T = |w| + η on every tensor".
ALL = "all"
NORMALIZATION = "normalization"

#: Module types whose own parameters SAM-ON perturbs (``_NormBase``: BatchNorm, SyncBatchNorm, InstanceNorm).
NORMALIZATION_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def ascend_and_regrad(
    closure: BatchClosure, ascent: list[Tensor], parameters: Sequence[nn.Parameter] | None = None
) -> None:
    """Evaluate the gradient at w + ascent, leave it in ``p.grad``, restore w exactly.

    The shared second half of every "gradient at a perturbed point" method. ``ascent`` applies to
    ``parameters`` (default: all of ``closure.parameters``); an empty list evaluates it at w itself.
    """
    moved = closure.parameters if parameters is None else list(parameters)
    with perturbed_weights(moved) if moved else contextlib.nullcontext():
        if moved:
            with torch.no_grad():
                torch._foreach_add_(moved, ascent)
        zero_grads(closure.parameters)
        closure(update_bn=False)


def micro_batch_size_hparam() -> int:
    return hparam(
        0,
        Int(0, 256),
        "m-sharpness: a separate ascent per micro-batch of m samples, their perturbed gradients "
        "averaged (Foret et al. 2021); 0 = off (the whole batch)",
        searched=False,
        minimum=0,
    )


def perturbed_layers_hparam() -> str:
    return hparam(
        ALL,
        Choice((ALL, NORMALIZATION)),
        "tensors the ascent moves: 'all', or 'normalization' = affine parameters of normalization "
        "layers only (SAM-ON, Mueller et al. 2023)",
        searched=False,
    )


class _SharpnessAware(Regularizer):
    """The step SAM and ASAM share: clean gradient, the subclass's :meth:`ascent`, the gradient at
    w + ascent, on the whole batch or per micro-batch, on every tensor or on normalization layers.

    Not a dataclass: each subclass declares the fields, in its own order.
    """

    perturbation_radius: float
    micro_batch_size: int
    perturbed_layers: str

    def __post_init__(self) -> None:
        super().__post_init__()
        # Parameter-list caches (the loop passes the same list every step): not state.
        self._perturbed: tuple[list[nn.Parameter], list[int]] | None = None

    def ascent(self, closure: BatchClosure, indices: list[int], grads: list[Tensor], norm: Tensor) -> list[Tensor]:
        """The ascent of ``closure.parameters[i]`` for i in ``indices``, from their clean gradients
        ``grads`` (which it may overwrite) whose global norm is ``norm``."""
        raise NotImplementedError

    def perturbed_indices(self, closure: BatchClosure) -> list[int]:
        """Positions in ``closure.parameters`` of the tensors the ascent moves (``perturbed_layers``)."""
        if self._perturbed is None or self._perturbed[0] is not closure.parameters:
            if self.perturbed_layers == ALL:
                indices = list(range(len(closure.parameters)))
            else:
                owned = {
                    id(p)
                    for module in closure.model.modules()
                    if isinstance(module, NORMALIZATION_LAYERS)
                    for p in module.parameters(recurse=False)
                }
                indices = [i for i, p in enumerate(closure.parameters) if id(p) in owned]
            self._perturbed = (closure.parameters, indices)
        return self._perturbed[1]

    def sharpness_gradient(self, closure: BatchClosure) -> Tensor:
        """From the clean gradient in ``p.grad``: ``p.grad`` ← ∇L(w + ε), w restored. Returns ‖∇L(w)‖₂."""
        parameters, grads = closure.parameters, gradients(closure.parameters)
        norm = global_norm(grads)  # before `ascent` may overwrite grads
        indices = self.perturbed_indices(closure)
        if len(indices) == len(parameters):
            ascend_and_regrad(closure, self.ascent(closure, indices, grads, norm))
        else:  # SAM-ON: the ascent over the normalization parameters alone (none: at w itself)
            selected = [grads[i] for i in indices]
            ascent = self.ascent(closure, indices, selected, global_norm(selected)) if indices else []
            ascend_and_regrad(closure, ascent, [parameters[i] for i in indices])
        return norm

    def step(self, closure: BatchClosure) -> StepReport:
        if self.micro_batch_size == 0:
            clean = closure(update_bn=True)
            return self.report(closure, clean.loss, **{GRAD_NORM: self.sharpness_gradient(closure).detach()})
        return self.m_sharpness_step(closure)

    def m_sharpness_step(self, closure: BatchClosure) -> StepReport:
        parameters, batch = closure.parameters, closure.targets.shape[0]
        loss = None
        if closure.has_batchnorm:  # the running statistics see the whole batch once (module docstring)
            with torch.no_grad():
                loss = closure(update_bn=True, backward=False).loss
        total: list[Tensor] = []
        losses, norms = [], []
        for view in closure.micro_batches(self.micro_batch_size):
            weight = view.targets.shape[0] / batch
            zero_grads(parameters)
            losses.append(view(update_bn=False).loss * weight)
            norms.append(self.sharpness_gradient(view).detach() * weight)
            with torch.no_grad():
                if not total:
                    total = [g * weight for g in gradients(parameters)] if weight != 1.0 else gradients(parameters)
                else:
                    torch._foreach_add_(total, gradients(parameters), alpha=weight)
        for p, g in zip(parameters, total, strict=True):
            p.grad = g
        if loss is None:
            loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        grad_norm = norms[0] if len(norms) == 1 else torch.stack(norms).sum()
        return self.report(closure, loss, **{GRAD_NORM: grad_norm})

    def cost(self, has_batchnorm: bool) -> PassCost:
        if self.micro_batch_size and has_batchnorm:
            return PassCost(forward=3, backward=2)  # + the whole-batch forward for the running statistics
        return PassCost(forward=2, backward=2)


@register("sam")
@dataclass
class SAM(_SharpnessAware):
    """Foret et al. 2021, eq. 2: the gradient at w + ρ·∇L/‖∇L‖₂, applied at w. Cost: 2 passes.

    Options (module docstring): m-sharpness (``micro_batch_size``), SAM-ON (``perturbed_layers``).
    """

    perturbation_radius: float = hparam(
        0.05, Float(0.01, 0.5, log=True), "ρ: L2 radius of the ascent step", minimum=0.0
    )
    micro_batch_size: int = micro_batch_size_hparam()
    perturbed_layers: str = perturbed_layers_hparam()

    def ascent(self, closure: BatchClosure, indices: list[int], grads: list[Tensor], norm: Tensor) -> list[Tensor]:
        # The clean gradient is not needed again: scale it in place into the ascent step.
        rescale_(grads, self.perturbation_radius, norm)
        return grads


#: ``ASAM.adaptive_tensors``: T = |w| + η on tensors named ``*weight*`` only (authors' code) or on all.
WEIGHTS = "weights"

#: The norm guard of the authors' ASAM code (SamsungLabs/ASAM, asam.py): ``norm_epsilon``'s default.
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
class ASAM(_SharpnessAware):
    """Kwon et al. 2021, eq. 9: ε = ρ·T²g/‖Tg‖₂ with T = |w| + η (element-wise). Cost: 2 passes.

    ``adaptive_tensors`` picks the tensors T = |w| + η applies to (T = 1 elsewhere): ``"weights"``
    as in the authors' code, ``"all"`` as in davda54/sam's ``adaptive=True`` (with ``eta=0``).
    Options shared with SAM (module docstring): ``micro_batch_size``, ``perturbed_layers``.

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
    norm_epsilon: float = hparam(
        ASAM_NORM_EPSILON,
        Float(1e-16, 1e-12, log=True),
        "guard added to ‖T·g‖ (SamsungLabs/ASAM: 1e-16; davda54/sam: 1e-12; 0 divides exactly)",
        searched=False,
        minimum=0.0,
    )
    micro_batch_size: int = micro_batch_size_hparam()
    perturbed_layers: str = perturbed_layers_hparam()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._mask_cache: tuple[list[nn.Parameter], list[bool]] | None = None

    def _adaptive(self, closure: BatchClosure) -> list[bool]:
        if self.adaptive_tensors == ALL:
            return [True] * len(closure.parameters)
        if self._mask_cache is None or self._mask_cache[0] is not closure.parameters:
            self._mask_cache = (closure.parameters, adaptive_mask(closure))
        return self._mask_cache[1]

    def ascent(self, closure: BatchClosure, indices: list[int], grads: list[Tensor], norm: Tensor) -> list[Tensor]:
        mask = self._adaptive(closure)
        adaptive = [j for j, i in enumerate(indices) if mask[i]]  # positions in `grads`
        with torch.no_grad():
            # T·g and T²·g with T = 1 outside `adaptive`; multi-tensor ops on the adaptive subset
            # (torch's _foreach ops reject an empty list).
            scaled = list(grads)
            operator: list[Tensor] = []
            if adaptive:
                operator = torch._foreach_abs([closure.parameters[indices[j]].detach() for j in adaptive])
                torch._foreach_add_(operator, self.eta)
                for j, value in zip(adaptive, torch._foreach_mul([grads[j] for j in adaptive], operator), strict=True):
                    scaled[j] = value
            scaled_norm = global_norm(scaled)
            fresh = set(adaptive)  # T·g of these is already a new tensor; the rest still alias `grads`
            ascent = [t if j in fresh else t.clone() for j, t in enumerate(scaled)]
            if adaptive:
                torch._foreach_mul_([ascent[j] for j in adaptive], operator)
            rescale_(ascent, self.perturbation_radius, scaled_norm, epsilon=self.norm_epsilon)
        return ascent
