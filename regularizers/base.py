"""The regularizer contract: one batch in, the gradient to apply out.

The training loop builds a :class:`BatchClosure` for each batch and hands it to
:meth:`Regularizer.step`. The method calls the closure as often as it needs (ERM once, SAM twice,
AMP N+1 times, NSO 2k times), leaves the gradient to apply in ``p.grad``, restores the weights
exactly (from a copy, never by subtraction) and returns a :class:`StepReport`. The optimizer step
stays in the loop, so every method works with every ``torch.optim`` optimizer, and the
normalization-statistics and mixed-precision details live in the closure, once.

**Gradient rule.** ``step`` starts from whatever the loop left in ``p.grad`` (stale gradients
of the previous step, or none) and leaves exactly the gradient to apply. The closure enforces the
first half: its first pass of a step clears ``p.grad`` (sets it to ``None``) before running, so
gradients accumulate only over the passes of this step. A method therefore never reads ``p.grad``
before its first closure call, and two ``erm.step`` calls give the gradient once, not twice.
:func:`regularizers.testing.check_regularizer` checks the rule by starting a step from garbage
gradients and comparing with a step started from none.

**Running statistics.** Every normalization layer that tracks them (``torch.nn`` ``_NormBase``
with ``track_running_stats``: BatchNorm, SyncBatchNorm, InstanceNorm) has them updated only by the
pass called with ``update_bn=True`` (the clean pass). "BatchNorm" in names here (``has_batchnorm``,
:func:`batchnorm_modules`) means any such layer.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from regularizers.space import validate

#: ``objective(logits, targets) -> scalar``: what a pass differentiates. ``None`` means the
#: training loss the loop configured (cross-entropy, with label smoothing if set).
Objective = Callable[[Tensor, Tensor], Tensor]

#: ``sync(parameters)``: replaces each ``p.grad`` by its batch-weighted mean over the data-parallel
#: workers of a trial (``bench.training.parallel``). Called after every whole-batch backward pass.
GradientSync = Callable[[Sequence[nn.Parameter]], None]


@dataclass(frozen=True)
class PassCost:
    """Forward and backward passes the method's optimizer steps cost.

    ``forward``/``backward`` are the passes of ``period`` consecutive steps together: 1 for a
    method that runs the same passes every step; k for one whose pattern repeats every k steps
    (LookSAM's full SAM step every k-th step: ``PassCost(k + 1, k + 1, period=k)``, i.e. 1 + 1/k
    of each per step). :attr:`per_step` is the mean the budget and the records use.
    """

    forward: int
    backward: int
    period: int = 1

    def __post_init__(self) -> None:
        if self.period < 1:
            raise ValueError(f"PassCost.period must be at least 1, got {self.period}")

    def __repr__(self) -> str:
        period = "" if self.period == 1 else f", period={self.period}"
        return f"PassCost(forward={self.forward}, backward={self.backward}{period})"

    @property
    def per_step(self) -> int | float:
        """Mean forward + backward passes per optimizer step: an int when whole (4, not 4.0, as
        budgets and records have always written it), else a float (LookSAM k=5: 2.4)."""
        total = self.forward + self.backward
        return total // self.period if total % self.period == 0 else total / self.period


@dataclass(frozen=True)
class StepSchedule:
    """Where the training loop is when it asks for a step (:meth:`Regularizer.start_step`).

    ``learning_rate`` is the rate the optimizer applies this step's gradient with;
    ``lr_factor`` is that rate over the recipe's peak (1 at the peak, 0 at the end of a cosine
    decay): GSAM ties its radius ρ_t to it.
    """

    step: int  # optimizer steps already taken in this trial (0-based index of this one)
    total_steps: int
    learning_rate: float
    lr_factor: float


@dataclass
class StepReport:
    """What one :meth:`Regularizer.step` did.

    ``loss`` is the clean training loss at the unperturbed weights, detached and left on the
    device (reading it would force a host-device sync every step). ``metrics`` holds
    method-specific figures (gradient norm, how often a penalty was imposed, ...), also as
    0-dim device tensors.
    """

    loss: Tensor
    forward_passes: int
    backward_passes: int
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class PassOutput:
    """The detached result of one closure call."""

    loss: Tensor
    logits: Tensor


def batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    """Every normalization layer of ``model`` that tracks running statistics.

    ``_NormBase`` is the common base of BatchNorm (1d/2d/3d, lazy, SyncBatchNorm) and InstanceNorm;
    InstanceNorm tracks statistics only with ``track_running_stats=True``, so the others are left out.
    """
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@dataclass
class _PassCount:
    """Samples run forward / backward in one step, shared by a closure and its micro-batch views."""

    batch_size: int
    forward_samples: int = 0
    backward_samples: int = 0
    #: A micro-batch view ran a backward pass since the gradients were last synced.
    unsynced: bool = False

    def passes(self, samples: int) -> int | float:
        """Full-batch-equivalent passes: an int when whole (every pass so far covered the batch)."""
        whole, rest = divmod(samples, self.batch_size)
        return whole if rest == 0 else samples / self.batch_size


class BatchClosure:
    """Forward + backward on one fixed batch, counting its passes.

    Running-statistics policy, the same for every method and every normalization layer that
    tracks them (:func:`batchnorm_modules`): they are updated only by a pass called with
    ``update_bn=True`` (the clean pass). Other passes run in training mode (batch statistics, as
    the papers do) but their running-statistic updates are undone *after* the backward pass:
    restoring before backward would modify tensors autograd saved.

    Gradient rule (module docstring): the first pass through this closure clears ``p.grad`` of
    :attr:`parameters`, so a step never inherits the loop's stale gradients. Later passes
    accumulate into ``p.grad`` as ``loss.backward()`` does; methods clear them with
    :func:`zero_grads` when they need a fresh gradient.

    Passes are counted in samples and reported in *full-batch-equivalent* passes
    (:attr:`forward_passes`, :attr:`backward_passes`): a pass over the whole batch counts 1. The
    only closures that run on part of the batch are the views of :meth:`micro_batches`.

    **Data parallelism.** With ``sync`` (a trial on several workers, each holding a shard of the
    batch), every backward pass of this closure is followed by ``sync``: ``p.grad`` becomes the
    gradient of the whole global batch, the same on every worker, so whatever a method computes
    from it (SAM's ε, a penalty's direction) is what one worker with the global batch computes.
    Micro-batch views do not sync (their perturbations are per slice by definition); the loop
    calls :meth:`sync_gradients` after the step, which syncs what views left.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        loss_fn: Objective,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        parameters: list[nn.Parameter] | None = None,
        batchnorms: list[nn.modules.batchnorm._BatchNorm] | None = None,
        sample_ids: Tensor | None = None,
        sync: GradientSync | None = None,
    ) -> None:
        """``parameters``/``batchnorms`` default to walking ``model``; a training loop that builds a
        closure per step passes them in once computed (:func:`trainable_parameters`,
        :func:`batchnorm_modules`) to keep the walk off the hot path. ``sample_ids`` are the
        positions of the batch's samples in the training split (the training loop passes them;
        ``None`` where unknown): methods that remember per-sample outputs (SAF) key them by it."""
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.sample_ids = sample_ids
        self.loss_fn = loss_fn
        self._autocast = autocast
        self.parameters = trainable_parameters(model) if parameters is None else parameters
        self._batchnorms = batchnorm_modules(model) if batchnorms is None else batchnorms
        self._size = int(targets.shape[0])
        self._count = _PassCount(batch_size=self._size)
        self._sync = sync

    @property
    def forward_passes(self) -> int | float:
        """Forward passes so far this step, in full-batch equivalents (views included)."""
        return self._count.passes(self._count.forward_samples)

    @property
    def backward_passes(self) -> int | float:
        """Backward passes so far this step, in full-batch equivalents (views included)."""
        return self._count.passes(self._count.backward_samples)

    def micro_batches(self, size: int) -> list[BatchClosure]:
        """Views of consecutive slices of ``size`` samples (the last one may be shorter), in order.

        For methods that treat parts of the batch separately (SAM's m-sharpness). A view is a
        closure on its slice (and the slice of :attr:`sample_ids`) with everything else shared:
        model, loss, autocast, parameters, running-statistics policy, and this closure's pass count
        and gradient rule. A pass through a view of m of the B samples counts m/B of a pass, so one
        pass through every view counts as one full-batch pass.
        """
        if size < 1:
            raise ValueError(f"micro-batch size must be at least 1, got {size}")
        views = []
        for start in range(0, self._size, size):
            part = slice(start, start + size)
            view = BatchClosure(
                self.model,
                self.inputs[part],
                self.targets[part],
                self.loss_fn,
                autocast=self._autocast,
                parameters=self.parameters,
                batchnorms=self._batchnorms,
                sample_ids=None if self.sample_ids is None else self.sample_ids[part],
            )
            view._count = self._count
            views.append(view)
        return views

    @property
    def has_batchnorm(self) -> bool:
        """Whether the model has a layer with running statistics (see :func:`batchnorm_modules`)."""
        return bool(self._batchnorms)

    def _start_pass(self) -> None:
        # The gradient rule: the step's first pass starts from zero, whatever the loop left.
        if self._count.forward_samples == 0:
            zero_grads(self.parameters)

    def __call__(
        self,
        *,
        update_bn: bool = False,
        objective: Objective | None = None,
        backward: bool = True,
        full_precision: bool = False,
    ) -> PassOutput:
        """Run one forward (and by default one backward) pass at the current weights.

        ``objective`` replaces the training loss for this pass (NRS differentiates a KL term).
        ``full_precision=True`` runs the pass outside autocast, in the parameters' own dtype
        (float32 or wider): for objectives that compare two forward passes, whose difference
        can be smaller than bf16 rounding (NRS's KL between neighbouring weights).
        """
        self._start_pass()
        with self._batchnorm_policy(update_bn):
            with self._precision(full_precision):
                logits = self.model(self.inputs)
                loss = (objective or self.loss_fn)(logits, self.targets)
            self._count.forward_samples += self._size
            if backward:
                loss.backward()
                self._count.backward_samples += self._size
                self._after_backward()
        return PassOutput(loss=loss.detach(), logits=logits.detach())

    def _after_backward(self) -> None:
        if self._sync is not None:
            self._sync(self.parameters)
            self._count.unsynced = False
        else:
            self._count.unsynced = True

    def sync_gradients(self) -> None:
        """After a step on several workers: sync the gradients micro-batch views left unsynced
        (a no-op on one worker, or when the last backward pass synced already)."""
        if self._sync is not None and self._count.unsynced:
            self._sync(self.parameters)
            self._count.unsynced = False

    def loss_and_logits(self, *, update_bn: bool = False, full_precision: bool = False) -> tuple[Tensor, Tensor]:
        """A forward pass that keeps the graph, for methods that build their own objective.

        Counts as a pass for the gradient rule: the first one clears ``p.grad``. On several
        workers the backward pass the method runs itself is not synced until the step ends
        (:meth:`sync_gradients`): what the method computes from it in between is per worker.
        """
        self._start_pass()
        self._count.unsynced = True
        with self._batchnorm_policy(update_bn), self._precision(full_precision):
            logits = self.model(self.inputs)
            loss = self.loss_fn(logits, self.targets)
        self._count.forward_samples += self._size
        return loss, logits

    def _precision(self, full_precision: bool) -> contextlib.AbstractContextManager[object]:
        if not full_precision:
            return self._autocast()
        # Disables autocast for every device type; a no-op when the loop uses none.
        return torch.autocast(device_type=self.inputs.device.type, enabled=False)

    @contextlib.contextmanager
    def _batchnorm_policy(self, update_bn: bool) -> Iterator[None]:
        if update_bn or not self.model.training or not self._batchnorms:
            yield
            return
        live = [
            buffer
            for bn in self._batchnorms
            for buffer in (bn.running_mean, bn.running_var, bn.num_batches_tracked)
            if buffer is not None
        ]
        saved = [buffer.clone() for buffer in live]
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(live, saved)


# --- small tensor helpers shared by the methods -------------------------------------------------


def zero_grads(parameters: Sequence[nn.Parameter]) -> None:
    """Drop the accumulated gradients (the next backward starts from zero)."""
    for p in parameters:
        p.grad = None


def gradients(parameters: Sequence[nn.Parameter]) -> list[Tensor]:
    """The current gradients, with zeros for parameters the loss did not reach."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of a list of tensors seen as one vector, computed in float32 or wider."""
    if not tensors:
        raise ValueError("global_norm of an empty parameter list")
    norms = torch._foreach_norm([t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors])
    return torch.linalg.vector_norm(torch.stack(norms))


#: Guards divisions by a norm that may vanish (davda54/sam, the widely used PyTorch SAM, adds 1e-12).
NORM_EPSILON = 1e-12


@torch.no_grad()
def rescale_(tensors: Sequence[Tensor], radius: float, norm: Tensor, *, epsilon: float = NORM_EPSILON) -> None:
    """Scale ``tensors`` in place by ``radius / (norm + epsilon)``: to global L2 norm ``radius`` when
    ``norm`` is theirs (SAM's ρ·g/‖g‖), or by another norm (ASAM's ρ·T²g/‖Tg‖).

    ``epsilon = 0`` divides by ``norm`` exactly, as the JAX reference codes of SAM and GNP do; a zero
    ``norm`` then gives a zero step (there is no direction to follow) instead of 0/0.
    """
    if epsilon > 0.0:
        factor = radius / (norm + epsilon)
    else:
        factor = torch.where(norm > 0, radius / norm, torch.zeros_like(norm))
    torch._foreach_mul_(tensors, factor)


class WeightBackup:
    """A copy of the weights, restored bit-exactly with :meth:`restore`.

    Restoring from a copy (not by subtracting the perturbation) is what keeps the weights
    bit-identical: ``(w + e) - e`` differs from ``w`` in floating point.
    """

    def __init__(self, parameters: Sequence[nn.Parameter]) -> None:
        self.parameters = list(parameters)
        with torch.no_grad():
            self.saved = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.parameters, self.saved)


@contextlib.contextmanager
def perturbed_weights(parameters: Sequence[nn.Parameter]) -> Iterator[WeightBackup]:
    """Save the weights, let the caller perturb them, restore them exactly on exit."""
    backup = WeightBackup(parameters)
    try:
        yield backup
    finally:
        backup.restore()


# --- the contract -------------------------------------------------------------------------------


class Regularizer(ABC):
    """Base class of every method. Subclasses are dataclasses whose fields are hyperparameters.

    Subclasses implement :meth:`step` and :meth:`cost`; :func:`regularizers.register` sets
    :attr:`name`. ``__post_init__`` validates every hyperparameter against the valid values
    declared with :func:`regularizers.space.hparam` (wider than its search range); a subclass
    that defines its own ``__post_init__`` calls ``super().__post_init__()``.

    **State.** A method that keeps anything between steps that changes its later gradients (a
    cached gradient component, a running average, a momentum buffer, a step counter) names the
    attributes holding it in :attr:`state`, and creates them in ``__post_init__``.
    :meth:`state_dict` / :meth:`load_state_dict` save and restore exactly those, so a trial
    resumed from a checkpoint continues bit for bit (the conformance kit checks it: a fresh
    instance loaded with the state must give the same gradients as the original). Values are
    tensors, numbers, ``None`` or lists/tuples/dicts of them (what ``torch.load(weights_only=True)``
    reads). Caches that only save work (ASAM's name mask) are not state.
    """

    name: ClassVar[str] = ""
    #: Attributes that carry state from one step to the next (see the class docstring).
    state: ClassVar[tuple[str, ...]] = ()
    #: Set on the classes the registry composes for ``<method>+swa`` / ``<method>+ema``: the
    #: :mod:`regularizers.averaging` dataclass whose fields this class adds.
    averaging_kind: ClassVar[type | None] = None
    #: Why this method cannot run with its batch sharded over a trial's workers (empty: it can).
    #: A method that keeps per-sample memory (SAF) would see each sample on whichever worker its
    #: batch put it, so its memory would be split between workers.
    data_parallel_refusal: ClassVar[str] = ""

    @property
    def averaging(self) -> Any:
        """The weight averaging the training loop runs on top of this method (a
        :class:`regularizers.averaging.Averaging` built from this instance's fields), or ``None``."""
        if self.averaging_kind is None:
            return None
        return self.averaging_kind(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self.averaging_kind)})

    def __post_init__(self) -> None:
        validate(self)

    @abstractmethod
    def step(self, closure: BatchClosure) -> StepReport:
        """Leave exactly the gradient to apply in ``p.grad`` and the weights exactly as found.

        ``p.grad`` on entry is whatever the loop left; the closure's first pass clears it, so
        never read ``p.grad`` before calling the closure (the gradient rule, module docstring).
        """

    @abstractmethod
    def cost(self, has_batchnorm: bool) -> PassCost:
        """Forward/backward passes :meth:`step` runs per period (the conformance suite checks it)."""

    def start_epoch(self, epoch: int, total_epochs: int) -> None:  # noqa: B027 - optional hook: no-op by default
        """Called by the loop before each epoch (0-based); for schedules such as delayed penalties."""

    def start_step(self, schedule: StepSchedule) -> None:  # noqa: B027 - optional hook: no-op by default
        """Called by the loop before each :meth:`step`; for schedules tied to the learning rate (GSAM)."""

    def recipe_warnings(self, epochs: int, steps_per_epoch: int) -> list[str]:
        """Why this configuration would not be what its name says under a recipe of ``epochs``
        epochs of ``steps_per_epoch`` steps (a penalty that starts after the last epoch, an average
        over more steps than the run has); empty when there is nothing to say. Printed before a run."""
        averaging = self.averaging
        return [] if averaging is None else averaging.recipe_warnings(epochs, steps_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        """A copy of the attributes named in :attr:`state` (tensors cloned, detached)."""
        missing = [key for key in self.state if not hasattr(self, key)]
        if missing:
            raise AttributeError(f"{type(self).__name__} declares state {missing} but has no such attribute")
        return {key: _detached_copy(getattr(self, key)) for key in self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the keys must be exactly :attr:`state`."""
        if set(state) != set(self.state):
            raise ValueError(
                f"{type(self).__name__}: checkpoint state has keys {sorted(state)}, the method declares "
                f"{sorted(self.state)}"
            )
        for key in self.state:
            setattr(self, key, _detached_copy(state[key]))

    def report(self, closure: BatchClosure, clean_loss: Tensor, **metrics: Tensor) -> StepReport:
        """Build the step report from the closure's own pass counters."""
        return StepReport(
            loss=clean_loss,
            forward_passes=closure.forward_passes,
            backward_passes=closure.backward_passes,
            metrics=dict(metrics),
        )


def _detached_copy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)
