"""The suite board from real boards: scores by the stated rule, methods and benchmarks left out
with their reason, ranks and tests by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.leaderboard import build_leaderboard
from bench.leaderboard.suite import build_suite, iqm
from bench.results.parquet import rows_to_table
from tests.leaderboard.conftest import method_rows


def _suite(per_benchmark: dict[str, dict[str, dict[int, float]]], baseline: str = "erm"):
    rows = [
        r
        for benchmark, methods in per_benchmark.items()
        for name, finals in methods.items()
        for r in method_rows(name, finals, benchmark)
    ]
    table = rows_to_table(rows)
    return build_suite(build_leaderboard(table, baseline=baseline), table.to_pylist(), baseline=baseline)


SUITE = {
    "a": {"erm": {1: 0.80, 2: 0.82, 3: 0.78}, "sam": {1: 0.85, 2: 0.86, 3: 0.84}, "l1": {1: 0.78, 2: 0.79, 3: 0.77}},
    "b": {"erm": {1: 0.60, 2: 0.62, 3: 0.58}, "sam": {1: 0.70, 2: 0.69, 3: 0.71}, "l1": {1: 0.58, 2: 0.59, 3: 0.57}},
    "c": {"erm": {1: 0.90, 2: 0.91, 3: 0.89}, "sam": {1: 0.92, 2: 0.93, 3: 0.91}, "l1": {1: 0.88, 2: 0.89, 3: 0.87}},
}


def test_scores_are_relative_error_reductions_against_the_baseline():
    suite = _suite(SUITE)
    assert suite.benchmarks == ("a", "b", "c") and suite.baseline == "erm"
    methods = {m.regularizer: m for m in suite.methods}
    error_a = 1 - np.mean([0.80, 0.82, 0.78])
    assert methods["sam"].scores[0] == pytest.approx(tuple(1 - (1 - a) / error_a for a in (0.85, 0.86, 0.84)))
    assert np.mean(methods["erm"].scores[1]) == pytest.approx(0.0, abs=1e-12)  # the baseline's mean scores 0
    pooled = [s for task in methods["sam"].scores for s in task]
    assert methods["sam"].iqm.value == pytest.approx(iqm(pooled), rel=1e-12)
    assert methods["sam"].mean.value == pytest.approx(np.mean(pooled), rel=1e-12)
    assert methods["sam"].iqm.low < methods["sam"].iqm.value < methods["sam"].iqm.high
    assert [m.regularizer for m in suite.methods] == ["sam", "erm", "l1"]  # best IQM first
    # sam beats erm in every pair of runs on a and b; on c, 8 pairs of 9 and one tie (0.91).
    assert methods["sam"].probability_of_improvement.value == pytest.approx((1 + 1 + 8.5 / 9) / 3, rel=1e-12)
    assert methods["erm"].probability_of_improvement is None
    assert methods["sam"].runs == 9


def test_ranks_friedman_and_nemenyi_by_hand():
    suite = _suite(SUITE)
    methods = {m.regularizer: m for m in suite.methods}
    # Mean test accuracy per benchmark (erm, sam, l1): a 0.80, 0.85, 0.78; b 0.60, 0.70, 0.58;
    # c 0.90, 0.92, 0.88: the same order everywhere, ranks 2, 1, 3 (no ties: means ≥ 0.02 apart).
    assert [methods[m].average_rank for m in ("sam", "erm", "l1")] == [1.0, 2.0, 3.0]
    means = {b: {m: np.mean(list(v.values())) for m, v in per.items()} for b, per in SUITE.items()}
    expected = stats.friedmanchisquare(*[[means[b][m] for b in SUITE] for m in ("erm", "sam", "l1")])
    assert suite.friedman_statistic == pytest.approx(expected.statistic) and suite.friedman_p == pytest.approx(
        expected.pvalue
    )
    assert suite.critical_difference == pytest.approx(2.343700586 * np.sqrt(3 * 4 / (6 * 3)), rel=1e-6)
    assert set(suite.nemenyi_p) == {("erm", "sam"), ("l1", "sam"), ("erm", "l1")}
    # Nemenyi by the rank formula: |R_i − R_j| / √(k(k+1)/(6N)), studentized range over √2.
    for (a, b), difference in {("erm", "l1"): 1.0, ("erm", "sam"): 1.0, ("l1", "sam"): 2.0}.items():
        z = difference / np.sqrt(3 * 4 / (6 * 3))
        assert suite.nemenyi_p[(a, b)] == pytest.approx(stats.studentized_range.sf(z * np.sqrt(2), 3, np.inf), rel=1e-6)
    assert suite.distinguishable("l1", "erm") is False  # 1 rank < CD 1.91
    assert suite.distinguishable("l1", "sam") is True  # 2 ranks > CD 1.91


def test_benchmarks_and_methods_left_out_say_why():
    per = {
        **SUITE,
        "no_baseline": {"sam": {1: 0.5, 2: 0.6}},
        "perfect": {"erm": {1: 1.0, 2: 1.0}, "sam": {1: 1.0, 2: 1.0}},
        "d": {"erm": {1: 0.5, 2: 0.6}, "sam": {1: 0.6, 2: 0.7}},  # no l1 here
    }
    suite = _suite(per)
    assert dict(suite.excluded_benchmarks) == {
        "no_baseline": "no erm run with a test accuracy",
        "perfect": "erm makes no error: no relative error",
    }
    assert suite.excluded_methods == (("l1", "no runs on d"),)
    assert [m.regularizer for m in suite.methods] == ["sam", "erm"]
    assert suite.friedman_p is None and "at least 3" in suite.tests_note


def test_a_single_benchmark_is_no_suite_and_one_run_has_no_interval():
    assert _suite({"a": SUITE["a"]}) is None
    suite = _suite({"a": {**SUITE["a"], "gnp": {1: 0.9}}, "b": {**SUITE["b"], "gnp": {1: 0.7}}})
    gnp = next(m for m in suite.methods if m.regularizer == "gnp")
    assert gnp.iqm.low is None and gnp.probability_of_improvement.low is None
    assert "single run" in suite.intervals_note


def test_aggregates_that_disagree_come_with_a_caution():
    """One benchmark where erm makes 1% errors turns sam's half-an-error gain into +0.5, outweighing
    two benchmarks where sam loses: sam leads the IQM, erm the ranks, and the board says why."""
    suite = _suite(
        {
            "easy": {"erm": dict.fromkeys(range(1, 6), 0.99), "sam": dict.fromkeys(range(1, 6), 0.995)},
            "b": {"erm": {1: 0.80, 2: 0.80, 3: 0.80}, "sam": {1: 0.79, 2: 0.79, 3: 0.79}},
            "c": {"erm": {1: 0.70, 2: 0.70, 3: 0.70}, "sam": {1: 0.69, 2: 0.69, 3: 0.69}},
        }
    )
    sam, erm = suite.methods
    assert (
        sam.regularizer == "sam" and sam.iqm.value > 0 and sam.probability_of_improvement.value == pytest.approx(1 / 3)
    )
    assert erm.average_rank < sam.average_rank
    assert suite.baseline_errors["easy"] == pytest.approx(0.01)
    assert suite.caution.startswith(
        "Caution, the aggregates disagree: sam leads by IQM but erm has the best average rank"
    )
    assert "sam's IQM is above erm's while it beats erm in 33% of run pairs" in suite.caution
    assert "1.0% on easy" in suite.caution and "(3, 5 per method here)" in suite.caution
    from bench.leaderboard.suite_render import render_suite

    under = render_suite(suite, "table").split("\n\n", 1)[1]  # the rules, wrapped at 100 columns
    assert " ".join(under.split()).startswith(" ".join(suite.caution.split()))  # first under the table
    assert max(len(line) for line in under.splitlines()) <= 100
    assert _suite(SUITE).caution is None  # the aggregates agree
