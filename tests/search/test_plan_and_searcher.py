"""The search plan (what each method searches) and the Optuna adapter's trial states."""

from __future__ import annotations

import optuna
import pytest

from bench import metrics
from bench.config import parse_config
from bench.plan import plan_methods, trial_spec
from bench.search import DefineByRun, PruningAwareOptunaSearch
from regularizers.space import Float


def _config(**overrides):
    raw = {
        "benchmark": "unit",
        "model": {"name": "mlp"},
        "training": {"epochs": 4, "learning_rate": 0.05},
        "search": {"space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}}},
        "regularizers": ["erm", {"name": "sam", "space": {"perturbation_radius": {"low": 0.02, "high": 0.2, "log": True}}},
                         {"name": "asam", "fixed": {"perturbation_radius": 1.0}}],
    }
    raw.update(overrides)
    return parse_config(raw)


def test_plan_merges_method_space_config_overrides_and_training_space():
    plans = {p.regularizer: p for p in plan_methods(_config())}
    assert [p.key for p in plans["erm"].params] == ["training/learning_rate"]
    sam_keys = {p.key: p for p in plans["sam"].params}
    assert sam_keys["regularizer/perturbation_radius"].domain == Float(0.02, 0.2, log=True)
    # asam's radius is fixed by the config; its eta is an option (not searched by default)
    assert [p.key for p in plans["asam"].params] == ["training/learning_rate"]
    assert plans["asam"].fixed == {"perturbation_radius": 1.0}
    # the papers' defaults go first, when inside the searched range
    assert plans["sam"].default_point() == {"regularizer/perturbation_radius": 0.05, "training/learning_rate": 0.05}


def test_trial_spec_applies_sampled_values_on_top_of_the_recipe():
    config = _config()
    plan = next(p for p in plan_methods(config) if p.regularizer == "asam")
    spec = trial_spec(config, plan, {"regularizer": {"eta": 0.02}, "training": {"learning_rate": 0.2}, "seed": 7})
    assert spec.regularizer_hparams == {"perturbation_radius": 1.0, "eta": 0.02}
    assert spec.training.learning_rate == 0.2 and spec.training.epochs == 4
    assert spec.seed == 7


def _searcher(plan):
    searcher = PruningAwareOptunaSearch(
        space=DefineByRun(plan.params), metric=metrics.VAL_ACCURACY, mode="max",
        sampler=optuna.samplers.TPESampler(seed=3),
    )
    return searcher


@pytest.mark.parametrize(
    ("last_epoch", "error", "expected"),
    [(4, False, optuna.trial.TrialState.COMPLETE), (2, False, optuna.trial.TrialState.PRUNED), (1, True, optuna.trial.TrialState.FAIL)],
)
def test_early_stopped_trials_reach_optuna_as_pruned(last_epoch, error, expected):
    plan = next(p for p in plan_methods(_config()) if p.regularizer == "sam")
    searcher = _searcher(plan)
    config = searcher.suggest("trial-1")
    assert set(config) == {"regularizer", "training"}
    for epoch in range(1, last_epoch + 1):
        result = {"training_iteration": epoch, metrics.EPOCH: epoch, metrics.EPOCHS_PLANNED: 4, metrics.VAL_ACCURACY: 0.5 + 0.1 * epoch}
        searcher.on_trial_result("trial-1", result)
    searcher.on_trial_complete("trial-1", result=result, error=error)
    trial = searcher._ot_study.trials[0]
    assert trial.state == expected
    assert trial.intermediate_values == {e: pytest.approx(0.5 + 0.1 * e) for e in range(1, last_epoch + 1)}
    if expected == optuna.trial.TrialState.COMPLETE:
        assert trial.value == pytest.approx(0.9)


def test_same_sampler_seed_gives_the_same_configs():
    plan = next(p for p in plan_methods(_config()) if p.regularizer == "sam")
    first, second = _searcher(plan), _searcher(plan)
    assert [first.suggest(f"t{i}") for i in range(3)] == [second.suggest(f"t{i}") for i in range(3)]
