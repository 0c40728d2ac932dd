"""A suite through the real command line: its benchmarks at once on one Ray runtime, Ctrl-C, the
same command again, and every benchmark's record exact; bad input refused before anything starts."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from bench.config import parse_config
from bench.results.parquet import read_rows
from bench.run_record import LOCK_FILENAME, RunRecord, load_records
from bench.suite import LOGS_DIRNAME
from tests.curve_checks import assert_each_row_has_its_curve
from tests.runner import sharpbench, start_sharpbench

SUITE = {
    "suite": "pair",
    "defaults": {
        "dataset": {"name": "digits", "max_train_samples": 256},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        "training": {"epochs": 12, "batch_size": 64, "learning_rate": 0.1},
        "search": {
            "trials_per_method": 2,
            "asha": {"enabled": False},
            "space": {"learning_rate": {"low": 0.02, "high": 0.2, "log": True}},
        },
        "resources": {"cpus_per_trial": 1},
        "final": {"seeds": [1]},
        "regularizers": ["erm", "sam"],
    },
    "benchmarks": [
        {"benchmark": "pair_digits", "dataset": {"label_noise": 0.2}},
        {"benchmark": "pair_table", "dataset": {"name": "breast_cancer"}},
    ],
}
PLANNED = 2 * (2 + 1)  # per benchmark: 2 methods × (2 search trials + 1 final seed)


def _suite(tmp_path, document=SUITE):
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _trial_dirs(results, benchmark):
    return {p.name for p in (results / "ray" / benchmark).glob("*/run_trial_*")}


@pytest.mark.slow
def test_a_suite_runs_its_benchmarks_at_once_and_resumes_each_after_ctrl_c(tmp_path, repo_root):
    path, results = _suite(tmp_path), tmp_path / "results"
    first = start_sharpbench("run", str(path), "--results", str(results), "--num-cpus", "2", cwd=repo_root)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None and not any(results.glob("leaderboard/*/*/*.parquet")):
        time.sleep(0.2)
    assert first.poll() is None, "the suite ended before it could be interrupted"
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=180)
    assert first.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert f"Resume with: sharpbench run {path} --results {results} --num-cpus 2" in stderr
    assert "pair: 2 benchmarks at once on one Ray runtime (12 trials in all)" in stdout
    for name in ("pair_digits", "pair_table"):  # each benchmark's log: the suite's resume line, not its own
        log = (results / LOGS_DIRNAME / "pair" / f"{name}.log").read_text()
        assert f"Resume with: sharpbench run {path} --results {results} --num-cpus 2" in log, log[-2000:]
    interrupted = read_rows(results).num_rows
    assert 0 < interrupted < 2 * PLANNED

    done = sharpbench("run", str(path), "--results", str(results), "--num-cpus", "2", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pair_digits: done (6/6 trials" in done.stdout and "pair_table: done (6/6 trials" in done.stdout
    assert "Suite of 2 benchmarks (pair_digits, pair_table)" in done.stdout
    rows = read_rows(results).to_pylist()
    assert len({row["run_id"] for row in rows}) == len(rows)  # each trial once, across the resume
    for benchmark in ("pair_digits", "pair_table"):
        mine = [row for row in rows if row["benchmark"] == benchmark]
        assert len(mine) == PLANNED and all(row["status"] != "failed" for row in mine)
        assert sorted(row["phase"] for row in mine) == ["final"] * 2 + ["search"] * 4
    assert {row["dataset"] for row in rows} == {"digits", "breast_cancer"}
    assert_each_row_has_its_curve(results)

    # Each benchmark is its own run: its record, its Tune experiment (named by its instance), its log
    records = load_records(results)
    assert sorted(records) == ["pair_digits", "pair_table"]
    for name, record in records.items():
        assert [p.name for p in (results / "ray" / name).iterdir()] == [f"run-{record.instance}"]
        log = (results / LOGS_DIRNAME / "pair" / f"{name}.log").read_text()
        assert log.count("==> ") == 2 and f"--benchmark {name}" in log  # the first attempt and the resume
    # Two drivers on one runtime staged their Tune state apart (they once wrote into each other's folders)
    digits, table = _trial_dirs(results, "pair_digits"), _trial_dirs(results, "pair_table")
    assert len(digits) >= PLANNED and len(table) >= PLANNED and not digits & table
    assert (results / "report.html").is_file()
    assert (results / LOCK_FILENAME).is_file()

    # The suite board of exactly those benchmarks, read back
    board = sharpbench(
        "leaderboard", str(results), "--suite", "--format", "json", "--benchmark", "pair_digits",
        "--benchmark", "pair_table", cwd=repo_root,
    )  # fmt: skip
    assert board.returncode == 0, board.stderr
    assert json.loads(board.stdout)["benchmarks"] == ["pair_digits", "pair_table"]


def test_a_suite_refuses_a_changed_benchmark_before_anything_starts(tmp_path, repo_root):
    path, results = _suite(tmp_path), tmp_path / "results"
    # pair_table was run before with 7 epochs, and left its Tune state: a started run of another config
    old = SUITE["defaults"] | {
        "benchmark": "pair_table",
        "dataset": {"name": "breast_cancer", "max_train_samples": 256},
    }
    old = {**old, "training": {**SUITE["defaults"]["training"], "epochs": 7}}
    RunRecord.new(parse_config(old)).save(results)
    (results / "ray" / "pair_table").mkdir(parents=True)
    done = sharpbench("run", str(path), "--results", str(results), cwd=repo_root)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "suite pair, benchmark pair_table:" in lines[0] and "(differs in training.epochs);" in lines[0]
    assert not (results / LOGS_DIRNAME).exists() and not (results / "mlflow.db").exists()


def test_a_suites_dry_run_shows_every_benchmark_and_the_total(tmp_path, repo_root):
    done = sharpbench("run", str(_suite(tmp_path)), "--dry-run", "--results", str(tmp_path / "r"), cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert "pair_digits: dry run" in done.stdout and "pair_table: dry run" in done.stdout
    assert f"suite pair: 2 benchmarks, {2 * PLANNED} trials in all" in done.stdout
    assert not (tmp_path / "r").exists()


def test_an_unknown_benchmark_of_a_suite_is_one_line(tmp_path, repo_root):
    done = sharpbench("run", str(_suite(tmp_path)), "--benchmark", "pair_tabel", cwd=repo_root)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unknown benchmark 'pair_tabel'" in done.stderr and "did you mean 'pair_table'" in done.stderr
