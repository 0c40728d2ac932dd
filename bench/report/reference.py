"""Your run against reference results (``sharpbench report --reference DIR``): per benchmark and
method, the reference's mean and interval beside yours, and whether your mean lies inside the
reference interval.

Typed data only (no matplotlib): :mod:`bench.report.build` reads the reference folder into
leaderboard boards, :func:`compare` pairs them with yours, :mod:`bench.report.page` prints the
result and :mod:`bench.report.figures` draws the reference intervals. Accuracies are fractions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.leaderboard import RANKED_BY_FINAL, BenchmarkBoard, Standing


@dataclass(frozen=True)
class Estimate:
    """One method's test accuracy on one board: the mean over ``n`` final seeds with its interval
    (None for fewer than 2 seeds), or the best search trial's own (``n`` = 0, no interval)."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int

    @classmethod
    def of(cls, standing: Standing) -> Estimate | None:
        """``standing``'s estimate; None when it has no test accuracy."""
        if standing.test_accuracy is None:
            return None
        n = standing.n_seeds if standing.ranked_by == RANKED_BY_FINAL else 0
        return cls(standing.test_accuracy, standing.test_accuracy_ci_low, standing.test_accuracy_ci_high, n)

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    def text(self) -> str:
        """``0.9621 [0.9502, 0.9740] (n=5)``; a search trial says so instead of n."""
        interval = f" [{self.ci_low:.4f}, {self.ci_high:.4f}]" if self.has_interval else ""
        basis = f"n={self.n}" if self.n else "best search trial, n=1"
        return f"{self.mean:.4f}{interval} ({basis})"


@dataclass(frozen=True)
class MethodComparison:
    """One method in your run and in the reference (either may lack it)."""

    regularizer: str
    reference: Estimate | None
    yours: Estimate | None

    @property
    def inside(self) -> bool | None:
        """Whether your mean lies inside the reference interval (ends included); None when either
        side has no number or the reference has no interval."""
        ref, yours = self.reference, self.yours
        if ref is None or yours is None or ref.ci_low is None or ref.ci_high is None:
            return None
        return ref.ci_low <= yours.mean <= ref.ci_high

    def verdict(self) -> str:
        """One line for the page: inside, above or below the reference interval (by how much)."""
        ref, yours = self.reference, self.yours
        if yours is None:
            return "not in your run (or no test accuracy)"
        if ref is None:
            return "not in the reference"
        if ref.ci_low is None or ref.ci_high is None:
            difference = yours.mean - ref.mean
            return f"the reference has no interval (n={ref.n or 1}); your mean minus its mean: {difference:+.4f}"
        if self.inside:
            return "your mean lies inside the reference interval"
        if yours.mean > ref.ci_high:
            return f"your mean lies above the reference interval, by {yours.mean - ref.ci_high:.4f}"
        return f"your mean lies below the reference interval, by {ref.ci_low - yours.mean:.4f}"


@dataclass(frozen=True)
class ReferenceComparison:
    """One benchmark of your run against the same benchmark in the reference folder."""

    benchmark: str
    folder: Path
    confidence: float  # the level of the reference intervals
    methods: tuple[MethodComparison, ...]  # your leaderboard's order, then methods only the reference has

    def summary(self) -> str:
        """One line: how many of your methods lie inside the reference intervals, which do not."""
        judged = [m for m in self.methods if m.inside is not None]
        inside = [m.regularizer for m in judged if m.inside]
        outside = [m.regularizer for m in judged if not m.inside]
        line = (
            f"Against the reference {self.folder}: {len(inside)} of {len(judged)} methods have their mean inside "
            f"the reference {self.confidence:.0%} interval"
        )
        if outside:
            line += f"; outside: {', '.join(outside)}"
        unjudged = [m.regularizer for m in self.methods if m.inside is None]
        if unjudged:
            line += f"; not compared: {', '.join(unjudged)}"
        return line + "."

    def interval_of(self, regularizer: str) -> Estimate | None:
        """The reference's estimate for ``regularizer``, for the figures."""
        return next((m.reference for m in self.methods if m.regularizer == regularizer), None)


def compare(yours: BenchmarkBoard, reference: BenchmarkBoard, folder: Path) -> ReferenceComparison:
    """Pair each method of ``yours`` with the same method on ``reference`` (same benchmark name)."""
    ref_by_method: Mapping[str, Standing] = {s.regularizer: s for s in reference.standings}
    own = [s.regularizer for s in yours.standings]
    methods = [
        MethodComparison(
            s.regularizer,
            Estimate.of(ref_by_method[s.regularizer]) if s.regularizer in ref_by_method else None,
            Estimate.of(s),
        )
        for s in yours.standings
    ]
    methods += [
        MethodComparison(s.regularizer, Estimate.of(s), None) for s in reference.standings if s.regularizer not in own
    ]
    return ReferenceComparison(yours.benchmark, folder, reference.confidence, tuple(methods))


def absent_line(benchmark: str, folder: Path, present: tuple[str, ...]) -> str:
    """The page's line for a benchmark the reference folder does not hold."""
    held = ", ".join(present) if present else "none"
    return f"The reference {folder} has no results for benchmark {benchmark} (it holds: {held}): no comparison."


__all__ = ["Estimate", "MethodComparison", "ReferenceComparison", "absent_line", "compare"]
