"""Typed data behind the report's figures, read from the Parquet rows and the leaderboard.

Nothing here draws or imports matplotlib/Optuna: each function turns rows (mappings with the
columns of :mod:`bench.results.schema`) and :class:`~bench.leaderboard.Standing` values into small
frozen dataclasses that :mod:`bench.report.figures` plots. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import metrics as M
from bench.leaderboard import Standing
from bench.leaderboard.target import TimeToTarget, time_to_target
from bench.results.schema import TrialStatus

Row = Mapping[str, Any]


def finite(value: Any) -> float | None:
    """A finite float, or None for missing, NaN and infinite values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class SeedValue:
    """One training run the method stands by: its seed and test accuracy."""

    seed: int
    test_accuracy: float


@dataclass(frozen=True)
class MethodResult:
    """A ranked method as the figures show it.

    ``runs`` are the rows the leaderboard's number comes from: the final runs of the top-1
    config (``ranked_by == "final"``), or the best search trial alone (``"search"``).
    ``passes_per_run`` is the mean forward + backward passes of those runs, ``seconds_per_run``
    their mean wall time (s): the compute one training run of the chosen config costs."""

    regularizer: str
    ranked_by: str
    test_accuracy: float
    ci_low: float | None
    ci_high: float | None
    runs: tuple[SeedValue, ...]
    passes_per_run: float
    seconds_per_run: float


@dataclass(frozen=True)
class FlatnessPoint:
    """One run with a flatness measurement and a test accuracy (bench.measure.flatness: Hessian trace by
    Hutchinson's estimator or Hutch++ with its standard error, top eigenvalue by the Lanczos iteration)."""

    regularizer: str
    phase: str
    test_accuracy: float
    hessian_trace: float | None
    hessian_trace_stderr: float | None
    hessian_top_eigenvalue: float | None


def standing_rows(standing: Standing, rows: Sequence[Row]) -> list[Row]:
    """The rows behind ``standing``'s test accuracy, as the leaderboard chose them
    (``Standing.behind_run_ids``); empty when the method has no test accuracy."""
    behind = set(standing.behind_run_ids)
    return [r for r in rows if r["run_id"] in behind]


def method_result(standing: Standing, rows: Sequence[Row]) -> MethodResult | None:
    """The figures' view of one standing; None when it has no test accuracy to plot."""
    behind = standing_rows(standing, rows)
    if standing.test_accuracy is None or not behind:
        return None
    runs = tuple(sorted((SeedValue(int(r["seed"]), float(r[M.TEST_ACCURACY])) for r in behind), key=lambda v: v.seed))
    return MethodResult(
        regularizer=standing.regularizer,
        ranked_by=standing.ranked_by,
        test_accuracy=standing.test_accuracy,
        ci_low=standing.test_accuracy_ci_low,
        ci_high=standing.test_accuracy_ci_high,
        runs=runs,
        passes_per_run=statistics.fmean(float(r[M.FORWARD_PASSES] + r[M.BACKWARD_PASSES]) for r in behind),
        seconds_per_run=statistics.fmean(float(r[M.WALL_SECONDS]) for r in behind),
    )


def flatness_points(rows: Sequence[Row]) -> list[FlatnessPoint]:
    """Every completed run with a test accuracy and at least one of trace / top eigenvalue."""
    points = []
    for r in rows:
        accuracy = finite(r[M.TEST_ACCURACY])
        trace = finite(r[M.HESSIAN_TRACE])
        eigenvalue = finite(r[M.HESSIAN_TOP_EIGENVALUE])
        if r["status"] != TrialStatus.COMPLETED.value or accuracy is None or (trace is None and eigenvalue is None):
            continue
        points.append(
            FlatnessPoint(
                regularizer=r["regularizer"],
                phase=r["phase"],
                test_accuracy=accuracy,
                hessian_trace=trace,
                hessian_trace_stderr=finite(r[M.HESSIAN_TRACE_STDERR]) if trace is not None else None,
                hessian_top_eigenvalue=eigenvalue,
            )
        )
    return points


@dataclass(frozen=True)
class MethodCurve:
    """The learning curve of the runs behind a method's standing (its final seeds, or its best
    search trial): per epoch they all ran, the median over the runs and the lowest and highest."""

    regularizer: str
    ranked_by: str
    runs: int
    epochs: tuple[int, ...]
    passes: tuple[float, ...]  # forward + backward passes so far (median over the runs)
    val_accuracy: tuple[tuple[float, float, float], ...]  # (lowest, median, highest) per epoch
    train_loss: tuple[tuple[float, float, float], ...]


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def method_curve(standing: Standing, points: Sequence[Row]) -> MethodCurve | None:
    """``standing``'s curve from the curve table's rows (:mod:`bench.results.curves`); None when
    no run behind it has a curve. Epochs where a run has no finite figure are left out."""
    behind = set(standing.behind_run_ids)
    by_run: dict[str, dict[int, Row]] = {}
    for point in points:
        if point["run_id"] in behind:
            by_run.setdefault(point["run_id"], {})[int(point[M.EPOCH])] = point
    if not by_run:
        return None
    common = sorted(set.intersection(*(set(epochs) for epochs in by_run.values())))
    epochs, passes, accuracy, loss = [], [], [], []
    for epoch in common:
        at = [run[epoch] for run in by_run.values()]
        accuracies = [finite(p[M.VAL_ACCURACY]) for p in at]
        losses = [finite(p[M.TRAIN_LOSS]) for p in at]
        if None in accuracies or None in losses:
            continue
        epochs.append(epoch)
        passes.append(statistics.median(float(p[M.FORWARD_PASSES] + p[M.BACKWARD_PASSES]) for p in at))
        accuracy.append(_spread(accuracies))
        loss.append(_spread(losses))
    if not epochs:
        return None
    return MethodCurve(
        standing.regularizer,
        standing.ranked_by,
        len(by_run),
        tuple(epochs),
        tuple(passes),
        tuple(accuracy),
        tuple(loss),
    )


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, lowest cost first (ties: higher value first).

    Cost is minimized and value maximized: point i is dominated when some j has cost_j ≤ cost_i
    and value_j ≥ value_i with at least one inequality strict. Equal points do not dominate each
    other, so both stay on the front. Raises ValueError when the lengths differ."""
    if len(costs) != len(values):
        raise ValueError(f"pareto_front needs as many costs as values, got {len(costs)} and {len(values)}")

    def dominated(i: int) -> bool:
        return any(
            costs[j] <= costs[i] and values[j] >= values[i] and (costs[j] < costs[i] or values[j] > values[i])
            for j in range(len(costs))
        )

    front = [i for i in range(len(costs)) if not dominated(i)]
    return sorted(front, key=lambda i: (costs[i], -values[i]))


__all__ = [
    "FlatnessPoint",
    "MethodCurve",
    "MethodResult",
    "SeedValue",
    "TimeToTarget",
    "finite",
    "flatness_points",
    "method_curve",
    "method_result",
    "pareto_front",
    "standing_rows",
    "time_to_target",
]
