"""The weights a trial evaluates when its method averages them: SWA or EMA on ``torch.optim.swa_utils``.

The hyperparameters and the maths are in :mod:`regularizers.averaging`; this module runs them in
the loop. The trainer asks :class:`WeightAverager` three things: which scheduler sets the
learning rate this step (SWA switches to ``SWALR`` from its start epoch), what to do after each
optimizer step (EMA: update) and after each epoch (SWA: take a snapshot, then recompute the
averaged model's BatchNorm statistics with ``update_bn``), and which module to evaluate (the
average, once it holds anything; the trained weights before). Everything it keeps travels in the
trial's checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from bench.data.loader import Batches
from regularizers.averaging import EMA, SWA, TRAINED, Averaging
from regularizers.base import batchnorm_modules


class WeightAverager:
    """The running average of one trial's weights.

    ``bn_batches`` iterates the training split for the SWA BatchNorm recomputation (in order,
    without augmentation: it draws no random numbers, so averaging leaves the training trajectory
    as the recipe has it); ``autocast`` is the loop's precision context.
    """

    def __init__(
        self,
        averaging: Averaging,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        steps_per_epoch: int,
        peak_learning_rate: float,
        bn_batches: Batches,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    ) -> None:
        self.averaging = averaging
        self.kind = averaging.kind
        self._optimizer = optimizer
        self._steps_per_epoch = steps_per_epoch
        self._bn_batches = bn_batches
        self._autocast = autocast
        self._recompute_bn = isinstance(averaging, SWA) and bool(batchnorm_modules(model))
        if isinstance(averaging, EMA):
            # Buffers averaged too (timm's ModelEmaV2): no BatchNorm recomputation needed.
            self.average = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(averaging.ema_decay), use_buffers=True
            )
            self.start_epoch = 0
        elif isinstance(averaging, SWA):
            self.average = AveragedModel(model)
            self.start_epoch = averaging.start_epoch(epochs)
            self._swa_lr = averaging.swa_lr * peak_learning_rate
        else:
            raise TypeError(f"unknown weight averaging {type(averaging).__name__}")
        self.scheduler: SWALR | None = None

    # --- the loop's questions ----------------------------------------------------------------

    def scheduler_for(self, epoch: int) -> SWALR | None:
        """The scheduler that steps after each optimizer step of 0-based ``epoch`` instead of the
        recipe's, or ``None`` (the recipe's). SWA anneals (cosine, over one epoch) to α_swa from its
        start epoch on, as ``SWALR`` does; it is made on first use (its construction reads the
        learning rate the recipe reached)."""
        if not isinstance(self.averaging, SWA) or epoch < self.start_epoch:
            return None
        if self.scheduler is None:
            self.scheduler = SWALR(
                self._optimizer, swa_lr=self._swa_lr, anneal_epochs=self._steps_per_epoch, anneal_strategy="cos"
            )
        return self.scheduler

    def after_step(self, model: nn.Module) -> None:
        if isinstance(self.averaging, EMA):
            self.average.update_parameters(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> int:
        """SWA's snapshot at the end of 0-based ``epoch`` (from its start epoch on) and the
        BatchNorm recomputation; returns the forward passes that took (counted as the trial's)."""
        if not isinstance(self.averaging, SWA) or epoch < self.start_epoch:
            return 0
        self.average.update_parameters(model)
        if not self._recompute_bn:
            return 0
        with torch.no_grad(), self._autocast():
            update_bn(((inputs,) for inputs, _ in self._bn_batches), self.average.module)
        return len(self._bn_batches)

    @property
    def ready(self) -> bool:
        """Whether the average holds any weights yet (before that the trained ones are evaluated)."""
        return int(self.average.n_averaged) > 0

    @property
    def module(self) -> nn.Module:
        return self.average.module

    @property
    def evaluated_weights(self) -> str:
        """What the rows record: ``swa``/``ema`` once the average is evaluated, else ``trained``."""
        return self.kind if self.ready else TRAINED

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "average": self.average.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], epoch: int) -> None:
        """Restore; ``epoch`` is the 0-based epoch the trial resumes with (its SWALR is rebuilt first)."""
        self.average.load_state_dict(state["average"])
        if state["scheduler"] is not None:
            scheduler = self.scheduler_for(epoch)
            assert scheduler is not None, "a checkpoint with an SWA scheduler resumes inside the SWA phase"
            scheduler.load_state_dict(state["scheduler"])
