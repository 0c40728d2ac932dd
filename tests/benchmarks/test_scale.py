"""The simulated-scale benchmark's shape and its command line (its figures come from running it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.benchmarks.scale import METHODS, ScaleFigure, setup_for
from bench.plan import plan_methods


@pytest.mark.parametrize("trials", [8, 100, 1000, 10000])
def test_a_setup_has_the_asked_trials_and_runs_every_trial_whole(trials: int) -> None:
    setup = setup_for(trials, workers=4, gpus_per_worker=16, epochs=2, epoch_seconds=1.0)
    config = setup.config("scale")
    per_method = sum(plan.budget.trials for plan in plan_methods(config)) + len(METHODS) * len(setup.seeds)
    assert per_method == trials  # 4 methods × (search trials + 1 seed)
    assert setup.slots == 64 and config.search.asha.grace_period == config.training.epochs  # nothing stopped early
    assert config.search.sampler.name == "random"


def test_driver_cost_per_trial() -> None:
    assert ScaleFigure(1000, 64, 100.0, 0.95, 12.5).driver_ms_per_trial == pytest.approx(12.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--trials", "4"], "--trials must be ≥ 8"), (["--epoch-seconds", "0"], "--epoch-seconds must be positive")],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.benchmarks.scale", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
