"""Uncertainty of the leaderboard's numbers: t-intervals, tests against a baseline, Holm, rank groups.

Every formula is scipy's (``scipy.stats``) except Holm's step-down adjustment, which scipy does
not provide (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg, a different error
rate). The rules, stated once (the leaderboard's legend and README refer to them):

* **Interval**: the two-sided Student-t interval of the mean, ``mean ± t(1-α/2, n-1)·s/√n``
  (``scipy.stats.ttest_1samp(...).confidence_interval``), s the sample std (ddof=1). None for
  n < 2. With zero spread the interval is the point itself. A bounded metric (an accuracy lies in
  [0, 1]) has its interval cut at the bounds: the true mean lies inside them, so the cut interval
  covers it exactly as often as the t-interval does, and the mean stays the centre of the rule.
  With n < :data:`FEW` the interval rests on one degree of freedom (t = 12.7 at 95%): it is
  printed, and flagged as rough.
* **Test against the baseline**: *paired* (``scipy.stats.ttest_rel`` on seed-matched pairs) when
  both methods have final runs for exactly the same set of seeds, each once (the same seed gives
  the same initialization and data order, so seeds pair); otherwise Welch's unequal-variance
  t-test (``scipy.stats.ttest_ind(equal_var=False)``). No test when a side has fewer than 2 runs,
  or when the t statistic is undefined (zero spread: all paired differences equal, or both
  groups constant). The difference is method − baseline, with its t-interval.
* **Holm**: the p-values of the tests that ran on one board form one family (Holm 1979, "A simple
  sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70).
* **Rank groups** (:func:`groups_by_tests`), the verdict of the tests against the baseline: the
  methods significantly better than the baseline (Holm) form the first group, the baseline and
  every method not distinguishable from it the next, the methods significantly worse the last;
  empty groups are skipped. A method without a test has no rank. A group's rank is 1 + the number
  of methods in earlier groups; a group of more than one method is "tied". So a rank group never
  says what a test on the same board contradicts.
* **Rank groups without tests** (:func:`rank_groups`; a board without the baseline, or where no
  test could run): sort by mean, descending (name breaks ties). The first method is the leader of
  group 1; every method whose interval overlaps the leader's (closed intervals; a method without
  an interval is the point at its mean) joins group 1. Repeat on the methods left.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats

#: Default confidence level of every interval.
CONFIDENCE = 0.95
#: Default family-wise significance level of the Holm-adjusted tests.
ALPHA = 0.05
#: Intervals from fewer values than this are flagged as rough (n = 2: one degree of freedom).
FEW = 3

Bounds = tuple[float, float]

#: Why a method equal to the baseline on every seed has no test, and yet a verdict: the same.
IDENTICAL = "identical to the baseline on every seed: no test needed"

TestKind = Literal["paired", "welch"]
PAIRED: TestKind = "paired"
WELCH: TestKind = "welch"


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and t-interval of ``n`` values; std/interval None for n < 2."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    #: The t-interval reached past the metric's bounds and was cut there.
    cut: bool = False

    @property
    def rough(self) -> bool:
        """An interval from so few values (n < :data:`FEW`) that it says little."""
        return self.ci_low is not None and self.n < FEW


def _constant(values: Sequence[float]) -> bool:
    # Exact equality on purpose: identical accuracies come from identical integer counts.
    return max(values) == min(values)


def _cut(low: float, high: float, bounds: Bounds | None) -> tuple[float, float, bool]:
    if bounds is None:
        return low, high, False
    lower, upper = bounds
    return max(low, lower), min(high, upper), low < lower or high > upper


def summarize(values: Sequence[float], confidence: float = CONFIDENCE, bounds: Bounds | None = None) -> Summary:
    """:class:`Summary` of finite ``values``; an empty sequence gives n=0 and all None.

    ``bounds``: the metric's (lower, upper) bounds; the interval is cut at them (module docstring).
    Raises ValueError for a non-finite value or a confidence outside (0, 1)."""
    _check_level(confidence, "confidence")
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"summarize needs finite values, got {list(values)}")
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(np.mean(values))
    if n == 1:
        return Summary(1, mean, None, None, None)
    if _constant(values):
        # scipy's moment code warns on identical data; the interval of a constant is the point.
        return Summary(n, float(values[0]), 0.0, float(values[0]), float(values[0]))
    interval = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(confidence_level=confidence)
    low, high, cut = _cut(float(interval.low), float(interval.high), bounds)
    return Summary(n, mean, float(np.std(values, ddof=1)), low, high, cut)


@dataclass(frozen=True)
class Comparison:
    """A method against the baseline (difference = method − baseline).

    ``test`` is None (and every number but ``mean_difference`` None) when no test ran; ``note``
    then says why. ``p_holm`` and ``significant`` are set by :func:`holm_adjust_comparisons`."""

    test: TestKind | None
    n_method: int
    n_baseline: int
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None = None
    significant: bool | None = None
    note: str | None = None


def compare(
    method: dict[int, float] | Sequence[float],
    baseline: dict[int, float] | Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: Bounds | None = None,
) -> Comparison:
    """Test ``method`` against ``baseline`` (see the module docstring for the choice of test).

    Each side is either a mapping seed → value (pairs when both have the same seeds) or a plain
    sequence (never paired). ``bounds``: the metric's; the difference's interval is cut at
    ±(upper − lower). Raises ValueError for non-finite values or a bad confidence."""
    _check_level(confidence, "confidence")
    a = list(method.values()) if isinstance(method, dict) else list(method)
    b = list(baseline.values()) if isinstance(baseline, dict) else list(baseline)
    if any(not math.isfinite(v) for v in (*a, *b)):
        raise ValueError("compare needs finite values")
    difference = float(np.mean(a) - np.mean(b)) if a and b else None
    paired = isinstance(method, dict) and isinstance(baseline, dict) and set(method) == set(baseline)
    kind: TestKind = PAIRED if paired else WELCH
    if len(a) < 2 or len(b) < 2:
        return Comparison(
            None, len(a), len(b), difference, None, None, None, note="fewer than 2 runs on a side: no test"
        )
    if paired:
        seeds = sorted(method)  # type: ignore[arg-type]
        x = [method[s] for s in seeds]  # type: ignore[index]
        y = [baseline[s] for s in seeds]  # type: ignore[index]
        differences = [u - v for u, v in zip(x, y, strict=True)]
        if _constant(differences):
            note = IDENTICAL if differences[0] == 0 else "paired differences all equal: t undefined"
            return Comparison(None, len(a), len(b), difference, None, None, None, note=note)
        result = scipy.stats.ttest_rel(x, y)
        difference = float(np.mean(np.subtract(x, y)))
    else:
        if _constant(a) and _constant(b):
            return Comparison(
                None, len(a), len(b), difference, None, None, None, note="both sides constant: t undefined"
            )
        result = scipy.stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence_level=confidence)
    span = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    low, high, _ = _cut(float(interval.low), float(interval.high), span)
    return Comparison(kind, len(a), len(b), difference, low, high, float(result.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of the i-th is
    max_{j ≤ i} min(1, (m − j + 1)·p_(j)) (Holm 1979). A hypothesis is rejected at family-wise
    level α when its adjusted value is ≤ α. Raises ValueError for a value outside [0, 1].

    >>> [round(p, 12) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError(f"p-values must lie in [0, 1], got {list(p_values)}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_adjust_comparisons(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons with ``p_holm`` and ``significant`` (``p_holm ≤ alpha``) filled in; the ones
    without a test are returned unchanged. Raises ValueError for alpha outside (0, 1)."""
    _check_level(alpha, "alpha")
    tested = [i for i, c in enumerate(comparisons) if c.p_value is not None]
    adjusted = dict(zip(tested, holm([comparisons[i].p_value for i in tested]), strict=True))  # type: ignore[misc]
    out = []
    for i, c in enumerate(comparisons):
        if i in adjusted:
            c = dataclasses.replace(c, p_holm=adjusted[i], significant=adjusted[i] <= alpha)
        out.append(c)
    return out


@dataclass(frozen=True)
class Interval:
    """A named method's mean and interval, the input of :func:`rank_groups`."""

    name: str
    mean: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class RankGroup:
    """Where a method stands: ``rank`` (1-based, shared in a group), ``group`` (1, 2, ...) and
    whether it shares its group with another method."""

    name: str
    rank: int
    group: int
    tied: bool


def _overlap(a: Interval, b: Interval) -> bool:
    a_low, a_high = (a.mean, a.mean) if a.low is None else (a.low, a.high)
    b_low, b_high = (b.mean, b.mean) if b.low is None else (b.low, b.high)
    return a_low <= b_high and b_low <= a_high  # type: ignore[operator]


def rank_groups(intervals: Sequence[Interval]) -> list[RankGroup]:
    """The rank groups of the module docstring, in display order (group, then mean descending)."""
    remaining = sorted(intervals, key=lambda x: (-x.mean, x.name))
    out: list[RankGroup] = []
    group = 0
    while remaining:
        group += 1
        leader = remaining[0]
        members = [x for x in remaining if _overlap(leader, x)]
        rank = len(out) + 1
        out += [RankGroup(x.name, rank, group, len(members) > 1) for x in members]
        taken = {x.name for x in members}
        remaining = [x for x in remaining if x.name not in taken]
    return out


Verdict = Literal["better", "not distinguishable", "worse", "baseline", "no test"]
BETTER: Verdict = "better"
SAME: Verdict = "not distinguishable"
WORSE: Verdict = "worse"
BASELINE: Verdict = "baseline"
UNTESTED: Verdict = "no test"
#: The verdicts that place a method in a rank group, in group order.
RANKED_VERDICTS: tuple[Verdict, ...] = (BETTER, SAME, WORSE)


def verdict(comparison: Comparison) -> Verdict:
    """What a Holm-adjusted comparison says of the method: better, worse, not distinguishable
    from the baseline (also when it equals it on every paired seed), or no test."""
    if comparison.note == IDENTICAL:
        return SAME
    if comparison.significant is None or comparison.mean_difference is None:
        return UNTESTED
    if not comparison.significant:
        return SAME
    return BETTER if comparison.mean_difference > 0 else WORSE


@dataclass(frozen=True)
class Tested:
    """A named method's mean and its verdict against the baseline, the input of :func:`groups_by_tests`."""

    name: str
    mean: float
    verdict: Verdict


def groups_by_tests(methods: Sequence[Tested]) -> list[RankGroup]:
    """The rank groups of the tests (module docstring), in display order (group, then mean
    descending, name); methods with the verdict "no test" are left out (they have no rank)."""
    out: list[RankGroup] = []
    group = 0
    for verdicts in ((BETTER,), (SAME, BASELINE), (WORSE,)):
        members = sorted((m for m in methods if m.verdict in verdicts), key=lambda m: (-m.mean, m.name))
        if not members:
            continue
        group += 1
        rank = len(out) + 1
        out += [RankGroup(m.name, rank, group, len(members) > 1) for m in members]
    return out


def _check_level(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


__all__ = [
    "ALPHA",
    "BASELINE",
    "BETTER",
    "CONFIDENCE",
    "FEW",
    "IDENTICAL",
    "PAIRED",
    "SAME",
    "UNTESTED",
    "WELCH",
    "WORSE",
    "Comparison",
    "Interval",
    "RankGroup",
    "Summary",
    "Tested",
    "Verdict",
    "compare",
    "groups_by_tests",
    "holm",
    "holm_adjust_comparisons",
    "rank_groups",
    "summarize",
    "verdict",
]
