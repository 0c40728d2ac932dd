"""A trial whose worker dies (an infrastructure fault, not the method's result) is recorded as
``failed``/``infra`` and replaced: its method still gets its full budget of counted trials, and
the leaderboard says how many were lost."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.results.parquet import read_rows
from tests.plugins import install_distribution
from tests.runner import sharpbench_command

pytestmark = pytest.mark.slow

# A regularizer plug-in (a real distribution on sys.path, found through its entry point) whose
# first step kills its own Ray worker process, once: the marker file records that it did.
PLUGIN = '''
import os
from dataclasses import dataclass

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport


@dataclass
class CrashOnce(Regularizer):
    """ERM, except that the first step of the whole run kills its worker process (no Python
    exception, no cleanup: what Ray sees when a worker dies)."""

    def step(self, closure: BatchClosure) -> StepReport:
        marker = os.environ["CRASH_ONCE_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)
'''


def test_a_killed_worker_is_retried_and_not_counted(tmp_path: Path, repo_root: Path) -> None:
    site = install_distribution(
        tmp_path / "site",
        "crash_once_plugin",
        PLUGIN,
        {"sharpbench.regularizers": {"crash_once": "crash_once_plugin:CrashOnce"}},
    )
    marker = tmp_path / "crashed"
    config = {
        "benchmark": "infra",
        "dataset": {"name": "digits", "max_train_samples": 200},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        "training": {"epochs": 2, "batch_size": 50},
        # max_failures 0: the dead worker ends its trial at once (with retries the retry would pass)
        "search": {
            "trials_per_method": 2,
            "max_failures": 0,
            "asha": {"enabled": False},
            "space": {"learning_rate": {"choices": [0.05]}},
        },
        "regularizers": ["crash_once"],
    }
    config_path = tmp_path / "infra.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "CRASH_ONCE_MARKER": str(marker),
    }
    done = subprocess.run(
        sharpbench_command("run", str(config_path), "--results", str(results), "--num-cpus", "2"),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert marker.exists()

    rows = read_rows(results).to_pylist()
    lost = [r for r in rows if r["failure_class"] == "infra"]
    counted = [r for r in rows if r["failure_class"] != "infra"]
    assert len(lost) == 1 and lost[0]["status"] == "failed", rows
    assert lost[0]["error"] and "\n" not in lost[0]["error"]
    # the full budget of counted trials, both trained to the end
    assert len(counted) == 2 and {r["status"] for r in counted} == {"completed"}, counted
    assert "1 trial lost to infrastructure faults (retried, not counted)" in done.stdout, done.stdout[-3000:]

    board = subprocess.run(
        sharpbench_command("leaderboard", str(results), "--wide"),  # the trial counts are a wide column
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert board.returncode == 0, board.stderr
    assert "2 (2/0/0)" in board.stdout and "1 trial lost to infrastructure faults" in board.stdout, board.stdout
