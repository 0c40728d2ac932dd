"""The "Resume with:" command a stopped run prints can be pasted as it is."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.cli import resume_command
from bench.console import Verbosity
from bench.session import RunOptions


def test_the_resume_command_quotes_every_word_and_keeps_where_the_run_records():
    folder = Path("/tmp/runs 50% noise?x#1 'q'")
    options = RunOptions(
        results=folder,
        tracking_uri="http://127.0.0.1:5000",
        optuna_storage="sqlite:////tmp/my studies/optuna.db",
        num_cpus=2,
        verbosity=Verbosity.quiet,
    )
    line = resume_command(["run", "configs/my config.yaml", "--results", str(folder)], options)
    assert shlex.split(line) == [
        "sharpbench",
        "run",
        "configs/my config.yaml",
        "--results",
        str(folder),
        "--tracking-uri",
        "http://127.0.0.1:5000",
        "--optuna-storage",
        "sqlite:////tmp/my studies/optuna.db",
        "--num-cpus",
        "2",
    ]
    plain = resume_command(["final", "results"], RunOptions())
    assert plain == "sharpbench final results"  # nothing given, nothing added
