"""A run whose every trial failed is told apart from one with results (bench.outcome)."""

from __future__ import annotations

from bench.outcome import all_failed, failure_summary
from bench.results.parquet import ParquetSink, read_rows
from tests.results.conftest import make_row


def _rows(tmp_path, statuses, benchmark="b"):
    errors = {"failed": "FloatingPointError: training loss became nan in epoch 1\nmore"}
    ParquetSink(tmp_path).write(
        [
            make_row(run_id=f"s/{i}", benchmark=benchmark, status=status, error=errors.get(status))
            for i, status in enumerate(statuses)
        ]
    )
    return read_rows(tmp_path).to_pylist()


def test_every_trial_failed(tmp_path):
    rows = _rows(tmp_path, ["failed", "failed", "failed"])
    assert all_failed(rows)
    assert failure_summary(rows, "b") == (
        "every one of the 3 trials of b failed; most often (3×): "
        "FloatingPointError: training loss became nan in epoch 1"
    )


def test_one_trial_that_did_not_fail_is_a_result(tmp_path):
    for other in ("completed", "stopped"):
        rows = _rows(tmp_path / other, ["failed", other, "failed"])
        assert not all_failed(rows) and failure_summary(rows, "b") is None


def test_no_rows_is_not_all_failed_and_benchmarks_are_separate(tmp_path):
    assert not all_failed([])
    rows = _rows(tmp_path, ["failed"], benchmark="a")
    assert failure_summary(rows, "a") is not None and failure_summary(rows, "other") is None
