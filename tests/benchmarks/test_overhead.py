"""The orchestration benchmark's bookkeeping (no timing is asserted: it prints figures) and its
answers to bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.benchmarks.overhead import DEFAULT_CONFIG, RayRun, TrialTiming, _bench_config
from bench.config import load_config


def test_where_a_ray_runs_time_went():
    # Called at t=100 s, returned at t=120 s; trials of 4 s, 5 s and 3 s ending at 107, 113, 118.
    trials = (TrialTiming("s/a", 4.0, 107.0), TrialTiming("s/b", 5.0, 113.0), TrialTiming("s/c", 3.0, 118.0))
    run = RayRun(wall_seconds=20.0, called=100.0, trials=trials, load=0.0, driver_cpu_seconds=3.0)
    # Sums of a few small binary fractions of exactly representable values: exact in float64.
    assert [t.started for t in trials] == [103.0, 108.0, 115.0]
    assert run.trial_seconds == 12.0
    assert run.before_first == 3.0
    assert run.gaps == [1.0, 2.0]
    assert run.tail == 2.0
    assert run.before_first + sum(run.gaps) + run.trial_seconds + run.tail == run.wall_seconds


def test_the_benchmark_config_is_one_method_with_identical_work_per_trial():
    base = load_config(DEFAULT_CONFIG)
    config = _bench_config(base, trials=5, epochs=7, width=24, concurrency=2)
    assert [entry.name for entry in config.regularizers] == ["erm"]
    assert config.search.trials_per_method == 5 and config.search.max_concurrent_trials == 2
    assert not config.search.asha.enabled  # no trial is stopped early: equal work on both sides
    assert config.final.seeds == [] and config.flatness.when == "off"
    assert config.training.epochs == 7 and config.model.options["width"] == 24
    assert config.resources.cpus_per_trial == 1.0 and config.resources.gpus_per_trial == 0.0
    assert config.dataset == base.dataset and config.training.batch_size == base.training.batch_size


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["overhead", "--trials", "0"], "--trials must be at least 1"),
        (["overhead", "--repeats", "0"], "--repeats must be at least 1"),
        (["overhead", "--long-seconds", "0"], "--long-seconds must be positive"),
        (["overhead", "--long-width", "0"], "--long-width must be at least 1"),
        (["overhead", "--throughput-seconds", "-1"], "--throughput-seconds must be 0 (skip) or positive"),
        (["overhead", "--config", "/nonexistent/benchmark.yaml"], "config file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(arguments, message, repo_root):
    done = subprocess.run(
        [sys.executable, "-m", "bench.benchmarks.orchestration", *arguments],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert "ray.init" not in done.stdout  # stopped before starting anything
