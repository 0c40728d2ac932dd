"""Runs in a hostile environment, through the real CLI (real Ray, Optuna, MLflow, Parquet): SIGTERM
mid-search stops as Ctrl-C does and the resume is exact; readers holding transactions on both
stores for 10 s do not end a run; a results folder named with URL-special characters is used
literally."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bench.results.parquet import read_rows
from tests.runner import sharpbench_command, start_sharpbench

pytestmark = pytest.mark.slow

#: Searched for every method (erm has no hyperparameter of its own: without it, it gets one trial).
SPACE = {"learning_rate": {"low": 0.02, "high": 0.2, "log": True}}


def _start(config: Path, results: Path, repo_root: Path) -> subprocess.Popen:
    return start_sharpbench("run", str(config), "--results", str(results), "--num-cpus", "2", cwd=repo_root)


def _config(tmp_path: Path, **changes) -> Path:
    raw = {
        "benchmark": "hostile",
        "dataset": {"name": "digits", "max_train_samples": 256},
        "model": {"name": "mlp", "options": {"hidden": 32, "depth": 1}},
        "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.1},
        "search": {"trials_per_method": 4, "asha": {"enabled": False}, "max_concurrent_trials": 2, "space": SPACE},
        "final": {"seeds": [1]},
        "regularizers": ["erm", "sam"],
        **changes,
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _counts(results: Path) -> Counter:
    return Counter((r["regularizer"], r["phase"]) for r in read_rows(results).to_pylist())


def test_sigterm_stops_like_ctrl_c_and_the_resume_is_exact(tmp_path, repo_root):
    config = _config(
        tmp_path,
        dataset={"name": "digits"},
        model={"name": "cnn", "options": {"width": 8}},
        training={"epochs": 120, "batch_size": 32, "learning_rate": 0.05},
        search={
            "trials_per_method": 2,
            "asha": {"enabled": False},
            "checkpoint_every": 1,
            "max_concurrent_trials": 2,
            "space": {"learning_rate": {"low": 0.02, "high": 0.1, "log": True}},
        },
        regularizers=["erm"],
    )
    results = tmp_path / "results"
    first = _start(config, results, repo_root)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if list((results / "ray" / "hostile").glob("*/run_trial_*/checkpoint_*")):
            break  # a trial is training and has saved a checkpoint
        time.sleep(0.3)
    assert first.poll() is None, "the run ended before SIGTERM could be sent"
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr[-3000:]
    assert "terminated (SIGTERM)" in stderr and "Resume with: sharpbench run" in stderr
    assert "SIGTERM received" not in stderr and "PC: @" not in stderr  # no native stack dump from Ray's handler
    assert read_rows(results).num_rows == 0  # nothing had ended: no row

    second = _start(config, results, repo_root)
    stdout, stderr = second.communicate(timeout=400)
    assert second.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert _counts(results) == Counter({("erm", "search"): 2, ("erm", "final"): 1})
    assert {r["status"] for r in read_rows(results).to_pylist()} == {"completed"}


def test_readers_holding_the_stores_for_10_s_do_not_end_the_run(tmp_path, repo_root):
    results = tmp_path / "results"
    run = _start(_config(tmp_path), results, repo_root)
    journal, tracking = results / "optuna.journal", results / "mlflow.db"
    deadline = time.monotonic() + 120
    while not (journal.exists() and tracking.exists()) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert run.poll() is None and journal.exists() and tracking.exists()
    # e.g. `mlflow ui` or a notebook in a read transaction, and optuna-dashboard reading the journal
    reader = sqlite3.connect(tracking, timeout=30)
    reader.execute("begin")
    reader.execute("select count(*) from sqlite_master").fetchone()
    readers = [reader]
    journal_reader = journal.open("rb")
    journal_reader.read()
    held_from = time.time()
    # At least 10 s, and until a trial has ended meanwhile (a loaded machine starts trials later).
    while run.poll() is None and time.time() < held_from + 180:
        time.sleep(0.2)
        written = [r["timestamp"].timestamp() for r in read_rows(results).to_pylist()]
        if time.time() >= held_from + 10 and any(t > held_from for t in written):
            break
    held_to = time.time()
    for reader in readers:
        reader.rollback()
        reader.close()
    journal_reader.close()
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "database is locked" not in stdout + stderr
    rows = read_rows(results).to_pylist()
    assert _counts(results) == Counter(
        {("erm", "search"): 4, ("sam", "search"): 4, ("erm", "final"): 1, ("sam", "final"): 1}
    )
    # The run wrote while the readers held their transactions (else this test would prove nothing).
    ended = [r["timestamp"].timestamp() for r in rows]
    assert any(held_from < t < held_to for t in ended), (held_from, held_to, sorted(ended))


def test_a_results_folder_with_url_special_characters_is_taken_literally(tmp_path, repo_root):
    results = tmp_path / "runs 50% noise?#1 é"
    run = _start(
        _config(tmp_path, search={"trials_per_method": 2, "asha": {"enabled": False}, "space": SPACE}),
        results,
        repo_root,
    )
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hostile.yaml", results.name])  # nothing elsewhere
    assert {"optuna.journal", "mlflow.db", "leaderboard", "report.html"} <= {p.name for p in results.iterdir()}
    assert _counts(results) == Counter(
        {("erm", "search"): 2, ("sam", "search"): 2, ("erm", "final"): 1, ("sam", "final"): 1}
    )
    assert "no artifacts" not in stderr  # the artifact folder is recognised as this folder's
    assert any((results / "mlartifacts").iterdir())
    board = subprocess.run(
        sharpbench_command("leaderboard", str(results), "--format", "csv"),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert board.returncode == 0 and "erm" in board.stdout and "sam" in board.stdout, board.stderr
