"""The verdict line: what a board's tests against the baseline say, in plain words.

One sentence per benchmark, built only from the standings' Holm-adjusted tests (never from
interval overlap), so it cannot disagree with the table's test column or its rank groups::

    Verdict vs erm (Holm, α = 0.05): sam, asam: not distinguishable (p ≥ 0.48); weight_decay: worse by 0.33
    points (p = 0.012).

Several methods on one side of the baseline share a clause with the range of their differences
and the largest of their p-values ("sam, asam: better by 0.52–0.67 points (p ≤ 0.03)"). A
difference is in percentage points of test accuracy (0.33 points = 0.0033 as a fraction).
Methods without a test are named with the reason; a board without the baseline, or where no test
ran, says so instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import stats
from bench.leaderboard.board import BenchmarkBoard, Standing

#: A difference of fractions, in percentage points.
POINTS = 100.0


def p_text(p: float) -> str:
    """A p-value with 2 significant digits (more would be false precision)."""
    return f"{p:.2g}"


def points(difference: float) -> str:
    """An accuracy difference (fraction) as unsigned percentage points, 2 decimals."""
    return f"{abs(difference) * POINTS:.2f}"


def _names(standings: Sequence[Standing]) -> str:
    return ", ".join(s.regularizer for s in standings)


def _same(standings: Sequence[Standing]) -> str:
    # the smallest p of the group: none of them comes closer to a difference; a method equal to the
    # baseline on every seed has no p (bench.stats.IDENTICAL)
    tested = [s.vs_baseline_p_holm for s in standings if s.vs_baseline_p_holm is not None]
    if not tested:
        return f"{_names(standings)}: not distinguishable (identical on every seed)"
    bound = "p ≥ " + p_text(min(tested)) if len(standings) > 1 else "p = " + p_text(tested[0])
    return f"{_names(standings)}: not distinguishable ({bound})"


def _differs(standings: Sequence[Standing]) -> str:
    """Methods the tests place on one side of the baseline: each difference, or their range."""
    first = standings[0]
    if len(standings) == 1:
        return (
            f"{first.regularizer}: {first.vs_baseline_verdict} by {points(first.vs_baseline_difference)} points "  # type: ignore[arg-type]
            f"(p = {p_text(first.vs_baseline_p_holm)})"  # type: ignore[arg-type]
        )
    sizes = sorted(abs(s.vs_baseline_difference) for s in standings)  # type: ignore[arg-type]
    highest = max(s.vs_baseline_p_holm for s in standings)  # type: ignore[type-var]
    return (
        f"{_names(standings)}: {first.vs_baseline_verdict} by {points(sizes[0])}–{points(sizes[-1])} points "
        f"(p ≤ {p_text(highest)})"  # type: ignore[arg-type]
    )


def _untested(s: Standing) -> str:
    reason = (s.vs_baseline_note or "no test").removesuffix(": no test")
    return f"{s.regularizer}: no test ({reason})"


def verdict_line(board: BenchmarkBoard) -> str:
    """The board's verdict in one sentence (see the module docstring)."""
    if board.baseline is None:
        return f"Verdict: {board.baseline_note or 'no baseline'}."
    others = [s for s in board.standings if s.vs_baseline_verdict != stats.BASELINE]
    if not others:
        return f"Verdict: only the baseline {board.baseline} has rows; nothing to compare."
    clauses = []
    for kind, phrase in ((stats.BETTER, _differs), (stats.SAME, _same), (stats.WORSE, _differs)):
        members = [s for s in others if s.vs_baseline_verdict == kind]
        if members:
            clauses.append(phrase(members))
    clauses += [_untested(s) for s in others if s.vs_baseline_verdict == stats.UNTESTED]
    return f"Verdict vs {board.baseline} (Holm, α = {board.alpha:g}): " + "; ".join(clauses) + "."


__all__ = ["POINTS", "p_text", "points", "verdict_line"]
