"""The learning-curves table: one row per trial × epoch, written whole per trial, read back by
sharpbench, pyarrow, pandas and DuckDB alike, and only for trials that have a row."""

from __future__ import annotations

import math

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import metrics
from bench.results.curves import (
    CURVE_METRICS,
    CURVE_SCHEMA,
    CurveKey,
    CurveWriter,
    curve_path,
    points_of,
    read_curves,
)
from bench.results.parquet import ParquetSink, UnreadableFileWarning
from tests.results.conftest import make_row


def _report(epoch: int, **extra) -> dict:
    return {
        metrics.EPOCH: epoch,
        metrics.TRAIN_LOSS: 1.0 / epoch,
        metrics.VAL_LOSS: 2.0 / epoch,
        metrics.VAL_ACCURACY: 0.5 + epoch / 100,
        metrics.LEARNING_RATE: 0.1,
        metrics.EPOCH_SECONDS: 0.25,
        metrics.WALL_SECONDS: 0.25 * epoch,
        metrics.FORWARD_PASSES: 8 * epoch,
        metrics.BACKWARD_PASSES: 8 * epoch,
        **extra,
    }


def _recorded(results, key: CurveKey, epochs: int) -> None:
    ParquetSink(results).write([make_row(run_id=key.run_id, benchmark=key.benchmark, regularizer=key.regularizer)])
    CurveWriter(results).write(key, {e: points_of(_report(e))[e] for e in range(1, epochs + 1)})


def test_a_batched_report_gives_every_epoch_it_stands_for_and_no_nan():
    report = metrics.batched([_report(1), _report(2), _report(3, **{metrics.VAL_LOSS: math.nan})])
    report["device"] = "cpu"  # text keys of the report are no curve figures
    points = points_of(report)
    assert sorted(points) == [1, 2, 3]
    assert points[2] == {name: _report(2)[name] for name in CURVE_METRICS}
    assert points[3][metrics.VAL_LOSS] is None  # NaN is no value
    assert isinstance(points[3][metrics.FORWARD_PASSES], int) and points[3][metrics.FORWARD_PASSES] == 24
    assert points_of({"done": True}) == {}  # a report without an epoch (Tune's own) has none


def test_a_curve_round_trips_and_a_rewrite_replaces_it_whole(tmp_path):
    key = CurveKey("b-sam-search/t1", "b", "sam", "search", 0)
    writer = CurveWriter(tmp_path)
    writer.write(key, {e: points_of(_report(e))[e] for e in (1, 2)})
    assert sorted(writer.read(key)) == [1, 2]
    writer.write(key, {e: points_of(_report(e))[e] for e in (1, 2, 3)})  # the trial went on
    assert writer.read(key) == {e: points_of(_report(e))[e] for e in (1, 2, 3)}
    assert list(curve_path(tmp_path, key).parent.iterdir()) == [curve_path(tmp_path, key)]  # one file per trial
    assert not any((tmp_path / ".staging").iterdir())  # nothing half-written left behind
    writer.write(key, {})  # no epoch: nothing written, nothing lost
    assert sorted(writer.read(key)) == [1, 2, 3]
    assert writer.read(CurveKey("b-sam-search/t2", "b", "sam", "search", 0)) == {}


def test_read_curves_keeps_recorded_trials_sorted_and_every_reader_agrees(tmp_path):
    erm = CurveKey("b-erm-search/t1", "b", "erm", "search", 0)
    sam = CurveKey("b-sam-final/t2", "b", "sam", "final", 3)
    _recorded(tmp_path, erm, 3)
    _recorded(tmp_path, sam, 2)
    running = CurveKey("b-sam-search/t9", "b", "sam", "search", 0)  # saved at a checkpoint, never ended
    CurveWriter(tmp_path).write(running, {1: points_of(_report(1))[1]})

    table = read_curves(tmp_path)
    assert table.schema == CURVE_SCHEMA
    assert list(zip(table.column("run_id").to_pylist(), table.column("epoch").to_pylist(), strict=True)) == [
        (erm.run_id, 1),
        (erm.run_id, 2),
        (erm.run_id, 3),
        (sam.run_id, 1),
        (sam.run_id, 2),
    ]
    assert table.column("seed").to_pylist()[-1] == 3 and table.column("phase").to_pylist()[-1] == "final"
    assert read_curves(tmp_path, run_ids=[running.run_id]).num_rows == 1  # asked for by name
    # Other readers see the same files (the never-ended trial's too: it is on disk).
    frame = pd.read_parquet(tmp_path / "curves")
    assert len(frame) == 6 and frame.groupby("run_id").size().to_dict() == {
        erm.run_id: 3,
        sam.run_id: 2,
        running.run_id: 1,
    }
    glob = str(tmp_path / "curves" / "**" / "*.parquet")
    assert duckdb.sql(
        f"select max(epoch), sum(forward_passes) from read_parquet('{glob}') where regularizer = 'erm'"
    ).fetchall() == [(3, 8 + 16 + 24)]
    # The same run copied into a second folder is read once.
    other = tmp_path / "copy"
    _recorded(other, erm, 3)
    assert read_curves(tmp_path, other).num_rows == 5


def test_an_unreadable_curve_file_is_skipped_with_a_warning_naming_it(tmp_path):
    key = CurveKey("b-erm-search/t1", "b", "erm", "search", 0)
    _recorded(tmp_path, key, 2)
    path = curve_path(tmp_path, key)
    path.write_bytes(b"not parquet")
    with pytest.warns(UnreadableFileWarning, match=str(path.name)):
        assert read_curves(tmp_path).num_rows == 0
    assert CurveWriter(tmp_path).read(key) == {}  # a resumed trial starts its curve afresh
    pq.write_table(pa.table({"run_id": [key.run_id]}), path)  # a foreign table
    with pytest.warns(UnreadableFileWarning, match="no column"):
        assert read_curves(tmp_path).num_rows == 0


def test_an_empty_folder_has_an_empty_table(tmp_path):
    assert read_curves(tmp_path / "nothing").schema == CURVE_SCHEMA
    assert read_curves(tmp_path / "nothing").num_rows == 0


def test_a_second_read_of_the_curves_opens_only_the_rewritten_one(tmp_path, monkeypatch):
    import bench.results.curves as curves

    keys = [CurveKey(f"b-erm-search/t{i}", "b", "erm", "search", 0) for i in range(3)]
    for key in keys:
        _recorded(tmp_path, key, 2)
    opened = []
    real = curves._read_file
    monkeypatch.setattr(curves, "_read_file", lambda path: opened.append(path) or real(path))
    first = read_curves(tmp_path)
    assert len(opened) == 3 and first.num_rows == 6
    opened.clear()
    assert read_curves(tmp_path).equals(first) and opened == []
    CurveWriter(tmp_path).write(keys[1], {e: points_of(_report(e))[e] for e in (1, 2, 3)})  # the trial went on
    opened.clear()
    table = read_curves(tmp_path)
    assert opened == [curve_path(tmp_path, keys[1])] and table.num_rows == 7
