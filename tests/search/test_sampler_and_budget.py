"""The search's sampler (a model within the budget, Optuna's own samplers) and the equal budget
counted in trials or in passes."""

from __future__ import annotations

import json
import math

import optuna
import pytest

import regularizers
from bench.config import parse_config, startup_trials
from bench.plan import SelectedConfig, plan_methods, trial_spec
from bench.search import DefineByRun, make_sampler, sampler_settings


def _config(**search):
    return parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 12, "learning_rate": 0.05},
            "search": {
                "trials_per_method": 6,
                "seed": 0,
                "space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}},
                **search,
            },
            "regularizers": ["erm", "sam", {"name": "amp", "fixed": {"inner_steps": 3}}],
        }
    )


@pytest.mark.parametrize(("trials", "startup"), [(1, 2), (4, 2), (6, 2), (7, 2), (8, 3), (16, 5), (48, 16)])
def test_startup_trials_are_a_third_of_the_budget_at_least_two(trials, startup):
    assert startup_trials(trials) == startup


def _suggestions(sampler: optuna.samplers.BaseSampler, plan, trials: int) -> list[float]:
    """A sampler's suggested learning rates on a smooth objective (optimum at 0.1), told in order."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = DefineByRun(plan.params)
    values = []
    for _ in range(trials):
        trial = study.ask()
        space(trial)
        lr = trial.params["training/learning_rate"]
        values.append(lr)
        study.tell(trial, -((math.log(lr) - math.log(0.1)) ** 2))
    return values


def test_tpe_models_the_space_within_a_six_trial_budget():
    """With Optuna's default 10 startup trials, TPE's 6 suggestions equal RandomSampler's (random
    search); with the budget's own startup count the last 4 come from the model."""
    config = _config()
    plan = next(p for p in plan_methods(config) if p.regularizer == "erm")
    settings = sampler_settings(config.search, plan.budget.trials)
    assert settings == {
        "name": "tpe",
        "seed": 0,
        "n_startup_trials": 2,
        "multivariate": True,
        "group": True,
        "constant_liar": True,
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = _suggestions(make_sampler(settings), plan, 6)
    random = _suggestions(optuna.samplers.RandomSampler(seed=0), plan, 6)
    default_tpe = _suggestions(optuna.samplers.TPESampler(seed=0, multivariate=True, group=True), plan, 6)
    assert default_tpe == random  # the trap: all 6 inside the default 10 startup trials
    assert tpe[:2] == random[:2]  # the startup trials are the same random draws
    assert all(a != b for a, b in zip(tpe[2:], random[2:], strict=True))  # then TPE proposes its own
    assert make_sampler(settings).__class__ is optuna.samplers.TPESampler


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "cmaes", "qmc"])
def test_every_sampler_is_optunas_own_seeded_and_stays_in_the_space(name):
    config = _config(sampler={"name": name, "n_startup_trials": 1})
    plan = next(p for p in plan_methods(config) if p.regularizer == "sam")
    settings = sampler_settings(config.search, 6)
    assert settings["name"] == name and settings["seed"] == 0
    first = _suggestions(make_sampler(settings), plan, 4)
    second = _suggestions(make_sampler(settings), plan, 4)
    assert first == second  # seeded: the same sequence twice
    assert all(0.01 <= lr <= 0.3 for lr in first)
    json.dumps(settings)  # recorded in rows as JSON


def test_trials_budget_is_the_same_for_every_method():
    plans = plan_methods(_config())
    assert {(p.budget.kind, p.budget.trials, p.budget.epochs) for p in plans} == {("trials", 6, 12)}


@pytest.mark.parametrize("scale", ["trials", "epochs"])
def test_passes_budget_gives_costlier_methods_less(scale):
    config = _config(budget={"kind": "passes", "scale": scale})
    plans = {p.regularizer: p for p in plan_methods(config)}
    for name, plan in plans.items():
        fixed = {"inner_steps": 3} if name == "amp" else {}
        cost = regularizers.create(name, **fixed).cost(False)  # the mlp has no BatchNorm
        assert plan.budget.passes_per_step == cost.forward + cost.backward
    # erm 2 passes/step, sam 4, amp with 3 inner steps 8: ratios 1, 2, 4 to ERM
    expected = {"erm": 1, "sam": 2, "amp": 4}
    for name, ratio in expected.items():
        budget = plans[name].budget
        if scale == "trials":
            assert (budget.trials, budget.epochs) == (math.floor(6 / ratio + 0.5), 12)
            # equal passes up to rounding to the nearest whole trial
            assert abs(budget.trials * ratio - 6) <= ratio / 2
        else:
            assert (budget.trials, budget.epochs) == (6, math.floor(12 / ratio + 0.5))
            assert abs(budget.epochs * ratio - 12) <= ratio / 2
    sam = plans["sam"]
    assert trial_spec(config, sam, {"seed": 0}).training.epochs == sam.budget.epochs
    assert json.loads(sam.budget.to_json())["kind"] == "passes"


def test_searched_epochs_set_ashas_horizon():
    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 2},
            "search": {"space": {"epochs": {"low": 2, "high": 5}}},
            "regularizers": ["erm"],
        }
    )
    (plan,) = plan_methods(config)
    assert plan.max_epochs == 5
    assert trial_spec(config, plan, {"training": {"epochs": 4}}).training.epochs == 4


def test_selected_config_takes_only_the_searched_values_of_a_row():
    config = _config()
    plan = next(p for p in plan_methods(config) if p.regularizer == "sam")
    row = {
        "run_id": "unit-sam-search/abc",
        "regularizer_hparams": json.dumps({"perturbation_radius": 0.07}),
        "training_hparams": json.dumps({"learning_rate": 0.123, "epochs": 12, "momentum": 0.9}),
    }
    selected = SelectedConfig.from_row(plan, row)
    assert selected.config == {"regularizer": {"perturbation_radius": 0.07}, "training": {"learning_rate": 0.123}}
    spec = trial_spec(config, plan, {"selected": selected.to_tune(), "seed": 3})
    assert spec.regularizer_hparams == {"perturbation_radius": 0.07} and spec.training.learning_rate == 0.123
    assert spec.seed == 3


def test_a_method_with_nothing_to_search_runs_one_trial():
    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "search": {"trials_per_method": 6},
            "regularizers": ["erm", "sam", {"name": "asam", "fixed": {"perturbation_radius": 1.0}}],
        }
    )
    trials = {p.regularizer: p.budget.trials for p in plan_methods(config)}
    assert trials == {"erm": 1, "sam": 6, "asam": 1}  # sam searches its radius; the others nothing
