"""The simulated-scale benchmark's shape and its command line (its figures come from running it)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from bench.benchmarks.scale import METHODS, DriverMeter, ScaleFigure, setup_for
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


def test_cost_by_part_is_the_cpu_between_the_samples_at_each_boundary(tmp_path) -> None:
    meter = DriverMeter(tmp_path)
    # (CPU seconds, trials ended): 1 s for the first 10 trials, then 2, 3, 4 s for the next tens.
    meter.samples = [(0.0, 0), (0.5, 4), (1.0, 10), (3.0, 20), (6.0, 30), (8.0, 35), (10.0, 40)]
    assert meter.ms_per_trial_by_part(40, parts=4) == pytest.approx([100.0, 200.0, 300.0, 400.0])
    # Sampled too rarely for 8 parts: a part within one pair of samples has no figure of its own.
    assert math.isnan(meter.ms_per_trial_by_part(40, parts=8)[1])


def test_the_meter_counts_the_rows_written_while_it_runs(tmp_path) -> None:
    folder = tmp_path / "leaderboard" / "b" / "erm"
    folder.mkdir(parents=True)
    with DriverMeter(tmp_path / "leaderboard", period=0.01) as meter:
        for name in ("a.parquet", "b.parquet", "c.parquet", "notes.txt"):
            (folder / name).write_bytes(b"x")
            time.sleep(0.05)
    counts = [ended for _, ended in meter.samples]
    assert counts[0] == 0 and counts[-1] == 3 and counts == sorted(counts)
    cpu = [seconds for seconds, _ in meter.samples]
    assert cpu == sorted(cpu)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--trials", "4"], "--trials must be ≥ 8"), (["--epoch-seconds", "0"], "--epoch-seconds must be positive")],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.benchmarks.scale", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
