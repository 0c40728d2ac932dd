"""The default board fits 100 columns, on the committed reference results and on hostile input;
intervals stay inside the accuracy's bounds and the board says when n is too small."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import scipy.stats

from bench.leaderboard import NARROW_WIDTH, build_leaderboard, render, verdict_line
from bench.results.parquet import read_rows
from tests.runner import sharpbench_command

from .conftest import board_of, by_method

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
REFERENCES = sorted(p for p in REFERENCE.iterdir() if (p / "leaderboard").is_dir())


@pytest.mark.parametrize("folder", REFERENCES, ids=lambda p: p.name)
def test_reference_board_fits_100_columns_with_its_verdict(folder: Path) -> None:
    boards = build_leaderboard(read_rows(folder))
    text = render(boards, "table")
    assert max(len(line) for line in text.splitlines()) <= NARROW_WIDTH
    flat = " ".join(text.split())  # the caption wraps; the verdict is one sentence
    for board in boards:
        assert " ".join(verdict_line(board).split()) in flat
        for s in board.standings:
            assert s.regularizer in text
    wide = render(boards, "table", wide=True)
    assert max(len(line) for line in wide.splitlines()) > NARROW_WIDTH  # the full table is what --wide is for
    # piped through the CLI: the same narrow board
    done = subprocess.run(
        sharpbench_command("leaderboard", str(folder)), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == text
    done = subprocess.run(
        sharpbench_command("leaderboard", str(folder), "--wide"),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.stdout == wide and "Hyperparameters" in done.stdout


def test_long_and_hostile_names_fold_inside_100_columns() -> None:
    long = "a_method_name_far_longer_than_any_column_" * 2 + "<script>"
    board = board_of({"erm": {1: 0.9, 2: 0.91, 3: 0.92}, long: {1: 0.5, 2: 0.6, 3: 0.55}})
    text = render([board], "table")
    assert max(len(line) for line in text.splitlines()) <= NARROW_WIDTH
    assert "…" not in text and "<script>" in "".join(text.split())  # folded, never cut


def test_intervals_stay_in_bounds_and_few_seeds_are_flagged() -> None:
    near_one = {1: 0.9749 - 0.005, 2: 0.9749 + 0.005}
    board = board_of({"erm": {1: 0.96, 2: 0.97, 3: 0.965}, "sam": near_one})
    sam = by_method(board)["sam"]
    raw = scipy.stats.ttest_1samp(list(near_one.values()), 0.0).confidence_interval()
    assert raw.high > 1.0  # the t-interval itself leaves [0, 1]
    assert (sam.test_accuracy_ci_low, sam.test_accuracy_ci_high) == (pytest.approx(raw.low), 1.0)
    assert sam.test_accuracy_ci_cut and sam.interval_rough
    assert not by_method(board)["erm"].interval_rough  # n = 3
    text = " ".join(render([board], "table").split())
    assert "Too few seeds for a useful interval: sam (n=2)" in text
    assert "Interval cut at the accuracy's bounds [0, 1]: sam." in text
    (parsed,) = json.loads(render([board], "json"))
    (s,) = [x for x in parsed["standings"] if x["regularizer"] == "sam"]
    assert s["test_accuracy_ci_high"] == 1.0 and s["test_accuracy_ci_cut"] is True and s["interval_rough"] is True
    # the difference's interval is cut at ±1 (a difference of two accuracies)
    far = board_of({"erm": {1: 0.01, 2: 0.99, 3: 0.5}, "sam": {1: 0.99, 2: 0.01, 3: 0.5}})
    d = by_method(far)["sam"]
    assert d.vs_baseline_ci_low >= -1.0 and d.vs_baseline_ci_high <= 1.0
