"""Rank groups agree with the tests: constructed boards where interval overlap and the tests
disagree, and random boards where every pair of ranks is checked against the verdicts."""

from __future__ import annotations

import random

import scipy.stats

from bench import stats
from bench.leaderboard import render
from bench.leaderboard.verdict import p_text

from .conftest import board_of, by_method

SEEDS = (1, 2, 3, 4, 5)


def test_a_method_worse_than_the_baseline_never_shares_its_group() -> None:
    # The case: intervals overlap (the old rule put everyone in group 1), yet the paired
    # test finds weight_decay worse than erm: seed by seed it loses about 0.33 points.
    erm = {1: 0.9700, 2: 0.9800, 3: 0.9750, 4: 0.9650, 5: 0.9850}
    wd = {s: v - 0.0033 + 0.0002 * (s % 2) for s, v in erm.items()}
    sam = {s: v + 0.0010 * (1 if s % 2 else -1) for s, v in erm.items()}
    board = board_of({"erm": erm, "weight_decay": wd, "sam": sam})
    got = by_method(board)
    assert got["weight_decay"].test_accuracy_ci_high > got["erm"].test_accuracy_ci_low  # intervals overlap
    paired = scipy.stats.ttest_rel(list(wd.values()), list(erm.values()))
    assert paired.pvalue < 0.01
    assert got["weight_decay"].vs_baseline_verdict == stats.WORSE
    assert got["sam"].vs_baseline_verdict == stats.SAME
    assert (got["sam"].rank, got["erm"].rank, got["weight_decay"].rank) == (1, 1, 3)
    assert got["weight_decay"].rank_group != got["erm"].rank_group
    text = " ".join(render([board], "table").split())  # the caption wraps
    p_wd = got["weight_decay"].vs_baseline_p_holm
    assert f"weight_decay: worse by 0.32 points (p = {p_text(p_wd)})" in text
    assert "sam: not distinguishable" in text
    assert "Rank: by the tests against erm" in text


def test_random_boards_rank_by_the_verdicts() -> None:
    rng = random.Random(20261207)
    for _ in range(40):
        methods = {"erm": {s: rng.gauss(0.9, 0.01) for s in SEEDS}}
        for i in range(rng.randint(1, 6)):
            shift = rng.choice([-0.03, -0.01, 0.0, 0.01, 0.03])
            n = rng.choice([1, 3, 5])
            methods[f"m{i}"] = {s: methods["erm"][s] + shift + rng.gauss(0, 0.008) for s in SEEDS[:n]}
        board = board_of(methods)
        if board.rank_rule == "intervals":  # every other method had one seed: no test ran
            assert all(s.vs_baseline_p is None for s in board.standings)
            continue
        order = {stats.BETTER: 0, stats.SAME: 1, stats.BASELINE: 1, stats.WORSE: 2}
        ranked = [s for s in board.standings if s.rank is not None]
        assert all(s.vs_baseline_verdict in order for s in ranked)
        assert all(s.rank is None for s in board.standings if s.vs_baseline_verdict == stats.UNTESTED)
        for a in ranked:
            for b in ranked:
                if order[a.vs_baseline_verdict] < order[b.vs_baseline_verdict]:
                    assert a.rank < b.rank, render([board], "table")
                if order[a.vs_baseline_verdict] == order[b.vs_baseline_verdict]:
                    assert (a.rank, a.rank_group) == (b.rank, b.rank_group)
        # the listing: ranked ones first, in rank order
        ranks = [s.rank for s in ranked]
        assert ranks == sorted(ranks) and board.standings[: len(ranked)] == tuple(ranked)


def test_without_a_baseline_the_board_ranks_by_intervals_and_says_so() -> None:
    board = board_of({"sam": {1: 0.90, 2: 0.91, 3: 0.92}, "asam": {1: 0.80, 2: 0.81, 3: 0.80}})
    assert board.rank_rule == "intervals" and board.baseline is None
    assert [(s.regularizer, s.rank) for s in board.standings] == [("sam", 1), ("asam", 2)]
    text = render([board], "table")
    assert "Rank (no baseline on this board): the highest mean leads" in text
    assert "Verdict: no rows of baseline 'erm' on this benchmark: no comparisons." in text
