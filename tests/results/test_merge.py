"""Several results folders are ranked as one only where they ran the same config of a benchmark:
different configs under one name are refused with one line (exit 2), or split by config hash."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.merge import config_clashes, config_label, read_rows_by_config
from bench.report.build import ReportError, build_report
from bench.results.parquet import read_rows
from bench.run_record import RECORDS_DIRNAME, RunRecord
from tests.report.results_folder import TRIALS, config, write_results
from tests.runner import sharpbench_command


def _folder(path: Path, *, epochs: int | None = None) -> Path:
    """A results folder of the tiny benchmark; ``epochs`` changes the recorded config (its hash)."""
    write_results(path)
    if epochs is not None:
        changed = config().model_copy(update={"training": config().training.model_copy(update={"epochs": epochs})})
        RunRecord.new(changed).save(path)
    return path


def _hash(folder: Path) -> str:
    return json.loads((folder / RECORDS_DIRNAME / "tiny.json").read_text())["config_hash"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sharpbench_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_same_config_in_two_folders_is_one_benchmark(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b")
    assert _hash(a) == _hash(b)
    assert config_clashes([a, b]) == []
    assert read_rows_by_config([a, b], []).equals(read_rows(a, b))


def test_different_configs_under_one_name_are_found_and_named(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", epochs=9)
    clashes = config_clashes([a, b])
    assert [c.benchmark for c in clashes] == ["tiny"]
    assert clashes[0].hashes == ((a, _hash(a)), (b, _hash(b))) and _hash(a) != _hash(b)
    line = clashes[0].message()
    assert "\n" not in line and config_label("tiny", _hash(a)) in line and config_label("tiny", _hash(b)) in line
    assert "--split-configs" in line


def test_split_configs_ranks_each_config_apart(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", epochs=9)
    table = read_rows_by_config([a, b], config_clashes([a, b]))
    counts = {name: table["benchmark"].to_pylist().count(name) for name in set(table["benchmark"].to_pylist())}
    assert counts == {config_label("tiny", _hash(a)): len(TRIALS), config_label("tiny", _hash(b)): len(TRIALS)}


def test_leaderboard_refuses_mixed_configs_and_splits_on_request(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", epochs=9)
    refused = _cli("leaderboard", str(a), str(b))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "different configs" in lines[0]
    split = _cli("leaderboard", str(a), str(b), "--split-configs", "--format", "json")
    assert split.returncode == 0, split.stderr
    boards = json.loads(split.stdout)
    names = sorted(board["benchmark"] for board in boards)
    assert names == sorted([config_label("tiny", _hash(a)), config_label("tiny", _hash(b))])


def test_report_refuses_mixed_configs_and_splits_on_request(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b", epochs=9)
    with pytest.raises(ReportError, match="different configs"):
        build_report([a, b], tmp_path / "out" / "report.html")
    artifacts = build_report([a, b], tmp_path / "out" / "report.html", split_configs=True)
    page = artifacts.html_path.read_text()
    assert config_label("tiny", _hash(a)) in page and config_label("tiny", _hash(b)) in page


def test_a_folder_without_record_never_clashes(tmp_path):
    a = _folder(tmp_path / "a", epochs=9)
    bare = tmp_path / "bare"
    write_results(bare, with_config=False)
    assert config_clashes([a, bare]) == []
