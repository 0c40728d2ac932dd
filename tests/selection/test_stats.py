"""bench.stats against hand-computed values and scipy's reference functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from bench import stats
from bench.stats import Interval, compare, holm, holm_adjust_comparisons, rank_groups, summarize

# The statistics run in float64 on a handful of values: a few ulps of rounding, whichever CPU.
TOL = 1e-12


def test_interval_of_1_2_3_by_hand() -> None:
    # mean 2, s = 1, sem = 1/√3, t(0.975, df=2) = 4.302652729749464 (tables; checked with scipy below)
    t = 4.302652729749464
    got = summarize([1.0, 2.0, 3.0])
    assert (got.n, got.mean, got.std) == (3, pytest.approx(2.0, abs=TOL), pytest.approx(1.0, abs=TOL))
    assert got.ci_low == pytest.approx(2 - t / math.sqrt(3), abs=1e-9)
    assert got.ci_high == pytest.approx(2 + t / math.sqrt(3), abs=1e-9)
    assert scipy.stats.t.ppf(0.975, 2) == pytest.approx(t, abs=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_interval_matches_the_t_distribution(confidence: float) -> None:
    values = [0.9926, 0.9911, 0.9942, 0.9899]
    n = len(values)
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = scipy.stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    got = summarize(values, confidence)
    assert got.ci_low == pytest.approx(mean - half, abs=TOL) and got.ci_high == pytest.approx(mean + half, abs=TOL)
    assert got.std == pytest.approx(sd, abs=TOL)


def test_interval_special_cases() -> None:
    assert summarize([]) == stats.Summary(0, None, None, None, None)
    assert summarize([0.75]) == stats.Summary(1, 0.75, None, None, None)  # n < 2: no interval
    # Identical accuracies (the same count of correct images): zero spread, the interval is the point.
    assert summarize([0.9889] * 3) == stats.Summary(3, 0.9889, 0.0, 0.9889, 0.9889)
    with pytest.raises(ValueError, match="finite"):
        summarize([0.5, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        summarize([0.5, 0.6], confidence=1.0)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], abs=TOL)
    # capping at 1 and the single-test case
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0], abs=TOL)
    assert holm([0.2]) == pytest.approx([0.2], abs=TOL)
    assert holm([]) == []
    # four p-values: 4·0.005=0.02, 3·0.011=0.033, 2·0.02=0.04, 1·0.3=0.3
    assert holm([0.3, 0.02, 0.005, 0.011]) == pytest.approx([0.3, 0.04, 0.02, 0.033], abs=TOL)
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_holm_is_not_benjamini_hochberg() -> None:
    # BH is less strict: for these values it adjusts 0.04 down to 0.04, Holm up to 0.06.
    p = [0.01, 0.04, 0.03]
    assert scipy.stats.false_discovery_control(p) == pytest.approx([0.03, 0.04, 0.04], abs=TOL)
    assert holm(p) != pytest.approx(list(scipy.stats.false_discovery_control(p)), abs=1e-3)


def test_paired_when_the_seeds_match() -> None:
    method = {1: 0.93, 2: 0.91, 3: 0.95}
    baseline = {3: 0.92, 1: 0.90, 2: 0.90}  # insertion order must not matter: pairs are by seed
    got = compare(method, baseline)
    reference = scipy.stats.ttest_rel([0.93, 0.91, 0.95], [0.90, 0.90, 0.92])
    assert got.test == stats.PAIRED
    assert got.p_value == pytest.approx(reference.pvalue, abs=TOL)
    # by hand: differences 0.03, 0.01, 0.03 → mean 0.07/3, s = 0.011547, t = mean/(s/√3)
    d = [0.03, 0.01, 0.03]
    mean, s = sum(d) / 3, float(np.std(d, ddof=1))
    assert got.mean_difference == pytest.approx(mean, abs=TOL)
    half = scipy.stats.t.ppf(0.975, 2) * s / math.sqrt(3)
    assert (got.ci_low, got.ci_high) == (pytest.approx(mean - half, abs=TOL), pytest.approx(mean + half, abs=TOL))
    assert got.p_value == pytest.approx(2 * scipy.stats.t.sf(mean / (s / math.sqrt(3)), 2), abs=1e-9)


def test_welch_when_the_seeds_differ() -> None:
    method = {1: 0.93, 2: 0.91, 3: 0.95}
    baseline = {1: 0.90, 2: 0.90, 4: 0.92}
    got = compare(method, baseline)
    reference = scipy.stats.ttest_ind([0.93, 0.91, 0.95], [0.90, 0.90, 0.92], equal_var=False)
    assert got.test == stats.WELCH
    assert got.p_value == pytest.approx(reference.pvalue, abs=TOL)
    interval = reference.confidence_interval()
    assert (got.ci_low, got.ci_high) == (pytest.approx(interval.low, abs=TOL), pytest.approx(interval.high, abs=TOL))
    # by hand: Welch's t and Welch-Satterthwaite degrees of freedom
    a, b = np.array([0.93, 0.91, 0.95]), np.array([0.90, 0.90, 0.92])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert got.p_value == pytest.approx(2 * scipy.stats.t.sf(t, df), abs=1e-9)
    # plain sequences (repeated seeds) and unequal sizes are never paired
    assert compare([0.93, 0.91, 0.95], [0.90, 0.90, 0.92]).test == stats.WELCH
    assert compare({1: 0.9, 2: 0.8}, {1: 0.7, 2: 0.75, 3: 0.8}).test == stats.WELCH


def test_no_test_without_spread_or_runs() -> None:
    one = compare({1: 0.9}, {1: 0.8, 2: 0.85})
    assert one.test is None and one.p_value is None and "fewer than 2" in one.note
    assert one.mean_difference == pytest.approx(0.9 - 0.825, abs=TOL)
    # Dyadic values: the differences are exactly 0.25 and 0.25 on every CPU, so t is 0/0.
    constant_shift = compare({1: 0.75, 2: 0.5}, {1: 0.5, 2: 0.25})
    assert constant_shift.test is None and "paired differences all equal" in constant_shift.note
    assert constant_shift.mean_difference == 0.25  # exact: dyadic arithmetic
    constant = compare([0.5, 0.5], [0.4, 0.4])
    assert constant.test is None and "both sides constant" in constant.note


def test_holm_fills_in_adjusted_p_and_significance() -> None:
    tested = [stats.Comparison(stats.WELCH, 3, 3, 0.1, 0.0, 0.2, p) for p in (0.01, 0.04, 0.03)]
    untested = stats.Comparison(None, 1, 3, 0.1, None, None, None, note="fewer than 2 runs on a side: no test")
    got = holm_adjust_comparisons([tested[0], untested, tested[1], tested[2]], alpha=0.05)
    assert [c.p_holm for c in got] == [pytest.approx(0.03), None, pytest.approx(0.06), pytest.approx(0.06)]
    assert [c.significant for c in got] == [True, None, False, False]
    assert got[1] == untested
    with pytest.raises(ValueError, match="alpha"):
        holm_adjust_comparisons(tested, alpha=0.0)


def test_rank_groups_on_a_hand_made_board() -> None:
    board = [
        Interval("asam", 0.9926, 0.9886, 0.9966),
        Interval("sam", 0.9926, 0.9846, 1.0006),
        Interval("erm", 0.9907, 0.9800, 1.0014),  # overlaps the leader: tied with it
        Interval("wd", 0.9700, 0.9650, 0.9750),  # clear of group 1: leads group 2
        Interval("l1", 0.9690, 0.9600, 0.9700),  # touches wd's interval at 0.9700 (closed): tied with wd
        Interval("gnp", 0.9500, None, None),  # no interval: a point, clear of everything
    ]
    got = [(g.name, g.rank, g.group, g.tied) for g in rank_groups(board)]
    assert got == [
        ("asam", 1, 1, True),  # equal means: name order
        ("sam", 1, 1, True),
        ("erm", 1, 1, True),
        ("wd", 4, 2, True),
        ("l1", 4, 2, True),
        ("gnp", 6, 3, False),
    ]


def test_rank_group_membership_is_against_the_leader_only() -> None:
    # b overlaps the leader a; c overlaps b but not a: c leads group 2 (overlap is not transitive).
    got = rank_groups(
        [Interval("a", 0.90, 0.88, 0.92), Interval("b", 0.87, 0.85, 0.89), Interval("c", 0.84, 0.83, 0.86)]
    )
    assert [(g.name, g.rank, g.tied) for g in got] == [("a", 1, True), ("b", 1, True), ("c", 3, False)]
    # points (no intervals) tie only when equal
    points = rank_groups(
        [Interval("x", 0.7, None, None), Interval("y", 0.7, None, None), Interval("z", 0.6, None, None)]
    )
    assert [(g.name, g.rank, g.tied) for g in points] == [("x", 1, True), ("y", 1, True), ("z", 3, False)]


def test_bounded_interval_is_the_t_interval_cut_at_the_bounds() -> None:
    values = [0.9699, 0.9799]
    raw = scipy.stats.ttest_1samp(values, 0.0).confidence_interval()
    got = summarize(values, bounds=(0.0, 1.0))
    assert raw.high > 1.0 and (got.ci_low, got.ci_high, got.cut) == (pytest.approx(raw.low), 1.0, True)
    assert got.mean == pytest.approx(0.9749) and got.rough  # n = 2 < FEW
    inside = summarize([0.5, 0.52, 0.51], bounds=(0.0, 1.0))
    assert not inside.cut and not inside.rough and inside == summarize([0.5, 0.52, 0.51])
    # the difference of two bounded metrics lies in ±(upper − lower)
    c = compare({1: 0.01, 2: 0.99, 3: 0.5}, {1: 0.99, 2: 0.01, 3: 0.5}, bounds=(0.0, 1.0))
    unbounded = compare({1: 0.01, 2: 0.99, 3: 0.5}, {1: 0.99, 2: 0.01, 3: 0.5})
    assert unbounded.ci_low < -1.0 and c.ci_low == -1.0 and c.ci_high == min(1.0, unbounded.ci_high)
    assert c.p_value == unbounded.p_value


def test_groups_by_tests_follow_the_verdicts() -> None:
    methods = [
        stats.Tested("erm", 0.90, stats.BASELINE),
        stats.Tested("wd", 0.905, stats.WORSE),  # a higher mean, yet worse in the paired test: last
        stats.Tested("sam", 0.93, stats.BETTER),
        stats.Tested("asam", 0.94, stats.SAME),
        stats.Tested("gnp", 0.99, stats.UNTESTED),
    ]
    got = [(g.name, g.rank, g.group, g.tied) for g in stats.groups_by_tests(methods)]
    assert got == [("sam", 1, 1, False), ("asam", 2, 2, True), ("erm", 2, 2, True), ("wd", 4, 3, False)]
    # nothing better: the baseline's group ranks first
    got = [(g.name, g.rank) for g in stats.groups_by_tests(methods[:2])]
    assert got == [("erm", 1), ("wd", 2)]


def test_verdict_of_a_comparison() -> None:
    tested = holm_adjust_comparisons([compare([1.0, 1.2, 1.1], [0.0, 0.1, 0.2]), compare([0.0, 0.1], [0.0, 0.2])])
    assert [stats.verdict(c) for c in tested] == [stats.BETTER, stats.SAME]
    worse = holm_adjust_comparisons([compare([0.0, 0.1, 0.2], [1.0, 1.2, 1.1])])
    assert stats.verdict(worse[0]) == stats.WORSE
    assert stats.verdict(compare([1.0], [2.0, 3.0])) == stats.UNTESTED


def test_a_method_identical_to_the_baseline_on_every_seed_is_not_distinguishable() -> None:
    same = compare({1: 0.9, 2: 0.95}, {1: 0.9, 2: 0.95})
    assert same.p_value is None and same.note == stats.IDENTICAL and stats.verdict(same) == stats.SAME
    shifted = compare({1: 0.91, 2: 0.96}, {1: 0.9, 2: 0.95})  # a constant non-zero shift: t undefined
    assert stats.verdict(shifted) == stats.UNTESTED and "t undefined" in shifted.note
