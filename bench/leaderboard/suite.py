"""Answers across benchmarks: one suite board from the benchmarks' boards.

A benchmark's board says which method wins on that task; the suite board says which wins across
them, by how much, and how sure one can be, with the tools of rliable (Agarwal et al., NeurIPS
2021) and Demšar (JMLR 2006). Each rule is stated once, here:

* **Runs.** A method's runs on a benchmark are those behind its standing there (its final seeds,
  or its best search trial when it has none: :attr:`~bench.leaderboard.Standing.behind_run_ids`),
  scored by their test accuracy.
* **Normalized score** (:data:`SCORE_RULE`): the relative error reduction against the baseline on
  the same benchmark, ``1 − error / mean baseline error`` (error = 1 − test accuracy). 0 is the
  baseline's mean, 0.25 a quarter fewer errors, negative more. A benchmark without the baseline,
  or on which the baseline makes no error, has no scores and is left out (said why).
* **Methods compared** are those with runs on every benchmark left in; the others are listed
  with the benchmarks they miss.
* **IQM and mean** of a method pool its scores over benchmarks and runs; the IQM is the mean of
  the middle 50% (:func:`scipy.stats.trim_mean` with 25% cut at each end, rliable's
  ``aggregate_iqm``). Their 95% intervals are **stratified bootstrap** percentile intervals: runs
  are resampled with replacement within each benchmark (:func:`scipy.stats.bootstrap` with one
  sample per benchmark: rliable's ``StratifiedBootstrap`` without task resampling), seeded, so the
  same rows give the same intervals. A benchmark with a single run leaves the intervals out.
* **Probability of improvement** over the baseline (rliable): per benchmark, the chance that a
  run of the method scores above a run of the baseline (ties count half: the Mann–Whitney U
  statistic over n·m), averaged over benchmarks; its interval by the same stratified bootstrap,
  both methods' runs resampled.
* **Average rank**: per benchmark the methods are ranked by their mean test accuracy (1 = best,
  ties share the mean rank), then averaged. The **Friedman test** (:func:`scipy.stats.friedmanchisquare`,
  at least 3 methods and 2 benchmarks) asks whether the ranks differ at all; **Nemenyi's post-hoc
  test** (``scikit_posthocs.posthoc_nemenyi_friedman``) compares every pair, and two methods whose
  average ranks differ by less than the **critical difference** ``q_α √(k(k+1)/(6N))`` are not
  distinguishable (Demšar 2006, §3.2.2; ``q_α`` is the studentized range quantile over √2).
* **Performance profile** (rliable's score distribution): the fraction of a method's runs, each
  benchmark weighted equally, whose score exceeds τ, for every τ.
* **Time to target** (AlgoPerf's time-to-result, :mod:`bench.leaderboard.target`): per
  benchmark, the target is the baseline's final validation accuracy (the median of its runs'
  last epochs), and a method's time is the median passes of its runs that reached it. Across
  benchmarks: the geometric mean over the benchmarks where both the method and the baseline
  reached it of the ratio of their times (below 1: sooner than the baseline), with the count of
  the method's runs that reached it; from the learning curves, so only where they were recorded.
* **Does flatter mean better here?** Per benchmark and flatness measure, Kendall's τ-b
  (:func:`scipy.stats.kendalltau`) between the measure and the generalization gap (test loss −
  final training loss) over the completed runs that measured it, all methods together (Jiang et
  al., ICLR 2020), with a 95% percentile bootstrap interval over runs (paired resampling). A
  positive τ: sharper runs generalize worse.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from bench.leaderboard.board import BenchmarkBoard
from bench.leaderboard.target import board_times

#: How a run's test accuracy becomes a score comparable across benchmarks.
SCORE_RULE = "relative error reduction vs {baseline}: 1 − error / ({baseline}'s mean error on the benchmark)"
#: Bootstrap resamples and seed of the intervals (the same rows give the same intervals).
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: Share cut at each end for the interquartile mean.
IQM_CUT = 0.25
#: Fewest runs for a bootstrap interval of Kendall's τ (below, resamples of identical runs are common).
MIN_PAIRS = 8


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval (``low``/``high`` None when it has none)."""

    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class SuiteMethod:
    """One method across the suite's benchmarks."""

    regularizer: str
    runs: int  # scores pooled over the benchmarks
    iqm: Interval
    mean: Interval
    average_rank: float
    #: P(a run of this method scores above one of the baseline's); None for the baseline itself.
    probability_of_improvement: Interval | None
    #: Its scores per benchmark, in the suite's benchmark order.
    scores: tuple[tuple[float, ...], ...]
    #: Time to target (module docstring); None without learning curves.
    time_to_target: TargetSpeed | None = None


@dataclass(frozen=True)
class TargetSpeed:
    """A method's time to the benchmarks' targets, against the baseline's."""

    #: Geometric mean over benchmarks of (its median passes to target / the baseline's); None
    #: where no benchmark has both.
    relative_passes: float | None
    benchmarks: int  # the benchmarks in that mean
    reached: int  # its runs that reached their benchmark's target
    runs: int  # its runs with a curve


#: Flatness measures correlated with the generalization gap: row column -> name in the field's terms.
FLATNESS_MEASURES = {
    "hessian_trace": "Hessian trace",
    "hessian_top_eigenvalue": "top Hessian eigenvalue",
    "epsilon_sharpness": "ε-sharpness",
    "adaptive_sharpness": "adaptive sharpness",
}


@dataclass(frozen=True)
class FlatnessCorrelation:
    """Kendall's τ between one flatness measure and the generalization gap on one benchmark."""

    benchmark: str
    measure: str  # a FLATNESS_MEASURES key
    runs: int
    tau: Interval
    p: float  # two-sided, of scipy's test of τ = 0


@dataclass(frozen=True)
class SuiteBoard:
    """The suite's methods, best IQM first, with the rank tests over them."""

    benchmarks: tuple[str, ...]
    baseline: str
    methods: tuple[SuiteMethod, ...]
    #: Benchmarks and methods left out, each with why.
    excluded_benchmarks: tuple[tuple[str, str], ...] = ()
    excluded_methods: tuple[tuple[str, str], ...] = ()
    friedman_statistic: float | None = None
    friedman_p: float | None = None
    critical_difference: float | None = None
    #: Nemenyi p-value of every pair of methods (names sorted within the pair).
    nemenyi_p: Mapping[tuple[str, str], float] = field(default_factory=dict)
    tests_note: str | None = None  # why the rank tests did not run
    intervals_note: str | None = None  # why some intervals are missing
    confidence: float = 0.95
    alpha: float = 0.05
    resamples: int = RESAMPLES
    flatness: tuple[FlatnessCorrelation, ...] = ()
    #: The baseline's mean error on each benchmark scored (the denominators of the scores).
    baseline_errors: Mapping[str, float] = field(default_factory=dict)
    #: Why the aggregates should not be read alone, when they disagree (:func:`caution`).
    caution: str | None = None

    @property
    def score_rule(self) -> str:
        return SCORE_RULE.format(baseline=self.baseline)

    def distinguishable(self, a: str, b: str) -> bool | None:
        """Whether Nemenyi's test tells ``a`` and ``b`` apart at ``alpha``; None without the test."""
        p = self.nemenyi_p.get(tuple(sorted((a, b))))  # type: ignore[arg-type]
        return None if p is None else p <= self.alpha


# ------------------------------------------------------------------ the statistics


def iqm(scores: Sequence[float] | np.ndarray, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the middle 50% (25% cut at each end)."""
    return stats.trim_mean(np.asarray(scores, dtype=float), IQM_CUT, axis=axis)


def _pooled(statistic: Any) -> Any:
    def pooled(*tasks: np.ndarray, axis: int = -1) -> Any:
        return statistic(np.concatenate(tasks, axis=axis), axis=axis)

    return pooled


def stratified_interval(
    tasks: Sequence[Sequence[float]],
    statistic: Any,
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """``statistic`` (``f(x, axis)``) of the pooled scores, with its stratified bootstrap
    percentile interval (runs resampled within each task); no interval when a task has fewer
    than 2 runs."""
    arrays = [np.asarray(t, dtype=float) for t in tasks]
    value = float(statistic(np.concatenate(arrays), axis=-1))
    if any(a.size < 2 for a in arrays):
        return Interval(value)
    return _bootstrapped(value, arrays, _pooled(statistic), confidence, resamples, seed)


def _bootstrapped(
    value: float, samples: Sequence[np.ndarray], statistic: Any, confidence: float, resamples: int, seed: int
) -> Interval:
    """``value`` with the percentile interval of ``statistic`` over ``samples``, each resampled
    with replacement on its own (the stratified bootstrap: one sample per task)."""
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return Interval(value, float(result.confidence_interval.low), float(result.confidence_interval.high))


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    """P(X > Y) + ½ P(X = Y) over all pairs of one task (the U statistic over n·m)."""
    difference = np.expand_dims(x, -1) - np.expand_dims(y, -2)
    return np.mean((difference > 0) + 0.5 * (difference == 0), axis=(-2, -1))


def probability_of_improvement(
    x_tasks: Sequence[Sequence[float]],
    y_tasks: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """rliable's probability of improvement of X over Y: per task, P(X > Y) with ties counting
    half, averaged over tasks; a stratified bootstrap interval (no interval when a task has fewer
    than 2 runs on a side)."""
    xs = [np.asarray(t, dtype=float) for t in x_tasks]
    ys = [np.asarray(t, dtype=float) for t in y_tasks]
    if len(xs) != len(ys) or not xs:
        raise ValueError("probability_of_improvement needs the same tasks, at least one, on both sides")
    value = float(np.mean([_improvement(x, y) for x, y in zip(xs, ys, strict=True)]))
    if any(a.size < 2 for a in (*xs, *ys)):
        return Interval(value)
    k = len(xs)

    def statistic(*samples: np.ndarray, axis: int = -1) -> Any:
        return np.mean([_improvement(samples[i], samples[k + i]) for i in range(k)], axis=0)

    return _bootstrapped(value, [*xs, *ys], statistic, confidence, resamples, seed)


def nemenyi_q(methods: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical value q_α for ``methods`` methods: the studentized range quantile over √2
    (Demšar 2006, Table 5: 2.569 for 4 methods at α = 0.05)."""
    return float(stats.studentized_range.ppf(1 - alpha, methods, np.inf) / math.sqrt(2))


def critical_difference(methods: int, benchmarks: int, alpha: float = 0.05) -> float:
    """The smallest difference of average ranks Nemenyi's test tells apart (Demšar 2006, eq. 5)."""
    return nemenyi_q(methods, alpha) * math.sqrt(methods * (methods + 1) / (6 * benchmarks))


def average_ranks(accuracies: np.ndarray) -> np.ndarray:
    """Mean rank of each column (method) over the rows (benchmarks): 1 = the highest accuracy,
    ties share their mean rank."""
    return np.mean(stats.rankdata(-np.asarray(accuracies, dtype=float), axis=1), axis=0)


def score_distribution(tasks: Sequence[Sequence[float]], taus: Sequence[float]) -> np.ndarray:
    """rliable's performance profile: for each τ, the fraction of runs scoring above τ, each
    task weighted equally."""
    taus = np.asarray(taus, dtype=float)
    return np.mean([np.mean(np.asarray(t, dtype=float)[None, :] > taus[:, None], axis=1) for t in tasks], axis=0)


def kendall_tau(
    x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95, resamples: int = RESAMPLES
) -> tuple[Interval, float]:
    """Kendall's τ-b of paired ``x`` and ``y`` with its percentile bootstrap interval (pairs
    resampled together) and scipy's two-sided p-value. No interval below :data:`MIN_PAIRS` pairs,
    or when a resample had no τ (all its x or all its y equal)."""
    result = stats.kendalltau(x, y)
    tau, p = float(result.statistic), float(result.pvalue)
    if len(x) < MIN_PAIRS or not math.isfinite(tau):
        return Interval(tau), p

    def statistic(a: np.ndarray, b: np.ndarray) -> float:
        return stats.kendalltau(a, b).statistic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # a NaN resample: no interval, below
        interval = stats.bootstrap(
            (np.asarray(x, dtype=float), np.asarray(y, dtype=float)),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        ).confidence_interval
    low, high = float(interval.low), float(interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return Interval(tau), p
    return Interval(tau, low, high), p


def flatness_correlations(
    benchmark: str, rows: Sequence[Mapping[str, Any]], *, confidence: float = 0.95, resamples: int = RESAMPLES
) -> list[FlatnessCorrelation]:
    """Kendall's τ between each flatness measure and the generalization gap (test loss − training
    loss) over ``benchmark``'s completed runs that measured it; measures with fewer than 3 runs
    are left out."""
    found = []
    for column in FLATNESS_MEASURES:
        pairs = []
        for row in rows:
            if row["benchmark"] != benchmark or row["status"] != "completed":
                continue
            values = (row.get(column), row.get("test_loss"), row.get("train_loss"))
            if any(v is None or not math.isfinite(float(v)) for v in values):
                continue
            pairs.append((float(values[0]), float(values[1]) - float(values[2])))
        if len(pairs) >= 3:
            tau, p = kendall_tau(*zip(*pairs, strict=True), confidence=confidence, resamples=resamples)
            found.append(FlatnessCorrelation(benchmark, column, len(pairs), tau, p))
    return found


# ------------------------------------------------------------------ the board


def caution(
    methods: Sequence[SuiteMethod],
    baseline: str,
    errors: Mapping[str, float],
    benchmarks: Sequence[str],
    baseline_runs: Mapping[str, int],
) -> str | None:
    """One sentence when the aggregates disagree: the IQM's leader is not the best average rank, or
    a method's IQM and its probability of improvement fall on opposite sides of the baseline.

    The score divides by the baseline's error, so a benchmark where the baseline makes few errors
    turns small differences into large scores, and pooling runs weighs a benchmark by its runs."""
    if not methods:
        return None
    leader = methods[0]
    best_rank = min(methods, key=lambda m: m.average_rank)
    opposite = [
        m
        for m in methods
        if m.probability_of_improvement is not None
        and (m.iqm.value > 0) != (m.probability_of_improvement.value > 0.5)
        and m.iqm.value != 0
        and m.probability_of_improvement.value != 0.5
    ]
    if leader.average_rank <= best_rank.average_rank and not opposite:
        return None
    said = []
    if leader.average_rank > best_rank.average_rank:
        said.append(
            f"{leader.regularizer} leads by IQM but {best_rank.regularizer} has the best average rank "
            f"({best_rank.average_rank:.2f} against {leader.average_rank:.2f})"
        )
    for m in opposite:
        side = "above" if m.iqm.value > 0 else "below"
        said.append(
            f"{m.regularizer}'s IQM is {side} {baseline}'s while it beats {baseline} in "
            f"{m.probability_of_improvement.value:.0%} of run pairs"
        )
    smallest = min(benchmarks, key=lambda b: errors[b])
    weights = sorted({baseline_runs[b] for b in benchmarks})
    weighting = (
        f"; runs are pooled, so benchmarks with more runs ({', '.join(map(str, weights))} per method here) weigh more"
        if len(weights) > 1
        else ""
    )
    return (
        f"Caution, the aggregates disagree: {'; '.join(said)}. The score divides by {baseline}'s error, which is "
        f"{errors[smallest]:.1%} on {smallest}: there a small difference in errors is a large score{weighting}. "
        "Read the per-benchmark boards before concluding."
    )


def _run_accuracies(board: BenchmarkBoard, rows: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    """Each method's test accuracies of the runs behind its standing (finite ones)."""
    accuracies = {}
    for standing in board.standings:
        values = [rows[i].get("test_accuracy") for i in standing.behind_run_ids if i in rows]
        values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if values:
            accuracies[standing.regularizer] = values
    return accuracies


def target_speeds(
    boards: Sequence[BenchmarkBoard], curves: Sequence[Mapping[str, Any]], baseline: str
) -> dict[str, TargetSpeed]:
    """Every method's :class:`TargetSpeed` over ``boards``, from the curve table's rows."""
    ratios: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for board in boards:
        found = board_times(board, curves) if board.baseline == baseline else None
        if found is None:
            continue
        times = {t.regularizer: t for t in found[1]}
        base = times.get(baseline)
        for name, t in times.items():
            reached, runs = counts.setdefault(name, [0, 0])
            counts[name] = [reached + t.reached, runs + t.runs]
            if t.passes is not None and base is not None and base.passes:
                ratios.setdefault(name, []).append(t.passes / base.passes)
    return {
        name: TargetSpeed(
            float(np.exp(np.mean(np.log(ratios[name])))) if ratios.get(name) else None,
            len(ratios.get(name, [])),
            reached,
            runs,
        )
        for name, (reached, runs) in counts.items()
    }


def build_suite(
    boards: Sequence[BenchmarkBoard],
    rows: Sequence[Mapping[str, Any]],
    *,
    baseline: str,
    confidence: float = 0.95,
    alpha: float = 0.05,
    resamples: int = RESAMPLES,
    curves: Sequence[Mapping[str, Any]] = (),
) -> SuiteBoard | None:
    """The suite board of ``boards`` (their rows in ``rows``, their learning curves' rows in
    ``curves``); None for fewer than 2 benchmarks."""
    if len(boards) < 2:
        return None
    by_id = {str(r["run_id"]): r for r in rows}
    excluded_benchmarks: list[tuple[str, str]] = []
    scores: dict[str, dict[str, list[float]]] = {}  # benchmark -> method -> scores
    accuracy: dict[str, dict[str, float]] = {}  # benchmark -> method -> mean test accuracy
    runs_of_baseline: dict[str, list[float]] = {}
    for board in boards:
        runs = _run_accuracies(board, by_id)
        if baseline not in runs:
            excluded_benchmarks.append((board.benchmark, f"no {baseline} run with a test accuracy"))
            continue
        baseline_error = 1.0 - float(np.mean(runs[baseline]))
        if baseline_error <= 0:
            excluded_benchmarks.append((board.benchmark, f"{baseline} makes no error: no relative error"))
            continue
        scores[board.benchmark] = {m: [1.0 - (1.0 - a) / baseline_error for a in v] for m, v in runs.items()}
        runs_of_baseline[board.benchmark] = runs[baseline]
        accuracy[board.benchmark] = {m: float(np.mean(v)) for m, v in runs.items()}
    benchmarks = tuple(scores)
    flatness = tuple(
        c
        for board in boards
        for c in flatness_correlations(board.benchmark, rows, confidence=confidence, resamples=resamples)
    )
    present = sorted({m for per in scores.values() for m in per})
    methods = [m for m in present if all(m in scores[b] for b in benchmarks)]
    excluded_methods = tuple(
        (m, "no runs on " + ", ".join(b for b in benchmarks if m not in scores[b])) for m in present if m not in methods
    )
    if len(benchmarks) < 2 or len(methods) < 1:
        return SuiteBoard(
            benchmarks,
            baseline,
            (),
            tuple(excluded_benchmarks),
            excluded_methods,
            tests_note="fewer than 2 benchmarks with scores",
            confidence=confidence,
            alpha=alpha,
            resamples=resamples,
            flatness=flatness,
        )
    matrix = np.array([[accuracy[b][m] for m in methods] for b in benchmarks])
    ranks = dict(zip(methods, average_ranks(matrix), strict=True))
    friedman = friedman_p = cd = None
    nemenyi: dict[tuple[str, str], float] = {}
    tests_note = None
    if len(methods) >= 3:
        friedman, friedman_p = (float(v) for v in stats.friedmanchisquare(*matrix.T))
        cd = critical_difference(len(methods), len(benchmarks), alpha)
        import scikit_posthocs

        p = scikit_posthocs.posthoc_nemenyi_friedman(matrix).to_numpy()
        nemenyi = {
            tuple(sorted((methods[i], methods[j]))): float(p[i, j])  # type: ignore[misc]
            for i in range(len(methods))
            for j in range(i + 1, len(methods))
        }
    else:
        tests_note = f"{len(methods)} method(s) on every benchmark: the rank tests need at least 3"
    entries = []
    short = False
    speeds = target_speeds([b for b in boards if b.benchmark in benchmarks], curves, baseline)
    for m in methods:
        tasks = [scores[b][m] for b in benchmarks]
        short = short or any(len(t) < 2 for t in tasks)
        improvement = (
            None
            if m == baseline
            else probability_of_improvement(
                tasks, [scores[b][baseline] for b in benchmarks], confidence=confidence, resamples=resamples
            )
        )
        entries.append(
            SuiteMethod(
                regularizer=m,
                runs=sum(len(t) for t in tasks),
                iqm=stratified_interval(tasks, iqm, confidence=confidence, resamples=resamples),
                mean=stratified_interval(tasks, np.mean, confidence=confidence, resamples=resamples),
                average_rank=float(ranks[m]),
                probability_of_improvement=improvement,
                scores=tuple(tuple(t) for t in tasks),
                time_to_target=speeds.get(m),
            )
        )
    entries.sort(key=lambda e: (-e.iqm.value, e.average_rank, e.regularizer))
    errors = {b: 1.0 - float(np.mean(runs_of_baseline[b])) for b in benchmarks}
    return SuiteBoard(
        benchmarks,
        baseline,
        tuple(entries),
        tuple(excluded_benchmarks),
        excluded_methods,
        friedman,
        friedman_p,
        cd,
        nemenyi,
        tests_note,
        "a method with a single run on a benchmark (no final seeds) has no interval" if short else None,
        confidence,
        alpha,
        resamples,
        flatness,
        errors,
        caution(entries, baseline, errors, benchmarks, {b: len(scores[b][baseline]) for b in benchmarks}),
    )
