"""The figures' data: the rows behind each standing, their cost, flatness points, the Pareto front."""

from __future__ import annotations

import pytest

from bench.leaderboard import build_leaderboard
from bench.report.data import (
    flatness_points,
    method_curve,
    method_result,
    pareto_front,
    standing_rows,
)
from bench.results.curves import read_curves
from bench.results.parquet import read_rows
from tests.report.results_folder import TRIALS, Trial, row, sam, write_results

# Means of at most three exactly representable inputs: a few ulps of float64 cover any summation order.
TOL = 1e-12


@pytest.mark.parametrize(
    ("costs", "values", "front"),
    [
        ([1.0], [0.5], [0]),
        # A staircase: every point trades cost for accuracy, none dominated.
        ([3.0, 1.0, 2.0], [0.9, 0.7, 0.8], [1, 2, 0]),
        # Point 1 costs more for less; point 2 costs the same as 0 for less; point 3 costs more for the same.
        ([1.0, 2.0, 1.0, 5.0], [0.8, 0.7, 0.6, 0.8], [0]),
        # Equal points do not dominate each other: both stay.
        ([2.0, 2.0, 4.0], [0.9, 0.9, 0.95], [0, 1, 2]),
    ],
)
def test_pareto_front_known_cases(costs, values, front):
    assert pareto_front(costs, values) == front


def test_pareto_front_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="as many costs as values"):
        pareto_front([1.0, 2.0], [0.5])


def _boards(folder):
    table = read_rows(folder)
    rows = table.to_pylist()
    (board,) = build_leaderboard(table)
    return {s.regularizer: s for s in board.standings}, rows


def test_method_results_come_from_the_rows_behind_each_standing(results_dir):
    standings, rows = _boards(results_dir)
    by_method = {m: [r for r in rows if r["regularizer"] == m] for m in standings}
    sam = method_result(standings["sam"], by_method["sam"])
    # The fixture's sam final rows: seeds 1-3, 4 epochs × 10 steps × 2 passes forward and backward each.
    assert [(v.seed, v.test_accuracy) for v in sam.runs] == [
        (1, TRIALS[110].test_accuracy),
        (2, TRIALS[111].test_accuracy),
        (3, TRIALS[112].test_accuracy),
    ]
    assert sam.passes_per_run == pytest.approx(2 * 40, abs=TOL)
    assert sam.seconds_per_run == pytest.approx((21.0 + 19.0 + 20.0) / 3, rel=TOL)
    assert sam.test_accuracy == pytest.approx((0.945 + 0.935 + 0.950) / 3, rel=TOL)
    assert sam.ci_low < sam.test_accuracy < sam.ci_high
    erm = method_result(standings["erm"], by_method["erm"])
    assert erm.passes_per_run == pytest.approx(40, abs=TOL) and [v.seed for v in erm.runs] == [1, 2, 3]
    # asam has no final runs: it stands by its best search trial alone, with no interval.
    asam = method_result(standings["asam"], by_method["asam"])
    assert asam.ranked_by == "search" and [(v.seed, v.test_accuracy) for v in asam.runs] == [(0, 0.91)]
    assert asam.ci_low is None and asam.passes_per_run == pytest.approx(80, abs=TOL)


def test_rows_without_selected_from_match_the_chosen_config(tmp_path):
    """Rows written before schema v2 have no selected_from_run_id: they join the chosen search
    trial by its regularizer hyperparameters (the leaderboard's rule), another config's do not."""
    trials = {i: t for i, t in TRIALS.items() if t.regularizer == "sam" and t.phase == "search"}
    trials[120] = Trial("sam", "final", "completed", 0.1, 0.93, 0.91, 2, sam(0.1), seed=1)
    trials[121] = Trial("sam", "final", "completed", 0.1, 0.93, 0.93, 2, sam(0.1), seed=2)
    trials[122] = Trial("sam", "final", "completed", 0.05, 0.9, 0.5, 2, sam(0.05), seed=3)  # another config
    standings, rows = _boards(write_results(tmp_path, with_config=False, trials=trials))
    behind = standing_rows(standings["sam"], rows)
    assert sorted(r["seed"] for r in behind) == [1, 2]
    assert standings["sam"].seeds == (1, 2)  # the leaderboard's own grouping agrees


def test_flatness_points_keep_completed_runs_with_a_measurement(results_dir):
    rows = read_rows(results_dir).to_pylist()
    points = flatness_points(rows)
    assert sorted((p.hessian_trace, p.hessian_trace_stderr, p.hessian_top_eigenvalue) for p in points) == [
        (35.0, 1.5, 4.0),
        (40.0, 2.0, 5.0),
        (55.0, 3.0, 6.5),
    ]
    assert {p.regularizer for p in points} == {"sam"} and {p.phase for p in points} == {"final"}
    # A failed run with a measurement is not a point: it has no test accuracy to set it against.
    failed = row(Trial("sam", "search", "failed", 0.1, None, None, hessian_trace=1.0), 999).to_record()
    assert flatness_points([failed]) == []


def test_a_methods_curve_is_the_median_and_range_of_the_runs_behind_it(results_dir):
    standings, rows = _boards(results_dir)
    points = read_curves(results_dir).to_pylist()
    by_id = {r["run_id"]: r for r in rows}
    sam = method_curve(standings["sam"], points)
    behind = [by_id[run_id] for run_id in standings["sam"].behind_run_ids]
    assert sam.runs == len(behind) == 3 and sam.ranked_by == "final" and sam.epochs == (1, 2, 3, 4)
    for i, epoch in enumerate(sam.epochs):
        # The fixture's curves (results_folder.curve): accuracy rises linearly to the row's value.
        accuracies = sorted(r["val_accuracy"] * epoch / 4 for r in behind)
        assert sam.val_accuracy[i] == pytest.approx((accuracies[0], accuracies[1], accuracies[2]), rel=TOL)
        assert sam.train_loss[i] == pytest.approx((1 / epoch,) * 3, rel=TOL)
        assert sam.passes[i] == 2 * (80 * epoch // 2 // 4)  # forward + backward, each half of 80 per run
    asam = method_curve(standings["asam"], points)  # its best search trial alone: a band of one run
    assert asam.runs == 1 and asam.ranked_by == "search" and all(low == high for low, _, high in asam.val_accuracy)


def test_a_curve_keeps_the_epochs_every_run_has_with_finite_figures(results_dir):
    standings, _ = _boards(results_dir)
    behind = standings["sam"].behind_run_ids
    points = [p for p in read_curves(results_dir).to_pylist() if p["run_id"] in behind]
    shorter = [p for p in points if not (p["run_id"] == behind[0] and p["epoch"] == 4)]  # one run lost epoch 4
    assert method_curve(standings["sam"], shorter).epochs == (1, 2, 3)
    nan = [{**p, "val_accuracy": float("nan")} if p["epoch"] == 2 and p["run_id"] == behind[1] else p for p in points]
    assert method_curve(standings["sam"], nan).epochs == (1, 3, 4)
    assert method_curve(standings["sam"], []) is None
