"""Time to target: how soon a method's runs reach a stated validation accuracy, from the learning
curves (:mod:`bench.results.curves`), in passes and wall time (AlgoPerf's time-to-result).

The target of a benchmark is its baseline's final validation accuracy: the median, over the
baseline's runs behind its standing, of their last epoch's figure (:func:`baseline_target`). A
run reaches it at its first epoch whose validation accuracy is at least the target; a method's
time is the median over its runs that reached it, with the count of those that did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import metrics as M
from bench.leaderboard.board import BenchmarkBoard, Standing

#: The target rule, as the boards and the report state it.
TARGET_RULE = "{baseline}'s final validation accuracy (the median of its runs' last epochs)"


@dataclass(frozen=True)
class TimeToTarget:
    """How soon a method's runs first reach a validation accuracy: the median over the runs that
    reached it of the passes and the wall time spent by then (None when none did)."""

    regularizer: str
    runs: int
    reached: int
    passes: float | None
    seconds: float | None


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _curves_of(standing: Standing, points: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The curves of the runs behind ``standing``, each sorted by epoch."""
    behind = set(standing.behind_run_ids)
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for point in sorted(points, key=lambda p: int(p[M.EPOCH])):
        if point["run_id"] in behind:
            by_run.setdefault(point["run_id"], []).append(point)
    return by_run


def time_to_target(standing: Standing, points: Sequence[Mapping[str, Any]], target: float) -> TimeToTarget | None:
    """``standing``'s runs (those behind its number) against ``target``: for each run, the first
    epoch whose validation accuracy is at least ``target``; None when no run behind it has a curve."""
    by_run = _curves_of(standing, points)
    if not by_run:
        return None
    first = [
        next((p for p in curve if (v := _finite(p[M.VAL_ACCURACY])) is not None and v >= target), None)
        for curve in by_run.values()
    ]
    hits = [p for p in first if p is not None]
    return TimeToTarget(
        standing.regularizer,
        len(first),
        len(hits),
        statistics.median(float(p[M.FORWARD_PASSES] + p[M.BACKWARD_PASSES]) for p in hits) if hits else None,
        statistics.median(float(p[M.WALL_SECONDS]) for p in hits) if hits else None,
    )


def baseline_target(board: BenchmarkBoard, points: Sequence[Mapping[str, Any]]) -> float | None:
    """The benchmark's target: the median of the baseline's runs' last validation accuracy."""
    baseline = next((s for s in board.standings if s.regularizer == board.baseline), None)
    if baseline is None:
        return None
    last = [_finite(curve[-1][M.VAL_ACCURACY]) for curve in _curves_of(baseline, points).values()]
    last = [v for v in last if v is not None]
    return statistics.median(last) if last else None


def board_times(board: BenchmarkBoard, points: Sequence[Mapping[str, Any]]) -> tuple[float, list[TimeToTarget]] | None:
    """The target of ``board`` and every method's time to it (methods without curves left out);
    None without the baseline's curves."""
    target = baseline_target(board, points)
    if target is None:
        return None
    times = [t for s in board.standings if (t := time_to_target(s, points, target)) is not None]
    return target, times
