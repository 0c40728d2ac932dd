"""A run that ended removes the checkpoints of its trials that ended without an error (nothing
resumes them); a trial that raised keeps its own, which ``--retry-failed`` resumes from (and
counts once)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sharpbench
from tests.plugins import env_with_site, install_distribution
from tests.runner import sharpbench as run_cli

pytestmark = pytest.mark.slow

CONFIG = """
benchmark: spent
dataset: {name: digits}
model: {name: mlp, options: {hidden: 32, depth: 1}}
training: {epochs: 3, batch_size: 16}
search: {trials_per_method: 1, seed: 0, asha: {enabled: false}, checkpoint_every: 1, max_failures: 0}
final: {seeds: []}
regularizers: [slow_step, fails_in_epoch_two]
"""

PLUGIN = """
import time
from dataclasses import dataclass

from regularizers import Regularizer, register
from regularizers.base import PassCost


@register("slow_step")
@dataclass
class SlowStep(Regularizer):
    # 67 steps an epoch: 2.7 s, more than the 2 s a trial waits between checkpoints
    def __post_init__(self):
        super().__post_init__()
        self.steps = 0

    def step(self, closure):
        self.steps += 1
        time.sleep(0.04)
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(forward=1, backward=1)


@register("fails_in_epoch_two")
@dataclass
class FailsInEpochTwo(SlowStep):
    def step(self, closure):
        if self.steps == 80:  # after the first epoch's checkpoint
            raise RuntimeError("gave up in epoch 2")
        return super().step(closure)
"""


def _checkpoints(results: Path, method: str) -> list[Path]:
    return list(results.glob(f"ray/spent/*/run_trial_*method={method},*/checkpoint_*"))


def test_an_ended_run_keeps_only_the_checkpoints_of_trials_that_raised(tmp_path: Path) -> None:
    site = install_distribution(
        tmp_path / "site",
        "late_plugin",
        PLUGIN,
        {
            "sharpbench.regularizers": {
                m: f"late_plugin:{c}" for m, c in [("slow_step", "SlowStep"), ("fails_in_epoch_two", "FailsInEpochTwo")]
            }
        },
    )
    config = tmp_path / "spent.yaml"
    config.write_text(CONFIG)
    results = tmp_path / "r"
    done = run_cli("run", str(config), "--results", str(results), "--num-cpus", "2", env=env_with_site(site))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = sharpbench.rows(results).set_index("regularizer")
    assert rows.loc["slow_step", "status"] == "completed" and rows.loc["fails_in_epoch_two", "status"] == "failed"
    assert "gave up in epoch 2" in rows.loc["fails_in_epoch_two", "error"]
    assert list(results.glob("ray/spent/*/run_trial_*method=slow_step,*")), "the trial folder itself stays"
    assert _checkpoints(results, "slow_step") == []  # it made two (epochs 1 and 2), as the failed one shows
    assert len(_checkpoints(results, "fails_in_epoch_two")) == 1  # its epoch-1 checkpoint

    retried = run_cli(
        "run", str(config), "--results", str(results), "--num-cpus", "2", "--retry-failed", env=env_with_site(site)
    )
    assert retried.returncode == 0, retried.stderr[-3000:]
    (line,) = [line for line in retried.stdout.splitlines() if line.startswith("[")]
    # resumed from epoch 1: it fails 80 steps later, in epoch 2 again; counted as the search's one trial
    assert line.startswith("[2/2 fails_in_epoch_two search 1/1] failed 2/3 ep") and "all 2/2," in line, line


def test_only_this_runs_folder_is_touched_whatever_path_a_restored_trial_names(tmp_path: Path) -> None:
    """A trial restored from a moved or copied results folder may name its old place (seen): the
    checkpoints removed are those of the trial's folder in this run's experiment folder."""
    from types import SimpleNamespace

    from bench.search.driver import _remove_spent_checkpoints

    old, new = tmp_path / "old" / "run-1", tmp_path / "new" / "run-1"
    for experiment in (old, new):
        for trial in ("run_trial_a", "run_trial_b"):
            for n in (1, 2):
                (experiment / trial / f"checkpoint_00000{n}").mkdir(parents=True)
            (experiment / trial / "result.txt").write_text("kept")
    grid = [
        SimpleNamespace(error=None, path=str(old / "run_trial_a")),  # ended: its checkpoints go, here only
        SimpleNamespace(error=RuntimeError("raised"), path=str(old / "run_trial_b")),  # kept for --retry-failed
        SimpleNamespace(error=None, path=str(old / "run_trial_gone")),  # no folder here: nothing to do
    ]
    _remove_spent_checkpoints(grid, new)
    assert sorted(p.name for p in (new / "run_trial_a").iterdir()) == ["result.txt"]
    assert len(list((new / "run_trial_b").glob("checkpoint_*"))) == 2
    assert len(list(old.glob("*/checkpoint_*"))) == 4  # the old place untouched
