"""The suite statistics against hand computations, scipy and textbook values: IQM, stratified
bootstrap intervals (their coverage on simulated scores), probability of improvement, average
ranks, Friedman, Nemenyi and the critical difference (Demšar 2006)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.leaderboard.suite import (
    average_ranks,
    critical_difference,
    iqm,
    nemenyi_q,
    probability_of_improvement,
    score_distribution,
    stratified_interval,
)


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx((3 + 4 + 5 + 6) / 4, rel=1e-15)
    assert iqm([100.0, -100.0, 1.0, 2.0]) == pytest.approx(1.5, rel=1e-15)  # the outliers are cut
    rng = np.random.default_rng(3)
    x = rng.normal(size=37)
    assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), rel=1e-15)


def test_a_stratified_interval_resamples_within_each_task():
    # Constant tasks: every resample is the same, so the interval collapses on the value.
    fixed = stratified_interval([[0.2, 0.2], [0.6, 0.6, 0.6]], np.mean)
    assert fixed.value == pytest.approx(0.44, rel=1e-15) and fixed.low == fixed.high == pytest.approx(0.44, rel=1e-12)
    # Resampling within tasks keeps each task's share: the pooled mean over tasks of 2 and 3 runs
    # stays between the two tasks' own ranges.
    spread = stratified_interval([[0.0, 0.1], [0.9, 1.0, 0.95]], np.mean)
    assert (0.0 + 0.9 * 3) / 5 <= spread.low < spread.value < spread.high <= (0.1 * 2 + 1.0 * 3) / 5
    # Seeded: the same scores, the same interval.
    assert stratified_interval([[0.0, 0.1], [0.9, 1.0, 0.95]], np.mean) == spread
    single = stratified_interval([[0.3], [0.5, 0.7]], iqm)  # a task with one run: no interval
    assert single.low is None and single.high is None and single.value == pytest.approx(iqm([0.3, 0.5, 0.7]))


def test_the_bootstrap_interval_of_the_iqm_covers_the_true_value_about_95_percent_of_the_time():
    """Scores of 4 tasks × 10 runs from normal distributions (a symmetric population: its IQM is
    its mean). 200 simulated suites; the percentile interval's coverage is close to 95%."""
    rng = np.random.default_rng(2026)
    centers = np.array([0.1, 0.3, -0.2, 0.4])
    # The pooled population is a mixture of the tasks' normals: its IQM by quadrature.
    grid = np.linspace(-4, 4, 400_001)
    mixture = np.mean([stats.norm.cdf(grid, c, 0.2) for c in centers], axis=0)
    q1, q3 = np.interp([0.25, 0.75], mixture, grid)
    inside = (grid >= q1) & (grid <= q3)
    density = np.mean([stats.norm.pdf(grid, c, 0.2) for c in centers], axis=0)
    truth = float(np.sum(grid[inside] * density[inside]) / np.sum(density[inside]))
    covered = 0
    repeats = 200
    for _ in range(repeats):
        tasks = [rng.normal(c, 0.2, size=10) for c in centers]
        interval = stratified_interval(tasks, iqm, resamples=1000)
        covered += interval.low <= truth <= interval.high
    assert 0.88 <= covered / repeats <= 0.99, covered


def test_probability_of_improvement_counts_pairs_and_ties_half():
    # Task 1: x = [1, 2] vs y = [1, 0]: pairs (1>1 tie ½, 1>0 1, 2>1 1, 2>0 1) = 3.5/4.
    # Task 2: x = [0, 0] vs y = [1, 1]: 0.
    value = probability_of_improvement([[1, 2], [0, 0]], [[1, 0], [1, 1]])
    assert value.value == pytest.approx((3.5 / 4 + 0.0) / 2, rel=1e-15)
    assert value.low <= value.value <= value.high
    # The U statistic of scipy's Mann–Whitney test over n·m is the same number.
    x, y = [0.3, 0.5, 0.5, 0.9], [0.5, 0.1, 0.2]
    u = stats.mannwhitneyu(x, y).statistic / (len(x) * len(y))
    assert probability_of_improvement([x], [y]).value == pytest.approx(u, rel=1e-15)
    assert probability_of_improvement([[1.0, 2.0]], [[1.0, 2.0]]).value == 0.5  # against itself
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement([[1.0]], [])


def test_average_ranks_give_ties_their_mean_rank():
    accuracies = np.array([[0.9, 0.8, 0.8], [0.7, 0.9, 0.6]])
    # Benchmark 1: ranks 1, 2.5, 2.5; benchmark 2: 2, 1, 3.
    assert average_ranks(accuracies).tolist() == [1.5, 1.75, 2.75]


def test_nemenyi_critical_values_and_difference_match_demsar_2006():
    """Demšar (2006), Table 5(a): q_0.05 for 2 to 6 methods; §3.2.2's example: 4 methods on 14
    data sets give CD = 1.25 at α = 0.05."""
    for methods, q in {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850}.items():
        assert nemenyi_q(methods, 0.05) == pytest.approx(q, abs=1e-3)  # the table truncates to 3 decimals
    assert critical_difference(4, 14, 0.05) == pytest.approx(1.25, abs=5e-3)
    assert nemenyi_q(4, 0.10) == pytest.approx(2.291, abs=1e-3)  # Table 5(a), α = 0.10


def test_nemenyi_p_values_from_scikit_posthocs_agree_with_the_rank_formula():
    """The p-value of a pair is that of |R_i − R_j| / √(k(k+1)/(6N)) under the studentized range
    (divided by √2, as the critical value): the same definition the CD uses."""
    import scikit_posthocs

    rng = np.random.default_rng(7)
    matrix = rng.uniform(size=(9, 4)) + np.array([0.0, 0.1, 0.3, 0.2])
    p = scikit_posthocs.posthoc_nemenyi_friedman(matrix).to_numpy()
    ranks = np.mean(stats.rankdata(matrix, axis=1), axis=0)
    k, n = 4, 9
    for i in range(k):
        for j in range(i + 1, k):
            z = abs(ranks[i] - ranks[j]) / math.sqrt(k * (k + 1) / (6 * n))
            assert p[i, j] == pytest.approx(stats.studentized_range.sf(z * math.sqrt(2), k, np.inf), rel=1e-6)


def test_the_performance_profile_weights_each_task_equally():
    tasks = [[0.1, 0.2, 0.3, 0.4], [0.5]]
    profile = score_distribution(tasks, [0.0, 0.25, 0.45])
    assert profile.tolist() == pytest.approx([1.0, (2 / 4 + 1) / 2, (0 + 1) / 2])


def test_kendall_tau_is_scipys_with_a_bootstrap_interval_over_pairs():
    from bench.leaderboard.suite import kendall_tau

    x = [0.1, 0.4, 0.2, 0.8, 0.5, 0.9, 0.3, 0.7]
    y = [1.0, 2.0, 1.5, 3.5, 2.5, 3.0, 1.2, 4.0]
    tau, p = kendall_tau(x, y, resamples=500)
    expected = stats.kendalltau(x, y)
    assert tau.value == pytest.approx(expected.statistic, rel=1e-15) and p == pytest.approx(expected.pvalue)
    # By hand: 28 pairs, no ties; discordant: (0.2, 1.5)-(0.3, 1.2), (0.7, 4.0)-(0.8, 3.5), (0.7, 4.0)-(0.9, 3.0)
    # and (0.8, 3.5)-(0.9, 3.0): τ = (24 − 4) / 28.
    assert tau.value == pytest.approx(20 / 28, rel=1e-12)
    assert tau.low <= tau.value <= tau.high <= 1.0
    few, _ = kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])  # fewer than MIN_PAIRS: no interval
    assert few.value == -1.0 and few.low is None


def test_flatness_correlations_use_completed_runs_with_a_measure_and_a_gap():
    from bench.leaderboard.suite import flatness_correlations

    def row(trace, test_loss, train_loss, status="completed", benchmark="a"):
        return {
            "benchmark": benchmark,
            "status": status,
            "hessian_trace": trace,
            "hessian_top_eigenvalue": None,
            "epsilon_sharpness": None,
            "test_loss": test_loss,
            "train_loss": train_loss,
        }

    rows = [
        row(10.0, 0.5, 0.1),
        row(20.0, 0.9, 0.2),
        row(30.0, 1.0, 0.1),
        row(40.0, 0.8, 0.3),
        row(99.0, 5.0, 0.1, status="stopped"),  # not completed
        row(None, 1.0, 0.1),  # no measure
        row(50.0, float("nan"), 0.1),  # no gap
        row(60.0, 0.1, 0.0, benchmark="b"),  # another benchmark
    ]
    (found,) = flatness_correlations("a", rows, resamples=200)
    assert found.measure == "hessian_trace" and found.runs == 4
    gaps = [0.4, 0.7, 0.9, 0.5]
    assert found.tau.value == pytest.approx(stats.kendalltau([10, 20, 30, 40], gaps).statistic, rel=1e-12)
    assert flatness_correlations("b", rows) == []  # fewer than 3 runs
