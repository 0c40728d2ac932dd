"""Sharpness-aware training for free (SAF) and its memory-efficient variant (MESA).

Du, Zhou, Feng, Tan and Zhou, "Sharpness-Aware Training for Free", NeurIPS 2022 (arXiv 2205.14083),
official code github.com/AngusDujw/SAF (``SAF_train.py``, ``MESA_train.py``). Both add to the training
loss L(w) a *trajectory loss*, a distillation term towards reference outputs ŷ of the same samples:

    L(w) + λ·τ²·(1/|B|)·Σ_{x∈B} KL( softmax(ŷ(x)/τ) ‖ softmax(f_w(x)/τ) ),

differentiated through the current outputs f_w(x) only (ŷ is a constant). The KL direction, the
softmax temperature τ on both sides and the τ² factor are the official code's (``F.kl_div`` with the
current log-probabilities as input and the reference probabilities as target, ``* temperature**2``).

Sources: equation and algorithm numbers not verified: the paper text was not available offline, so no
equation of the paper is cited here and the formula above is the official code's
(``SAF_train.py`` and ``MESA_train.py``, ``train_one_epoch``), not checked against the paper's own.

* SAF: ŷ(x) = the outputs the model produced for x, Ẽ epochs earlier (``past_epochs``), stored per
  sample. One forward/backward per step (1/1): the outputs of the training pass are recorded.
* MESA: ŷ(x) = the outputs of an exponential moving average of the weights, w̄ ← β·w̄ + (1−β)·w after
  every step, from w̄ = w at the first step. One extra forward with w̄ and no backward (2/1), run
  every step as in the official code (which also logs the EMA model's predictions during the delay).

The penalty starts after a delay: the official test is ``epoch > kl_start_epoch`` with 0-based
epochs and ``--kl_start_epoch 5`` (README, run.sh), so epochs 0-5 train without it:
``delay_epochs = 6`` here. The official ``kl_end_epoch`` (300 in ``SAF_train.py``, 360 in
``MESA_train.py``, beyond run.sh's 90 epochs) is left out: the penalty stays on to the end.

Where this implementation differs from the official code, and why:

* SAF's table (``outputs``) holds, for every position of the training split, the outputs of the
  last Ẽ + 1 epochs (a ring, as the official ``train_logits`` array): N × (Ẽ+1) × classes values in
  float32 (or the logits' dtype when wider), on the logits' device, saved in every checkpoint
  (CIFAR-100: 50 000 × 4 × 100 × 4 B = 80 MB). It grows with the training split: rows are added when
  a larger sample id shows up (the largest id is read from the loop's ids, which stay on the CPU:
  no host-device sync; ids given on a GPU would cost one per step). ``recorded_epoch`` stamps each entry with its epoch:
  a sample without an output from exactly Ẽ epochs ago (it fell in the batch the loader dropped that
  epoch, or the delay is shorter than Ẽ) gets no penalty, where the official code would compare with
  whatever the slot held (an older epoch's outputs, or zeros: the uniform distribution). The batch
  mean still divides by |B|.
* MESA's EMA averages the trainable parameters and the floating-point buffers (running statistics)
  and runs its forward in evaluation mode, as timm's ``ModelEmaV2`` that the official code uses;
  frozen parameters are the live ones (they never change); integer buffers are left out (unused in
  evaluation mode).
* Official λ defaults differ between files: argparse 0.16 (SAF) and 0.3 (MESA); README 0.3 (SAF) and
  0.8 (MESA), as run.sh (its SAF line, which calls ``SAF.py``, is commented out). The README's values
  are the defaults here. Ẽ: argparse 3, README "2/3", run.sh's commented-out SAF line 2 (ImageNet); 3
  here. τ = 5 everywhere. β: timm's ``--model-ema-decay`` default 0.9998
  (run.sh keeps it). β is per *step*: over a short run the average stays close to the initial weights
  (0.9998^2340 ≈ 0.63 after 6 CIFAR epochs of 390 steps), so consider a smaller β for short budgets.

λ = 0 is ERM: one clean pass, nothing recorded, no sample ids needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regularizers.base import BatchClosure, Objective, PassCost, Regularizer, StepReport, perturbed_weights
from regularizers.registry import register
from regularizers.space import Float, Int, hparam

#: Metric: the unweighted trajectory KL (batch mean; 0 during the delay).
TRAJECTORY_KL = "trajectory_kl"
#: Metric (SAF): fraction of the batch with a stored output from exactly Ẽ epochs ago (0 during the delay).
REFERENCE_FRACTION = "reference_fraction"

#: ``recorded_epoch`` of a table entry never written.
_NEVER = torch.iinfo(torch.int32).min


def trajectory_objective(
    loss_fn: Objective,
    reference: Tensor,
    weight: float,
    temperature: float,
    record: list[Tensor],
    mask: Tensor | None = None,
) -> Objective:
    """``loss_fn(logits, targets) + weight·τ²·mean_x KL(softmax(reference/τ) ‖ softmax(logits/τ))``.

    ``mask`` (0/1 per sample) drops samples without a reference from the sum; the mean still
    divides by the batch size. The softmaxes run in float32 or wider. ``record`` receives the
    detached training loss and the detached unweighted KL.
    """
    dtype = torch.promote_types(reference.dtype, torch.float32)
    target = F.log_softmax(reference.detach().to(dtype) / temperature, dim=-1)

    def objective(logits: Tensor, targets: Tensor) -> Tensor:
        loss = loss_fn(logits, targets)
        log_probs = F.log_softmax(logits.to(dtype) / temperature, dim=-1)
        per_sample = F.kl_div(log_probs, target, reduction="none", log_target=True).sum(dim=-1)
        if mask is not None:
            per_sample = per_sample * mask
        kl = per_sample.sum() / per_sample.shape[0]
        record.extend((loss.detach(), kl.detach()))
        return loss + kl * (weight * temperature * temperature)

    return objective


class _TrajectoryPenalty(Regularizer):
    """What SAF and MESA share: λ, τ, the delay, and the penalized pass. Subclasses declare the fields."""

    penalty_weight: float
    temperature: float
    delay_epochs: int

    def __post_init__(self) -> None:
        super().__post_init__()
        # Set by start_epoch before every epoch (a resumed trial too): not state.
        self._epoch = 0

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        self._epoch = epoch

    def recipe_warnings(self, epochs: int, steps_per_epoch: int) -> list[str]:
        warnings = super().recipe_warnings(epochs, steps_per_epoch)
        if self.penalty_weight > 0 and self.delay_epochs >= epochs:
            warnings.append(
                f"its penalty starts after epoch {self.delay_epochs} (delay_epochs) but trials train {epochs} "
                "epochs: it is ERM here"
            )
        return warnings

    @property
    def penalty_active(self) -> bool:
        """False during the delay (epochs 0 … delay_epochs − 1, counted by :meth:`start_epoch`)."""
        return self._epoch >= self.delay_epochs

    def penalized_pass(
        self, closure: BatchClosure, reference: Tensor | None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The training pass (running statistics updated), with the trajectory term when ``reference``
        is given. Returns (training loss, logits, unweighted KL), detached."""
        if reference is None:
            out = closure(update_bn=True)
            return out.loss, out.logits, out.loss.new_zeros(())
        record: list[Tensor] = []
        objective = trajectory_objective(
            closure.loss_fn, reference, self.penalty_weight, self.temperature, record, mask
        )
        out = closure(update_bn=True, objective=objective)
        return record[0], out.logits, record[1]


@register("saf")
@dataclass
class SAF(_TrajectoryPenalty):
    """Du et al. 2022, trajectory loss: L + λτ²·KL(softmax(f_{Ẽ epochs ago}/τ) ‖ softmax(f_w/τ)). Cost: 1 pass.

    Needs ``closure.sample_ids`` (the loop passes them); state: the per-sample table of past
    outputs, which grows with the training split (module docstring).

    >>> import regularizers
    >>> regularizers.create("saf").cost(has_batchnorm=True)
    PassCost(forward=1, backward=1)
    """

    # Not annotated: the base class declares it, and an annotation would list it among the fields.
    data_parallel_refusal = (
        "its table of each sample's past outputs lives in one worker's memory, while a sample's batch "
        "shard lands on another worker from one epoch to the next"
    )

    penalty_weight: float = hparam(
        0.3,
        Float(0.05, 2.0, log=True),
        "λ: weight of the trajectory loss (AngusDujw/SAF README: 0.3 for SAF)",
        minimum=0.0,
    )
    temperature: float = hparam(
        5.0, Float(1.0, 10.0), "τ: softmax temperature of both sides (official: 5)", searched=False, minimum=1e-3
    )
    past_epochs: int = hparam(
        3,
        Int(1, 5),
        "Ẽ: compare with the outputs of Ẽ epochs ago (official argparse: 3; README 2/3)",
        searched=False,
        minimum=1,
    )
    delay_epochs: int = hparam(
        6,
        Int(0, 100),
        "no penalty during the first epochs (official: epoch > kl_start_epoch = 5, 0-based: 6 epochs)",
        searched=False,
        minimum=0,
    )

    state = ("outputs", "recorded_epoch")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.outputs: Tensor | None = None  # [sample, epoch % (Ẽ + 1), class]
        self.recorded_epoch: Tensor | None = None  # [sample, epoch % (Ẽ + 1)]: the epoch written, or _NEVER

    def _reference(self, ids: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Each sample's stored outputs from exactly Ẽ epochs ago, and the 0/1 mask of those that have one."""
        if not self.penalty_active or self.outputs is None or self.recorded_epoch is None:
            return None, None
        self.outputs, self.recorded_epoch = self.outputs.to(ids.device), self.recorded_epoch.to(ids.device)
        known = ids < self.outputs.shape[0]
        rows = torch.where(known, ids, 0)
        then = self._epoch - self.past_epochs
        slot = then % (self.past_epochs + 1)
        reference = self.outputs[rows, slot]
        return reference, (known & (self.recorded_epoch[rows, slot] == then)).to(reference.dtype)

    def _record(self, ids: Tensor, logits: Tensor, top: int) -> None:
        """Store this epoch's outputs of the batch, adding rows for ids beyond the table (``top``:
        the largest id, read where the ids were made)."""
        slots, classes = self.past_epochs + 1, logits.shape[-1]
        if self.outputs is None or self.recorded_epoch is None:
            dtype = torch.promote_types(logits.dtype, torch.float32)
            self.outputs = logits.new_zeros((0, slots, classes), dtype=dtype)
            self.recorded_epoch = torch.full((0, slots), _NEVER, dtype=torch.int32, device=logits.device)
        if self.outputs.shape[1:] != (slots, classes):
            raise ValueError(
                f"SAF: the stored outputs have shape {tuple(self.outputs.shape[1:])} per sample, this step's "
                f"{(slots, classes)} (past_epochs + 1, classes)"
            )
        self.outputs, self.recorded_epoch = self.outputs.to(ids.device), self.recorded_epoch.to(ids.device)
        missing = top + 1 - self.outputs.shape[0]
        if missing > 0:
            self.outputs = torch.cat([self.outputs, self.outputs.new_zeros((missing, slots, classes))])
            self.recorded_epoch = torch.cat(
                [self.recorded_epoch, self.recorded_epoch.new_full((missing, slots), _NEVER)]
            )
        slot = self._epoch % slots
        self.outputs[ids, slot] = logits.to(self.outputs.dtype)
        self.recorded_epoch[ids, slot] = self._epoch

    def step(self, closure: BatchClosure) -> StepReport:
        if self.penalty_weight == 0.0:
            return self.report(closure, closure(update_bn=True).loss)
        if closure.sample_ids is None:
            raise ValueError(
                "SAF needs closure.sample_ids (the batch's positions in the training split) to store each "
                "sample's outputs; build the BatchClosure with sample_ids="
            )
        # The loop's ids are on the CPU (DeviceLoader.indexed): their largest is read without a sync.
        top = int(closure.sample_ids.max())
        ids = closure.sample_ids.to(closure.inputs.device, non_blocking=True)
        reference, mask = self._reference(ids)
        loss, logits, kl = self.penalized_pass(closure, reference, mask)
        self._record(ids, logits, top)
        fraction = loss.new_zeros(()) if mask is None else mask.mean().to(loss.dtype)
        return self.report(closure, loss, **{TRAJECTORY_KL: kl, REFERENCE_FRACTION: fraction})

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)


@contextlib.contextmanager
def _evaluated_with(model: nn.Module, buffers: list[Tensor], values: list[Tensor]) -> Iterator[None]:
    """``model`` in evaluation mode with ``buffers`` holding ``values``; mode and buffers restored exactly."""
    training = model.training
    saved = [b.clone() for b in buffers]
    try:
        with torch.no_grad():
            if buffers:
                torch._foreach_copy_(buffers, values)
        model.eval()
        yield
    finally:
        model.train(training)
        with torch.no_grad():
            if buffers:
                torch._foreach_copy_(buffers, saved)


@register("mesa")
@dataclass
class MESA(_TrajectoryPenalty):
    """Du et al. 2022 (MESA): SAF's trajectory loss towards the outputs of an EMA of the weights. Cost: 2F/1B.

    >>> import regularizers
    >>> regularizers.create("mesa").cost(has_batchnorm=False)
    PassCost(forward=2, backward=1)
    """

    penalty_weight: float = hparam(
        0.8,
        Float(0.05, 2.0, log=True),
        "λ: weight of the trajectory loss (AngusDujw/SAF README and run.sh: 0.8 for MESA)",
        minimum=0.0,
    )
    temperature: float = hparam(
        5.0, Float(1.0, 10.0), "τ: softmax temperature of both sides (official: 5)", searched=False, minimum=1e-3
    )
    ema_decay: float = hparam(
        0.9998,
        Float(0.99, 0.9999),
        "β: per-step decay of the weight average (timm --model-ema-decay default, kept by run.sh)",
        searched=False,
        minimum=0.0,
        maximum=1.0,
    )
    delay_epochs: int = hparam(
        6,
        Int(0, 100),
        "no penalty during the first epochs (official: epoch > kl_start_epoch = 5, 0-based: 6 epochs)",
        searched=False,
        minimum=0,
    )

    state = ("ema_parameters", "ema_buffers")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ema_parameters: list[Tensor] | None = None  # aligned with closure.parameters
        self.ema_buffers: list[Tensor] | None = None  # aligned with the model's floating-point buffers

    def _averages(self, parameters: list[nn.Parameter], buffers: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """w̄ after folding in the current weights (w̄ = w at the first step)."""
        current = [p.detach() for p in parameters]
        if self.ema_parameters is None or self.ema_buffers is None:
            self.ema_parameters = [t.clone() for t in current]
            self.ema_buffers = [b.detach().clone() for b in buffers]
            return self.ema_parameters, self.ema_buffers
        stored = [t.shape for t in self.ema_parameters + self.ema_buffers]
        if stored != [t.shape for t in current + buffers]:
            raise ValueError("MESA: the stored weight average does not match the model's parameters and buffers")
        device = current[0].device
        self.ema_parameters = [t.to(device) for t in self.ema_parameters]
        self.ema_buffers = [t.to(device) for t in self.ema_buffers]
        with torch.no_grad():
            # β·w̄ + (1 − β)·w as w̄ + (1 − β)(w − w̄).
            torch._foreach_lerp_(self.ema_parameters, current, 1.0 - self.ema_decay)
            if buffers:
                torch._foreach_lerp_(self.ema_buffers, [b.detach() for b in buffers], 1.0 - self.ema_decay)
        return self.ema_parameters, self.ema_buffers

    def step(self, closure: BatchClosure) -> StepReport:
        if self.penalty_weight == 0.0:
            return self.report(closure, closure(update_bn=True).loss)
        parameters = closure.parameters
        buffers = [b for b in closure.model.buffers() if b.is_floating_point()]
        ema_parameters, ema_buffers = self._averages(parameters, buffers)
        with perturbed_weights(parameters), _evaluated_with(closure.model, buffers, ema_buffers), torch.no_grad():
            torch._foreach_copy_(parameters, ema_parameters)
            teacher = closure(backward=False)
        reference = teacher.logits if self.penalty_active else None
        loss, _, kl = self.penalized_pass(closure, reference)
        return self.report(closure, loss, **{TRAJECTORY_KL: kl})

    def cost(self, has_batchnorm: bool) -> PassCost:
        if self.penalty_weight == 0.0:
            return PassCost(forward=1, backward=1)
        return PassCost(forward=2, backward=1)
