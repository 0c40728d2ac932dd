"""A trial on 2 workers through the real command line: Ray Train (gloo) inside Tune, on CPU.

The same benchmark on 1 worker and on 2 (same global batch, float64) records the same trial; the
2-worker run's checkpoints reach Tune, so a run killed with kill -9 after one resumes from it and
still records that trial. Trials that Tune ends from outside (ASHA) free their workers' resources
for the next ones.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import sharpbench
from tests.plugins import env_with_site, install_distribution
from tests.runner import kill_session, start_sharpbench
from tests.runner import sharpbench as run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loopback-cluster")]

CONFIG = """
benchmark: parallel
dataset: {{name: digits}}
model: {{name: mlp, options: {{hidden: 256, depth: 2}}}}
training: {{epochs: 24, batch_size: 16, learning_rate: 0.05, precision: float64}}
search: {{trials_per_method: 1, seed: 0, asha: {{enabled: false}}, checkpoint_every: 1}}
resources: {{cpus_per_trial: 1, workers_per_trial: {workers}}}
final: {{seeds: []}}
regularizers: [sam]
"""
COMPARED = ["val_accuracy", "val_loss", "train_loss", "test_accuracy", "test_loss", "forward_passes"]


def _config(folder: Path, workers: int) -> Path:
    path = folder / f"workers{workers}.yaml"
    path.write_text(CONFIG.format(workers=workers))
    return path


def _checkpoints(results: Path) -> list[Path]:
    return sorted(results.glob("ray/parallel/*/run_trial_*/checkpoint_*/trainer.pt"))


def _known_to_tune(results: Path) -> bool:
    """A checkpoint exists and Tune saved its experiment state after it (so a resume finds it)."""
    checkpoints = _checkpoints(results)
    try:
        written = checkpoints[0].stat().st_mtime + 0.5 if checkpoints else None
        states = results.glob("ray/parallel/*/experiment_state-*.json")
        return written is not None and any(state.stat().st_mtime > written for state in states)
    except FileNotFoundError:
        return False


def test_two_workers_record_the_one_worker_trial_and_resume_after_kill_9(tmp_path: Path) -> None:
    one = run_cli("run", str(_config(tmp_path, 1)), "--results", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]

    results = tmp_path / "two"
    process = start_sharpbench("run", str(_config(tmp_path, 2)), "--results", str(results), new_session=True)
    deadline = time.monotonic() + 300
    while not _known_to_tune(results) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _known_to_tune(results), "no checkpoint of the 2-worker trial reached Tune"
    killed_at = time.time()
    kill_session(process.pid)  # the driver, its Ray runtime and the trial's workers
    process.communicate(timeout=60)

    resumed = run_cli("run", str(_config(tmp_path, 2)), "--results", str(results))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first, second = sharpbench.rows(tmp_path / "one"), sharpbench.rows(results)
    assert len(first) == len(second) == 1
    # float64 on both sides: the 2 workers' all-reduce only reorders the sums (~1e-16 a step); over
    # 24 epochs of SAM that may grow on another CPU, so 1e-6, far below what a per-worker gradient
    # would give (~1e-2, tests/training/test_data_parallel.py).
    for column in COMPARED:
        assert second[column].iloc[0] == pytest.approx(first[column].iloc[0], rel=1e-6), column
    # Resumed from the checkpoint, not started over: the trial's first attempt began before the kill.
    assert second["started_at"].iloc[0].timestamp() < killed_at
    assert second["hardware"].iloc[0].startswith("2 × ")
    assert second["compile_s"].iloc[0] > 0  # the worker group's start, off the trial's clock
    assert not list(results.glob("ray/parallel/*/run_trial_*/workers"))  # the Train run's copies removed
    assert not _checkpoints(results)  # the run ended: its ended trial's checkpoints too


ASHA_CONFIG = """
benchmark: stopped
dataset: {name: digits}
model: {name: mlp, options: {hidden: 32, depth: 1}}
training: {epochs: 4, batch_size: 64, learning_rate: 0.05}
search:
  trials_per_method: 5
  seed: 0
  sampler: random
  asha: {grace_period: 1, reduction_factor: 2}
  space: {learning_rate: {low: 0.00001, high: 1.0, log: true}}
resources: {cpus_per_trial: 1, workers_per_trial: 2}
final: {seeds: [1]}
regularizers: [erm]
"""


def test_trials_asha_stops_free_their_workers_for_the_next_trials(tmp_path: Path) -> None:
    """One slot (2 CPUs, 2 workers of 1 CPU): each trial's workers start only once the previous
    trial's are gone. ASHA ends every trial from outside its Train run (early, or at max_t on its
    last report); a run that left the workers' placement group behind waited forever (seen)."""
    config = tmp_path / "stopped.yaml"
    config.write_text(ASHA_CONFIG)
    results = tmp_path / "r"
    process = start_sharpbench("run", str(config), "--results", str(results), "--num-cpus", "2", new_session=True)
    try:
        out, err = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        out, err = process.communicate(timeout=60)
        pytest.fail(f"the run stalled after {out.count('] ')} trial(s):\n{out[-2000:]}")
    assert process.returncode == 0, err[-3000:]
    rows = sharpbench.rows(results)
    assert len(rows) == 6  # 5 search trials, 1 final run
    assert (rows[rows["phase"] == "search"]["status"] == "stopped").any()  # some stopped early, mid-run
    assert set(rows["status"]) <= {"completed", "stopped"}
    assert not list(results.glob("ray/stopped/*/run_trial_*/workers"))  # aborted runs' copies removed too


FAILING_PLUGIN = """
from dataclasses import dataclass

import torch.distributed as dist

from regularizers import Regularizer, register
from regularizers.base import PassCost


@register("fails_on_rank_one")
@dataclass
class FailsOnRankOne(Regularizer):
    def __post_init__(self):
        super().__post_init__()
        self.steps = 0

    def step(self, closure):
        self.steps += 1
        if self.steps == 3 and dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError("worker 1 gave up at step 3")
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(forward=1, backward=1)
"""


def test_a_worker_that_fails_alone_fails_the_trial_with_its_error_not_a_hang(tmp_path: Path) -> None:
    """Ray Train's reports are collective: a failure report from one worker would wait for the
    others, which wait in an all-reduce for it. The worker raises instead, and the trial fails."""
    site = install_distribution(
        tmp_path / "site",
        "failing_plugin",
        FAILING_PLUGIN,
        {"sharpbench.regularizers": {"fails_on_rank_one": "failing_plugin:FailsOnRankOne"}},
    )
    config = tmp_path / "fails.yaml"
    config.write_text(
        CONFIG.format(workers=2)
        .replace("regularizers: [sam]", "regularizers: [fails_on_rank_one]")
        .replace("checkpoint_every: 1", "checkpoint_every: 1, max_failures: 0")
    )
    started = time.monotonic()
    done = run_cli("run", str(config), "--results", str(tmp_path / "r"), env=env_with_site(site), timeout=300)
    assert time.monotonic() - started < 240, "the failed trial hung"
    rows = sharpbench.rows(tmp_path / "r")
    assert len(rows) == 1 and rows["status"].iloc[0] == "failed", done.stderr[-3000:]
    assert rows["failure_class"].iloc[0] == "error"
    assert "worker 1 gave up at step 3" in rows["error"].iloc[0]
