"""The search plan: what each method searches, and the trial a sampled config becomes."""

from __future__ import annotations

from bench.config import parse_config
from bench.plan import plan_methods, trial_spec
from regularizers.space import Float


def _config(**overrides):
    raw = {
        "benchmark": "unit",
        "model": {"name": "mlp"},
        "training": {"epochs": 4, "learning_rate": 0.05},
        "search": {"space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}}},
        "regularizers": [
            "erm",
            {"name": "sam", "space": {"perturbation_radius": {"low": 0.02, "high": 0.2, "log": True}}},
            {"name": "asam", "fixed": {"perturbation_radius": 1.0}},
        ],
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


def test_recipe_warnings_name_the_methods_the_recipe_makes_degenerate():
    from bench.plan import recipe_warnings

    config = _config(
        regularizers=[
            "erm",
            "saf",  # delay_epochs 6 ≥ 4 epochs: the penalty never starts
            "mesa",
            "erm+ema",  # β ≥ 0.99 over 4 × 5 = 20 steps: a horizon of ≥ 100 steps
            {"name": "sam+ema", "space": {"ema_decay": {"low": 0.5, "high": 0.99}}},  # can reach β = 0.5
            {"name": "nso+ema", "fixed": {"ema_decay": 1.0}},
        ]
    )
    lines = recipe_warnings(plan_methods(config), train_samples=320, batch_size=64)  # 5 steps per epoch
    assert [line.split(" ")[0].rstrip(":") for line in lines] == ["saf", "mesa", "erm+ema", "nso+ema"]
    assert "starts after epoch 6 (delay_epochs) but trials train 4 epochs: it is ERM here" in lines[0]
    assert "(at every point of its search range)" in lines[2] and "more than the run's 20" in lines[2]
    assert lines[3].endswith(": ema_decay 1 never moves the average from the initial weights")
    longer = _config(training={"epochs": 40, "learning_rate": 0.05}, regularizers=["saf", "erm+ema"])
    assert recipe_warnings(plan_methods(longer), train_samples=3200, batch_size=64) == []  # 2,000 steps
