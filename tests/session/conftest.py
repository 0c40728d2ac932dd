"""Fixtures of the end-to-end tests: one smoke run through the real CLI, shared by every module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runner import sharpbench


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory, repo_root) -> Path:
    """configs/smoke.yaml run once by ``sharpbench run`` (2 CPUs); stdout.txt and stderr.txt beside it."""
    results = tmp_path_factory.mktemp("smoke") / "results"
    done = sharpbench("run", str(repo_root / "configs/smoke.yaml"), "--results", str(results), "--num-cpus", "2",
                      cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results.parent / "stdout.txt").write_text(done.stdout)
    (results.parent / "stderr.txt").write_text(done.stderr)
    return results
