"""Weight averaging, composable with every method: ``<method>+swa`` and ``<method>+ema``.

**SWA**, Izmailov et al., UAI 2018, *Averaging Weights Leads to Wider Optima and Better
Generalization*, Algorithm 1 (official code: github.com/timgaripov/swa). From the start epoch on,
the learning rate anneals to a constant α_swa (here: cosine, over one epoch, as
``torch.optim.swa_utils.SWALR``) and the running average w_swa ← (n·w_swa + w)/(n + 1) takes the
weights at the end of every epoch (cycle length 1 epoch). BatchNorm statistics are not averaged:
they are recomputed for w_swa with one forward pass over the training data (the paper's §3.2, the
official ``bn_update``). The official run scripts start at 161 of 300 epochs (WRN-28-10, VGG-16)
and 126 of 225 (PreResNet-164), about 55% of training, with α_swa = 0.5 × the initial learning
rate for the residual networks (0.05 / 0.1); those are the defaults here.

**EMA** (Polyak averaging; the form of timm's ``ModelEmaV2``): w_ema ← β·w_ema + (1 − β)·w after
every optimizer step, BatchNorm statistics averaged the same way (``use_buffers=True``), so no
recomputation is needed. β = 0 is the trained weights themselves.

Kaddour et al., NeurIPS 2022, *When Do Flat Minima Optimizers Work?*, compare SWA and SAM and find
their combination (WASAM, here ``sam+swa``) best on many workloads: that is why averaging is a
suffix every method takes rather than a method of its own.

Only the hyperparameters live here (the registry composes them into ``<method>+<kind>`` classes,
:func:`regularizers.registry.get`); the averaging itself runs in the training loop
(``bench.training.averaging``, on ``torch.optim.swa_utils``), which evaluates, measures and
records the averaged weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from regularizers.space import Float, hparam

#: Joins a method and an averaging kind in a name: ``sam+swa``.
SEPARATOR = "+"


@dataclass
class Averaging:
    """Base of the averaging kinds; :attr:`kind` is the suffix and what rows record as the
    evaluated weights."""

    kind: ClassVar[str] = ""

    def recipe_warnings(self, epochs: int, steps_per_epoch: int) -> list[str]:
        """See :meth:`regularizers.Regularizer.recipe_warnings`."""
        return []


@dataclass
class SWA(Averaging):
    """Stochastic weight averaging (Izmailov et al. 2018, Alg. 1), once per epoch from the start epoch."""

    kind: ClassVar[str] = "swa"

    swa_start: float = hparam(
        0.55,
        Float(0.5, 0.9),
        "fraction of the epochs trained before averaging starts (official scripts: 161/300, 126/225)",
        minimum=0.0,
        maximum=1.0,
    )
    swa_lr: float = hparam(
        0.5,
        Float(0.05, 1.0, log=True),
        "α_swa: the constant learning rate while averaging, as a fraction of the peak learning rate "
        "(official scripts: 0.05/0.1 for PreResNet and WRN, 0.01/0.05 for VGG)",
        minimum=0.0,
    )

    def start_epoch(self, epochs: int) -> int:
        """The 0-based epoch whose start switches to α_swa; its end gives the first snapshot.
        At most the last epoch, so every trial averages at least one snapshot."""
        return min(epochs - 1, int(self.swa_start * epochs))


@dataclass
class EMA(Averaging):
    """Exponential moving average of the weights (and BatchNorm statistics) after every step."""

    kind: ClassVar[str] = "ema"

    ema_decay: float = hparam(
        0.999,
        Float(0.99, 0.9999),
        "β in w_ema ← β·w_ema + (1 − β)·w, per optimizer step (β = 0: the trained weights)",
        minimum=0.0,
        maximum=1.0,
    )

    def recipe_warnings(self, epochs: int, steps_per_epoch: int) -> list[str]:
        steps = epochs * steps_per_epoch
        if self.ema_decay >= 1.0:
            return ["ema_decay 1 never moves the average from the initial weights"]
        horizon = 1.0 / (1.0 - self.ema_decay)  # the mean age of the averaged weights, in steps
        if horizon > steps:
            return [
                f"ema_decay {self.ema_decay:g} averages over about {horizon:,.0f} steps, more than the run's "
                f"{steps:,}: the evaluated weights stay close to the initialization"
            ]
        return []


#: The suffixes a method name takes, by kind.
KINDS: dict[str, type[Averaging]] = {kind.kind: kind for kind in (SWA, EMA)}

#: What rows record when the trained weights themselves are evaluated.
TRAINED = "trained"
