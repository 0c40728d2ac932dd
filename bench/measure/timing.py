"""Timing instruments: the clock, median-and-quartile spreads and the rule that says when a
timing is too noisy to read (used by :mod:`bench.benchmarks.perf` and the other benchmarks).

The clock (:func:`wall_clock`) is the one ``torch.utils.benchmark.timer`` uses: synchronize the
device, then read the host clock, so asynchronous launches are not mistaken for speed. Quartiles
interpolate linearly, as ``torch.utils.benchmark.Measurement``'s do (the tests check
:class:`Spread` against it).

*Pass-equivalents* weigh a forward-only pass as 1/3 of a forward+backward pair (the backward
costs about twice the forward), so NSO's extra clean forward on BatchNorm models counts fairly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: The overhead a method may have beyond its passes (1.05 = 5% more than its passes cost).
TARGET_OVERHEAD = 1.05
#: Fewer rounds than this give no usable quartiles (``Measurement`` hides its IQR below 4 too).
MIN_ROUNDS = 4
#: Step time IQR / median above this is unreliable: the level at which
#: ``torch.utils.benchmark.Measurement`` warns of "system fluctuation".
MAX_RELATIVE_STEP_IQR = 0.10
#: The resolution the overhead column must have: the margin of the target.
OVERHEAD_RESOLUTION = TARGET_OVERHEAD - 1
#: An overhead's distance from 1 (the effect it reports) must be at least this many IQRs: then
#: its quartile interval stays clear of 1 with room to spare.
EFFECT_IN_IQRS = 2
RELIABILITY_RULE = (
    f"a figure is unreliable ('?') when it comes from fewer than {MIN_ROUNDS} rounds; a step time, when its IQR "
    f"exceeds {MAX_RELATIVE_STEP_IQR:.0%} of its median; a ratio/overhead, when the overhead's IQR exceeds both "
    f"{OVERHEAD_RESOLUTION:.2f} (the target's margin) and |overhead - 1| / {EFFECT_IN_IQRS} (the effect it reports, "
    f"which must be at least {EFFECT_IN_IQRS} IQRs)"
)


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of ``n`` samples; quartiles interpolate linearly between order
    statistics (``torch.quantile``'s default, as in ``torch.utils.benchmark.Measurement``)."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """Raises ValueError on no samples or a non-finite one."""
        if not samples:
            raise ValueError("a spread needs at least one sample")
        values = torch.tensor(list(samples), dtype=torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"non-finite sample in {list(samples)}")
        q1, median, q3 = values.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        return cls(median=median, q1=q1, q3=q3, n=len(samples))

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "iqr": self.iqr, "n": self.n}


@dataclass(frozen=True)
class Reliability:
    """Why a row's figures are unreliable; ``None`` where a figure is reliable."""

    step_time: str | None
    ratio: str | None  # the ratio to ERM and the overhead (one is the other over a constant)

    @property
    def reliable(self) -> bool:
        return self.step_time is None and self.ratio is None

    @property
    def reason(self) -> str | None:
        reasons = dict.fromkeys(r for r in (self.step_time, self.ratio) if r is not None)  # ordered, no repeats
        return "; ".join(reasons) or None


def judge(step_seconds: Spread, overhead: Spread) -> Reliability:
    """Apply :data:`RELIABILITY_RULE` to one row's step time and overhead spreads.

    The overhead's floor of :data:`OVERHEAD_RESOLUTION` keeps a precise "costs exactly its
    passes" (overhead 1.00, tiny IQR) reliable, while a spread that is not small against the
    effect reported (weight decay at 0.39× ERM with an IQR of 0.8) is not.
    """
    if step_seconds.n < MIN_ROUNDS:
        too_few = f"{step_seconds.n} rounds < {MIN_ROUNDS}"
        return Reliability(step_time=too_few, ratio=too_few)
    step = None
    relative = step_seconds.iqr / step_seconds.median
    if relative > MAX_RELATIVE_STEP_IQR:
        step = f"step time IQR {relative:.0%} of its median > {MAX_RELATIVE_STEP_IQR:.0%}"
    ratio = None
    allowed = max(OVERHEAD_RESOLUTION, abs(overhead.median - 1) / EFFECT_IN_IQRS)
    if overhead.iqr > allowed:
        ratio = f"overhead IQR {overhead.iqr:.3f} > {allowed:.3f}"
    return Reliability(step_time=step, ratio=ratio)


def wall_clock(device: torch.device) -> float:
    """Seconds on the host clock, after the work queued on ``device`` has finished."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
    return time.perf_counter()


def pass_equivalents(forward: float, backward: float) -> float:
    return backward + (forward - backward) / 3
