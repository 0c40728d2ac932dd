"""The verdict line in words, from the board's Holm-adjusted tests."""

from __future__ import annotations

from bench.leaderboard import verdict_line
from bench.leaderboard.verdict import p_text, points

from .conftest import board_of, by_method

ERM = {1: 0.90, 2: 0.91, 3: 0.905, 4: 0.895, 5: 0.915}


def _shifted(by: float, wobble: float = 0.002) -> dict[int, float]:
    return {s: v + by + wobble * (1 if s % 2 else -1) for s, v in ERM.items()}


def test_groups_each_side_and_names_the_untested() -> None:
    board = board_of(
        {
            "erm": ERM,
            "sam": _shifted(0.03),
            "asam": _shifted(0.02),
            "l1": _shifted(0.0005),
            "nrs": _shifted(-0.0005),
            "wd": _shifted(-0.04),
            "gnp": {1: 0.99},  # one final seed: no test
        }
    )
    got = by_method(board)
    line = verdict_line(board)
    assert line.startswith("Verdict vs erm (Holm, α = 0.05): ")
    low, high = sorted(abs(got[m].vs_baseline_difference) * 100 for m in ("sam", "asam"))
    p_max = max(got[m].vs_baseline_p_holm for m in ("sam", "asam"))
    assert f"sam, asam: better by {low:.2f}–{high:.2f} points (p ≤ {p_text(p_max)})" in line
    p_min = min(got[m].vs_baseline_p_holm for m in ("l1", "nrs"))
    assert f"l1, nrs: not distinguishable (p ≥ {p_text(p_min)})" in line
    assert f"wd: worse by {points(got['wd'].vs_baseline_difference)} points (p = " in line
    assert "gnp: no test (fewer than 2 runs on a side)" in line
    # better, then not distinguishable, then worse, then untested
    assert line.index("better") < line.index("not distinguishable") < line.index("worse") < line.index("no test")


def test_p_and_points_formatting() -> None:
    assert (p_text(0.01234), p_text(0.5), p_text(0.0004)) == ("0.012", "0.5", "0.0004")
    assert (points(-0.0033), points(0.05912)) == ("0.33", "5.91")


def test_only_the_baseline_and_no_tests() -> None:
    assert verdict_line(board_of({"erm": ERM})) == "Verdict: only the baseline erm has rows; nothing to compare."
    line = verdict_line(board_of({"erm": {1: 0.9}, "sam": {1: 0.91}}))
    assert line == "Verdict vs erm (Holm, α = 0.05): sam: no test (fewer than 2 runs on a side)."


def test_a_method_identical_to_the_baseline_is_named_as_such() -> None:
    board = board_of({"erm": ERM, "twin": dict(ERM)})
    assert (
        verdict_line(board) == "Verdict vs erm (Holm, α = 0.05): twin: not distinguishable (identical on every seed)."
    )
    assert by_method(board)["twin"].rank == by_method(board)["erm"].rank == 1
