"""Fixtures of the end-to-end tests: one smoke run through the real CLI, shared by every module; a
CLI run started in the background; the MLflow trial runs of an experiment."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.runner import sharpbench, start_sharpbench


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory, repo_root) -> Path:
    """configs/smoke.yaml run once by ``sharpbench run`` (2 CPUs); stdout.txt and stderr.txt beside it."""
    results = tmp_path_factory.mktemp("smoke") / "results"
    done = sharpbench(
        "run", str(repo_root / "configs/smoke.yaml"), "--results", str(results), "--num-cpus", "2", cwd=repo_root
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results.parent / "stdout.txt").write_text(done.stdout)
    (results.parent / "stderr.txt").write_text(done.stderr)
    return results


@pytest.fixture
def start_run(repo_root: Path) -> Callable[..., subprocess.Popen]:
    """``start(config_path, results, new_session=False)``: ``sharpbench run CONFIG --results DIR
    --num-cpus 2`` in the background, from the repository root. ``new_session``: a process group
    of its own, so a kill -9 of the group takes Ray's processes too, as a killed job would."""

    def start(config_path: Path, results: Path, *, new_session: bool = False) -> subprocess.Popen:
        return start_sharpbench(
            "run",
            str(config_path),
            "--results",
            str(results),
            "--num-cpus",
            "2",
            cwd=repo_root,
            new_session=new_session,
        )

    return start


@pytest.fixture
def child_runs() -> Callable[[MlflowClient, str], list[Run]]:
    """``child_runs(client, experiment)``: the active nested (trial) runs of ``experiment``."""

    def runs(client: MlflowClient, experiment_name: str) -> list[Run]:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return []
        found = client.search_runs([experiment.experiment_id], max_results=1000)
        return [r for r in found if "mlflow.parentRunId" in r.data.tags]

    return runs
