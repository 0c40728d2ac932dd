"""Time to target: the first epoch at the baseline's final validation accuracy, per run, per
method, per benchmark, and across a suite (the geometric mean of the times over the baseline's)."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.leaderboard import build_leaderboard
from bench.leaderboard.suite import build_suite, target_speeds
from bench.leaderboard.target import baseline_target, board_times, time_to_target
from bench.results.curves import read_curves
from bench.results.parquet import read_rows, rows_to_table
from tests.leaderboard.conftest import method_rows
from tests.report.results_folder import write_results

TOL = 1e-12


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return write_results(tmp_path_factory.mktemp("results"))


def _board(folder):
    (board,) = build_leaderboard(read_rows(folder))
    return board, {s.regularizer: s for s in board.standings}


def test_time_to_target_is_the_median_first_epoch_at_the_target(results_dir):
    _, standings = _board(results_dir)
    points = read_curves(results_dir).to_pylist()
    # sam's final seeds validate at 0.95, 0.94, 0.95, reached linearly (results_folder.curve):
    # 0.5 is first reached at epoch 3 by each (0.7125, 0.705), after 30 + 30 passes, 3/4 of the wall time.
    sam = time_to_target(standings["sam"], points, 0.5)
    assert (sam.runs, sam.reached, sam.passes) == (3, 3, 60.0)
    assert sam.seconds == pytest.approx(statistics.median([21.0 * 0.75, 19.0 * 0.75, 20.0 * 0.75]), rel=TOL)
    exact = time_to_target(standings["sam"], points, 0.95)  # reached exactly, at the last epoch, by 2 of 3
    assert (exact.reached, exact.passes) == (2, 80.0)
    never = time_to_target(standings["sam"], points, 0.99)
    assert never.reached == 0 and never.passes is None and never.seconds is None
    assert time_to_target(standings["sam"], [], 0.5) is None


def test_the_target_is_the_median_of_the_baselines_last_epochs(results_dir):
    board, standings = _board(results_dir)
    points = read_curves(results_dir).to_pylist()
    # erm's final seeds end at validation accuracies 0.93, 0.93 and 0.92 (results_folder.TRIALS)
    assert baseline_target(board, points) == pytest.approx(0.93, abs=TOL)
    target, times = board_times(board, points)
    assert target == baseline_target(board, points)
    by_name = {t.regularizer: t for t in times}
    assert by_name["sam"] == time_to_target(standings["sam"], points, target)
    assert by_name["erm"].reached == 2  # the two runs that end at 0.93 reach it, at their last epoch
    assert baseline_target(board, []) is None and board_times(board, []) is None


def _points(run_id: str, accuracies: list[float], passes_per_epoch: float) -> list[dict]:
    return [
        {
            "run_id": run_id,
            "epoch": epoch,
            "val_accuracy": value,
            "forward_passes": passes_per_epoch * epoch / 2,
            "backward_passes": passes_per_epoch * epoch / 2,
            "wall_seconds": float(epoch),
        }
        for epoch, value in enumerate(accuracies, start=1)
    ]


def test_the_suite_compares_each_methods_time_with_the_baselines_by_a_geometric_mean():
    rows = [
        r
        for benchmark in ("a", "b")
        for name, finals in {"erm": {1: 0.8, 2: 0.8}, "sam": {1: 0.85, 2: 0.86}}.items()
        for r in method_rows(name, finals, benchmark)
    ]
    table = rows_to_table(rows)
    boards = build_leaderboard(table)
    behind = {(b.benchmark, s.regularizer): s.behind_run_ids for b in boards for s in b.standings}
    curves = []
    # a: erm ends at 0.6 and 0.8 (target 0.7), first ≥ 0.7 at epoch 3 (run 2 only): 30 passes;
    #    sam reaches 0.7 at epoch 2 in both runs: 2 × 20 passes per epoch = 40 passes. Ratio 4/3.
    # b: erm ends at 0.5 and 0.7 (target 0.6), reached at epoch 2 by run 2: 20 passes;
    #    sam: one run at epoch 1 (20 passes), the other never. Ratio 1.
    for (benchmark, name), ids in behind.items():
        series = {
            ("a", "erm"): ([[0.5, 0.6, 0.6], [0.5, 0.6, 0.8]], 10.0),
            ("a", "sam"): ([[0.6, 0.7, 0.9], [0.6, 0.75, 0.9]], 20.0),
            ("b", "erm"): ([[0.4, 0.5, 0.5], [0.5, 0.6, 0.7]], 10.0),
            ("b", "sam"): ([[0.6, 0.7, 0.9], [0.1, 0.2, 0.3]], 20.0),
        }[(benchmark, name)]
        for run_id, accuracies in zip(ids, series[0], strict=True):
            curves += _points(run_id, accuracies, series[1])
    speeds = target_speeds(boards, curves, "erm")
    assert speeds["erm"].relative_passes == pytest.approx(1.0, abs=TOL) and speeds["erm"].reached == 2
    assert speeds["sam"].relative_passes == pytest.approx(math.sqrt(40 / 30 * 20 / 20), rel=TOL)
    assert (speeds["sam"].benchmarks, speeds["sam"].reached, speeds["sam"].runs) == (2, 3, 4)
    suite = build_suite(boards, table.to_pylist(), baseline="erm", curves=curves)
    assert {m.regularizer: m.time_to_target for m in suite.methods} == speeds
    assert all(m.time_to_target is None for m in build_suite(boards, table.to_pylist(), baseline="erm").methods)
