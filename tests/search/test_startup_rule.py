"""TPE under concurrency: the searcher's startup rule, its suggestion kinds and its gate, driven
through the real searcher and studies (sqlite Optuna storage) by the in-process slot pool of
:mod:`bench.benchmarks.concurrency`; and the mostly-random warning."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from bench.benchmarks.concurrency import SimTrial, simulate
from bench.config import load_config, parse_config
from bench.console import RunProgress
from bench.plan import plan_methods
from bench.search.driver import mostly_random
from bench.search.space import DEFAULT, MODEL, STARTUP, sampler_settings
from bench.search.studies import ATTR_SUGGESTION_KIND, default_storage, load_study, study_name

REPO = Path(__file__).resolve().parents[2]


def _config(trials: int, sampler: str = "tpe", methods: tuple[str, ...] = ("erm",), seed: int = 0, **search):
    return parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 2, "learning_rate": 0.05},
            "search": {
                "trials_per_method": trials,
                "seed": seed,
                "sampler": sampler,
                "space": {"learning_rate": {"low": 1e-3, "high": 1.0, "log": True}},
                **search,
            },
            "regularizers": list(methods),
            "final": {"seeds": []},
        }
    )


def _lr(trial: SimTrial) -> float:
    return float(trial.config["training"]["learning_rate"])


def _evaluate(sampled: dict) -> tuple[float, float]:
    """A smooth objective peaked at lr = 0.03; seconds vary with the config so that trials end
    out of ask order, as real ones do."""
    lr = float(sampled["training"]["learning_rate"])
    return 1.0 - (math.log10(lr) - math.log10(0.03)) ** 2 / 10, 1.0 + (lr * 1000) % 3


def _asked(trials: list[SimTrial]) -> list[SimTrial]:
    return sorted(trials, key=lambda t: t.trial_id)


def test_tpe_at_four_slots_draws_from_its_model_not_randoms_draws(tmp_path):
    """At 4 slots and 12 trials (4 startup trials): the default point, 3 startup draws (the
    same values RandomSampler draws with this seed: the label matches Optuna's own decision),
    then 8 model draws that differ from random search's."""
    tpe = _asked(simulate(_config(12), 4, _evaluate, tmp_path / "tpe"))
    random = _asked(simulate(_config(12, sampler="random"), 4, _evaluate, tmp_path / "random"))
    assert [t.kind for t in tpe] == [DEFAULT] + [STARTUP] * 3 + [MODEL] * 8
    assert [t.kind for t in random] == [DEFAULT] + [STARTUP] * 11
    assert max(t.in_flight for t in tpe) == 4
    for ours, theirs in zip(tpe[:4], random[:4], strict=True):
        assert _lr(ours) == pytest.approx(_lr(theirs), rel=1e-12)
    model = [(_lr(ours), _lr(theirs)) for ours, theirs in zip(tpe[4:], random[4:], strict=True)]
    assert all(a != pytest.approx(b, rel=1e-6) for a, b in model)
    # The model draws were made with trials still running: the constant liar spreads them.
    assert len({round(a, 9) for a, _ in model}) == len(model)


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
def test_startup_draws_stay_within_the_bound_at_any_concurrency(tmp_path, slots):
    """The bound (bench.search.searcher): default point + startup draws ≤ n_startup_trials when
    no trial fails; every other trial is a model draw."""
    config = _config(12)
    startup = sampler_settings(config.search, 12)["n_startup_trials"]
    trials = _asked(simulate(config, slots, _evaluate, tmp_path))
    assert len(trials) == 12
    kinds = [t.kind for t in trials]
    assert kinds.count(DEFAULT) == 1 and kinds.count(DEFAULT) + kinds.count(STARTUP) <= startup
    assert kinds.count(MODEL) == 12 - startup
    assert max(t.in_flight for t in trials) <= slots  # the gate: never more asked than slots
    # Every kind is also on its study trial, for optuna-dashboard and any other reader.
    study = load_study(default_storage(tmp_path), study_name("unit", "erm", f"c{slots}"))
    assert [t.user_attrs[ATTR_SUGGESTION_KIND] for t in study.trials] == kinds


def test_a_startup_trial_that_fails_is_replaced_by_one_more_startup_draw(tmp_path):
    """A failed trial teaches the sampler nothing: the bound grows by one per such trial."""
    config = _config(9)
    startup = sampler_settings(config.search, 9)["n_startup_trials"]
    failed: list[float] = []

    def evaluate(sampled: dict) -> tuple[float, float]:
        value, seconds = _evaluate(sampled)
        if not failed and sampled.get("suggestion_kind") == STARTUP:
            failed.append(value)
            return math.nan, seconds  # the searcher tells a NaN as FAIL
        return value, seconds

    kinds = [t.kind for t in _asked(simulate(config, 4, evaluate, tmp_path))]
    assert len(failed) == 1
    assert kinds.count(DEFAULT) + kinds.count(STARTUP) == startup + 1
    assert kinds.count(MODEL) == 9 - startup - 1


def test_a_startup_blocked_method_gives_its_slot_to_another(tmp_path):
    """Two methods, 8 slots: each issues only its startup trials, then the other slots wait
    (suggest returns None) until a startup trial ends; no method draws a fourth random config."""
    config = _config(9, methods=("erm", "weight_decay"))
    startup = sampler_settings(config.search, 9)["n_startup_trials"]
    trials = _asked(simulate(config, 8, _evaluate, tmp_path))
    first = trials[: 2 * startup]
    assert sorted(t.method for t in first) == ["erm"] * startup + ["weight_decay"] * startup
    assert all(t.kind in (DEFAULT, STARTUP) for t in first) and all(t.asked_at == 0.0 for t in first)
    assert all(t.kind == MODEL and t.asked_at > 0.0 for t in trials[2 * startup :])


def test_random_search_is_never_blocked(tmp_path):
    trials = _asked(simulate(_config(6, sampler="random"), 6, _evaluate, tmp_path))
    assert all(t.asked_at == 0.0 for t in trials) and max(t.in_flight for t in trials) == 6


def _warn(config, slots: int) -> str | None:
    return mostly_random(config, list(plan_methods(config)), slots)


def test_the_warning_names_the_cause_and_the_fix():
    many_slots = _warn(_config(6), 6)
    assert many_slots is not None and "6 concurrent trials ≥ 6 trials per method" in many_slots
    assert "search.max_concurrent_trials below 6" in many_slots
    startup_heavy = _warn(_config(6, sampler={"name": "tpe", "n_startup_trials": 3}), 2)
    assert startup_heavy is not None and "3 of 6 trials per method" in startup_heavy
    assert "n_startup_trials" in startup_heavy
    assert _warn(_config(6, sampler="random"), 6) is None  # random search by choice


def test_no_warning_for_the_default_configs():
    assert _warn(load_config(REPO / "configs/digits.yaml"), 2) is None
    assert _warn(_config(8), 2) is None  # SearchConfig's defaults: 8 trials, startup 3


def test_the_warning_is_one_line_on_the_run_consoles_warning_stream():
    out, err = io.StringIO(), io.StringIO()
    progress = RunProgress(Console(file=out, width=80), [("erm", 6, 0)], warnings=Console(file=err, width=80))
    progress.warn(_warn(_config(6), 6) or "")
    assert out.getvalue() == ""  # the progress stream (stdout in `sharpbench run`) stays for progress
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("warning: search of unit is mostly random")
