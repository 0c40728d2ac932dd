"""``sharpbench --version``: one line with what a row's provenance records, fast."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from bench import __version__
from bench.provenance import TRACKED_PACKAGES, git_commit
from tests.runner import sharpbench


def test_version_prints_sharpbench_its_commit_and_the_recorded_packages():
    done = sharpbench("--version", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    parts = line.split(" · ")
    head = f"sharpbench {__version__}"
    commit = git_commit()
    if commit:  # run from a checkout (CI, a developer): the abbreviated commit, "-dirty" kept
        head += f" (commit {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})"
    assert parts[0] == head
    expected = {name: importlib.metadata.version(name) for name in TRACKED_PACKAGES if name != "sharpbench"}
    assert dict(part.split(" ", 1) for part in parts[1:]) == {"python": sys.version.split()[0], **expected}


def test_version_imports_none_of_the_heavy_packages():
    """It answers before torch, Ray or MLflow load (seconds each): a quick check of an install."""
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bench.cli import app\n"
        "result = CliRunner().invoke(app, ['--version'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
