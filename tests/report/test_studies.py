"""Optuna studies rebuilt from the search rows: states, values, distributions, importances."""

from __future__ import annotations

import json

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bench.leaderboard import build_leaderboard
from bench.report.studies import SPACE_INFERRED, SPACE_RECORDED, inferred_space, rebuild_study
from bench.results.parquet import read_rows
from tests.report.results_folder import TRIALS, Trial, config, row, write_results

# Importances are normalized to sum to 1 by Optuna; a handful of float64 additions: a few ulps.
SUM_TOL = 1e-9


def _rows(folder, method):
    return [r for r in read_rows(folder).to_pylist() if r["regularizer"] == method]


def test_states_values_and_order_follow_the_rows(results_dir):
    rebuilt = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), config())
    trials = rebuilt.study.trials
    # Search rows only, in order of start (the fixture starts them in index order).
    assert [t.user_attrs["run_id"] for t in trials] == [f"tiny-sam-search/t{i}" for i in (100, 101, 102, 103, 106)]
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert [t.value for t in trials] == [0.91, None, None, 0.94, 0.95]  # the rows' val_accuracy, stored as is
    assert (rebuilt.completed, rebuilt.pruned, rebuilt.failed) == (3, 1, 1)
    assert trials[0].params == {"learning_rate": 0.02, "perturbation_radius": 0.02}


def test_the_study_best_is_the_leaderboards_best(results_dir):
    """Both follow bench.selection: completed trials with a finite metric, in its direction."""
    (board,) = build_leaderboard(read_rows(results_dir))
    for standing in board.standings:
        rebuilt = rebuild_study("tiny", standing.regularizer, _rows(results_dir, standing.regularizer), config())
        assert rebuilt.study.best_trial.user_attrs["run_id"] == standing.best_run_id
        assert rebuilt.study.best_value == standing.best_val_accuracy


def test_recorded_config_gives_the_declared_space(results_dir):
    rebuilt = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), config())
    assert rebuilt.space_source == SPACE_RECORDED
    # configs: learning_rate [0.01, 0.5] log; sam declares perturbation_radius [0.01, 0.5] log.
    assert rebuilt.study.trials[0].distributions == {
        "learning_rate": FloatDistribution(0.01, 0.5, log=True),
        "perturbation_radius": FloatDistribution(0.01, 0.5, log=True),
    }
    assert "declared space" in rebuilt.space_note


def test_without_a_config_the_space_is_inferred(results_dir):
    rebuilt = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), None)
    assert rebuilt.space_source == SPACE_INFERRED
    # Observed ranges: lr 0.02..0.5 (ratio 25: log), rho 0.02..0.45 (ratio 22.5: log).
    assert rebuilt.study.trials[0].distributions == {
        "learning_rate": FloatDistribution(0.02, 0.5, log=True),
        "perturbation_radius": FloatDistribution(0.02, 0.45, log=True),
    }
    assert "no recorded config" in rebuilt.space_note and "max/min ≥ 10" in rebuilt.space_note


def test_a_declared_space_that_misses_a_value_falls_back_to_inference(tmp_path):
    trials = {i: t for i, t in TRIALS.items() if t.regularizer == "erm"}
    trials[4] = Trial("erm", "search", "completed", 0.9, 0.5, 0.5)  # outside the declared [0.01, 0.5]
    rebuilt = rebuild_study("tiny", "erm", _rows(write_results(tmp_path, trials=trials), "erm"), config())
    assert rebuilt.space_source == SPACE_INFERRED
    assert "does not hold every trial's values" in rebuilt.space_note
    assert rebuilt.study.trials[0].distributions == {"learning_rate": FloatDistribution(0.02, 0.9, log=True)}


def _record(index, regularizer_hparams, training=None):
    r = row(
        Trial("sam", "search", "completed", 0.1, 0.9, 0.9, regularizer_hparams=regularizer_hparams), index
    ).to_record()
    if training is not None:
        r["training_hparams"] = json.dumps(training)
    return r


def test_inferred_space_scales_and_types():
    rows = [
        _record(1, {"a": 1.0, "b": 0.01, "k": 2, "kind": "x", "fixed": 3.0}, {"epochs": 4}),
        _record(2, {"a": 5.0, "b": 0.1, "k": 8, "kind": "y", "fixed": 3.0}, {"epochs": 6}),
    ]
    space = inferred_space(rows)
    assert space == {
        ("regularizer", "a"): FloatDistribution(1.0, 5.0, log=False),  # max/min = 5 < 10: linear
        ("regularizer", "b"): FloatDistribution(0.01, 0.1, log=True),  # max/min = 10: log
        ("regularizer", "k"): IntDistribution(2, 8, log=False),
        ("regularizer", "kind"): CategoricalDistribution(["x", "y"]),
        ("training", "epochs"): IntDistribution(4, 6, log=False),
    }  # "fixed" took one value: not searched


def test_a_range_through_zero_is_linear():
    rows = [_record(1, {"a": 0.0}), _record(2, {"a": 100.0})]
    assert inferred_space(rows) == {("regularizer", "a"): FloatDistribution(0.0, 100.0, log=False)}


def test_importances_sum_to_one_and_a_single_parameter_gets_all(results_dir):
    sam = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), config())
    assert set(sam.importances) == {"learning_rate", "perturbation_radius"}
    assert sum(sam.importances.values()) == pytest.approx(1.0, abs=SUM_TOL)
    assert all(v >= 0.0 for v in sam.importances.values())
    erm = rebuild_study("tiny", "erm", _rows(results_dir, "erm"), config())
    assert erm.importances == {"learning_rate": pytest.approx(1.0, abs=SUM_TOL)}
    assert "1 by construction" in erm.importance_note


def test_importances_are_reproducible(results_dir):
    first = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), config()).importances
    second = rebuild_study("tiny", "sam", _rows(results_dir, "sam"), config()).importances
    assert first == second  # seeded fANOVA, same process: bit-identical by contract


def test_importance_cases_that_cannot_be_computed(results_dir, tmp_path):
    asam = rebuild_study("tiny", "asam", _rows(results_dir, "asam"), config())
    assert asam.importances is None and asam.importance_note == "1 completed trial: importance needs at least 2"
    same = {
        0: Trial("erm", "search", "completed", 0.1, 0.9, 0.9),
        1: Trial("erm", "search", "completed", 0.1, 0.8, 0.8),
    }
    folder = write_results(tmp_path / "same", trials=same)
    declared = rebuild_study("tiny", "erm", _rows(folder, "erm"), config())
    assert declared.importances is None and "took one value" in declared.importance_note
    nothing = rebuild_study("tiny", "erm", _rows(folder, "erm"), None)
    assert nothing.importances is None and nothing.importance_note == "no hyperparameter was searched: no importance"


def test_val_loss_searches_minimize(tmp_path):
    trials = {i: t for i, t in TRIALS.items() if t.regularizer == "erm" and t.phase == "search"}
    rows = _rows(write_results(tmp_path, trials=trials), "erm")
    for r in rows:
        r["search_metric"] = "val_loss"
    rebuilt = rebuild_study("tiny", "erm", rows, config())
    assert rebuilt.metric == "val_loss" and rebuilt.study.direction.name == "MINIMIZE"
    assert rebuilt.study.best_value == pytest.approx(
        1.0 - 0.93, abs=1e-15
    )  # val_loss = 1 - val_accuracy in the fixture


def test_no_importance_when_every_completed_trial_scored_the_same():
    """Seen on digits: two completed trials with the same validation accuracy (one image in 359
    is 0.0028) made fANOVA raise "zero total variance"; the report says why instead."""
    import optuna

    from bench.report.studies import _importances

    study = optuna.create_study(direction="maximize")
    distribution = FloatDistribution(0.01, 0.3, log=True)
    for lr in (0.02, 0.2):
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions={"lr": distribution}, value=0.983287)
        )
    importances, note = _importances(study)
    assert importances is None and "scored the same value" in note
