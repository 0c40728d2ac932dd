"""The Parquet leaderboard dataset: schema, partitions, validation, dedupe, other readers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bench.results.parquet import (
    DATASET_DIRNAME,
    QUARANTINE_DIRNAME,
    STAGING_DIRNAME,
    STALE_STAGING_SECONDS,
    ParquetSink,
    RowValidationError,
    UnreadableFile,
    UnreadableFileWarning,
    clean_staging,
    read_rows,
    run_key,
    tidy_dataset,
)
from bench.results.schema import FILE_SCHEMA, PARTITION_COLUMNS, REQUIRED_COLUMNS, SCHEMA, TrialRow, TrialStatus

NULLABLE_COLUMNS = [f.name for f in SCHEMA if f.nullable]


def _grid_rows(row_factory) -> list[TrialRow]:
    rows = []
    for benchmark in ("digits-mlp", "digits-cnn"):
        for regularizer in ("erm", "sam"):
            for i in range(3):
                rows.append(
                    row_factory(
                        benchmark=benchmark,
                        regularizer=regularizer,
                        status=[TrialStatus.COMPLETED.value, TrialStatus.STOPPED.value, TrialStatus.FAILED.value][i],
                        # one row with every nullable column null, others fully populated
                        **({name: None for name in NULLABLE_COLUMNS} if i == 2 else {}),
                        **(
                            {"hessian_top_eigenvalue": 12.5, "hessian_eigen_iterations": 17, "hessian_eigen_converged": True,
                             "hessian_trace": 300.0, "hessian_trace_stderr": 4.0, "hessian_trace_probes": 42,
                             "epsilon_sharpness": 0.01, "mlflow_run_id": "ab" * 16}
                            if i == 0
                            else {}
                        ),
                    )
                )
    return rows


def _by_run_id(table: pa.Table) -> dict[str, dict]:
    return {r["run_id"]: r for r in table.to_pylist()}


def test_round_trip_every_field_schema_and_partitions(tmp_path: Path, row_factory) -> None:
    rows = _grid_rows(row_factory)
    sink = ParquetSink(tmp_path)
    sink.write(rows[:5])  # several calls, as the driver does once per trial
    sink.write(rows[5:])

    table = read_rows(tmp_path)
    assert table.schema.equals(SCHEMA, check_metadata=True)
    for name in PARTITION_COLUMNS:
        assert table.schema.field(name).type == pa.string()
    assert table.num_rows == len(rows)
    got = _by_run_id(table)
    for row in rows:
        assert got[row.run_id] == row.to_record(), row.run_id
    # every field compared, including nullable ones that were null
    assert any(r[name] is None for r in got.values() for name in NULLABLE_COLUMNS)

    root = tmp_path / DATASET_DIRNAME
    for row in rows:
        # one file per run id, in plain (not key=value) folders, holding every column
        path = root / row.benchmark / row.regularizer / run_key(row.run_id)
        assert path.is_file(), path
        assert pq.read_schema(path).remove_metadata().equals(SCHEMA.remove_metadata())
        assert pq.read_schema(path).metadata[b"sharpbench_schema_version"] == SCHEMA.metadata[b"sharpbench_schema_version"]
        assert pq.read_table(path).num_rows == 1
    assert len(list(root.rglob("*.parquet"))) == len(rows)
    # staging is cleaned up and never inside the dataset
    assert not any((tmp_path / STAGING_DIRNAME).iterdir())
    assert not any(STAGING_DIRNAME in str(p) for p in root.rglob("*"))


def test_one_file_per_run_id(tmp_path: Path, row_factory) -> None:
    sink = ParquetSink(tmp_path)
    rows = [row_factory() for _ in range(3)]
    sink.write(rows[:1])
    sink.write(rows[1:])  # several rows in one call: still one file each
    files = sorted(p.name for p in (tmp_path / DATASET_DIRNAME).rglob("*.parquet"))
    assert files == sorted(run_key(r.run_id) for r in rows)
    assert read_rows(tmp_path).num_rows == 3


def test_empty_and_missing(tmp_path: Path) -> None:
    table = read_rows(tmp_path / "nothing-here")
    assert table.num_rows == 0 and table.schema.equals(SCHEMA, check_metadata=True)
    ParquetSink(tmp_path).write([])
    assert read_rows(tmp_path).num_rows == 0


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_none_in_required_column_rejected_before_writing(tmp_path: Path, row_factory, column: str) -> None:
    good = row_factory()
    bad = dataclasses.replace(row_factory(), **{column: None})
    with pytest.raises(RowValidationError, match=rf"{bad.run_id if column != 'run_id' else 'None'}.*{column}"):
        ParquetSink(tmp_path).write([good, bad])
    assert not (tmp_path / DATASET_DIRNAME).exists()  # the good row was not written either
    assert read_rows(tmp_path).num_rows == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ({"status": "finished"}, "status"),
        ({"phase": "tuning"}, "phase"),
        ({"timestamp": dt.datetime(2026, 1, 1)}, "timezone-aware"),
        ({"benchmark": ""}, "partition column benchmark is empty"),
    ],
)
def test_out_of_domain_values_rejected(tmp_path: Path, row_factory, override: dict, message: str) -> None:
    with pytest.raises(RowValidationError, match=message):
        ParquetSink(tmp_path).write([row_factory(**override)])
    assert not (tmp_path / DATASET_DIRNAME).exists()


def test_duplicate_run_id_in_one_call_rejected(tmp_path: Path, row_factory) -> None:
    row = row_factory()
    with pytest.raises(RowValidationError, match="appears twice"):
        ParquetSink(tmp_path).write([row, dataclasses.replace(row, seed=1)])


def test_enum_values_are_stored_as_their_value(tmp_path: Path, row_factory) -> None:
    row = row_factory(status=TrialStatus.STOPPED)
    ParquetSink(tmp_path).write([row])
    assert read_rows(tmp_path).column("status").to_pylist() == ["stopped"]


def test_latest_timestamp_per_run_id_wins(tmp_path: Path, row_factory) -> None:
    sink = ParquetSink(tmp_path)
    first = row_factory(status=TrialStatus.FAILED.value, test_accuracy=None)
    other = row_factory()
    later = dataclasses.replace(first, status="completed", test_accuracy=0.9, timestamp=first.timestamp + dt.timedelta(hours=1))
    stale = dataclasses.replace(first, status="stopped", timestamp=first.timestamp - dt.timedelta(hours=1))
    sink.write([first, other])
    sink.write([later])
    sink.write([stale])  # written last but older: must not win

    table = read_rows(tmp_path)
    assert table.num_rows == 2
    got = _by_run_id(table)
    assert got[first.run_id] == later.to_record()
    assert got[other.run_id] == other.to_record()

    # equal timestamps: the row written last wins
    again = dataclasses.replace(later, seed=999)
    sink.write([again])
    assert _by_run_id(read_rows(tmp_path))[first.run_id]["seed"] == 999

    # the dataset itself holds each run id once, so a plain pandas read needs no dedupe
    assert len(list((tmp_path / DATASET_DIRNAME).rglob(run_key(first.run_id)))) == 1
    frame = pd.read_parquet(tmp_path / DATASET_DIRNAME)
    assert sorted(frame["run_id"]) == sorted([first.run_id, other.run_id])
    assert frame.set_index("run_id").loc[first.run_id, "seed"] == 999


def test_stray_files_are_ignored(tmp_path: Path, row_factory) -> None:
    row = row_factory()
    ParquetSink(tmp_path).write([row])
    folder = next((tmp_path / DATASET_DIRNAME).rglob("*.parquet")).parent
    (folder / "notes.txt").write_text("not data")
    (folder / ".hidden.parquet").write_bytes(b"partial")
    assert read_rows(tmp_path).to_pylist() == [row.to_record()]


def test_pandas_reads_the_dataset(tmp_path: Path, row_factory) -> None:
    rows = _grid_rows(row_factory)
    ParquetSink(tmp_path).write(rows)
    frame = pd.read_parquet(tmp_path / DATASET_DIRNAME)
    assert len(frame) == len(rows)
    assert set(frame.columns) == set(SCHEMA.names)
    by_id = frame.set_index("run_id")
    for row in rows:
        record = row.to_record()
        assert str(by_id.loc[row.run_id, "benchmark"]) == record["benchmark"]
        assert str(by_id.loc[row.run_id, "regularizer"]) == record["regularizer"]
        assert by_id.loc[row.run_id, "forward_passes"] == record["forward_passes"]
        assert by_id.loc[row.run_id, "timestamp"] == pd.Timestamp(record["timestamp"])
    # the partition columns come from the files, as strings (not dictionary/categorical)
    assert all(type(v) is str for v in frame["benchmark"]) and all(type(v) is str for v in frame["regularizer"])


@pytest.mark.parametrize(
    "benchmark, regularizer",
    [("cifar10/resnet 18", "sam%asam"), ("_private", ".hidden"), ("lr=0.1", "a=b"), ("..", "~")],
)
def test_partition_values_with_special_characters(tmp_path: Path, row_factory, benchmark: str, regularizer: str) -> None:
    row = row_factory(benchmark=benchmark, regularizer=regularizer)
    ParquetSink(tmp_path).write([row])
    assert read_rows(tmp_path).to_pylist() == [row.to_record()]
    root = tmp_path / DATASET_DIRNAME
    (folder,) = root.iterdir()  # the "/" did not nest folders, ".." did not escape
    # pyarrow (hence pandas) skips names starting with "." or "_", and reads "k=v" as a column
    assert not folder.name.startswith((".", "_")) and "=" not in folder.name
    (inner,) = folder.iterdir()
    assert not inner.name.startswith((".", "_")) and "=" not in inner.name
    frame = pd.read_parquet(root)
    assert list(frame["benchmark"]) == [benchmark] and list(frame["regularizer"]) == [regularizer]
    assert set(frame.columns) == set(SCHEMA.names)


def test_relative_results_dir_is_resolved(tmp_path: Path, row_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sink = ParquetSink("results")
    os.chdir("/")
    sink.write([row_factory()])
    assert read_rows(tmp_path / "results").num_rows == 1


# ------------------------------------------------------------------ several results folders


def test_union_of_folders_keeps_the_latest_row_per_run_id(tmp_path: Path, row_factory) -> None:
    here, there = tmp_path / "machine-a", tmp_path / "machine-b"
    only_here, only_there = row_factory(), row_factory()
    shared = row_factory(status=TrialStatus.FAILED.value, test_accuracy=None)
    # the same run id recorded again, later, on the other machine (a retried trial)
    shared_later = dataclasses.replace(shared, status="completed", test_accuracy=0.9, timestamp=shared.timestamp + dt.timedelta(hours=1))
    ParquetSink(here).write([only_here, shared_later])
    ParquetSink(there).write([only_there, shared])  # written last, but the older row

    for order in ((here, there), (there, here)):  # the timestamp decides, not the argument order
        got = _by_run_id(read_rows(*order))
        assert got == {r.run_id: r.to_record() for r in (only_here, only_there, shared_later)}
    assert read_rows(here, here).equals(read_rows(here))  # a folder named twice adds nothing
    assert read_rows(here, tmp_path / "missing").equals(read_rows(here))


def test_union_on_equal_timestamps_keeps_the_file_written_last(tmp_path: Path, row_factory) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    row = row_factory(seed=1)
    ParquetSink(first).write([row])
    ParquetSink(second).write([dataclasses.replace(row, seed=2)])  # same timestamp, written later
    for order in ((first, second), (second, first)):
        assert read_rows(*order).column("seed").to_pylist() == [2]


def test_has_rows(tmp_path: Path, row_factory) -> None:
    from bench.results.parquet import has_rows

    assert not has_rows(tmp_path) and not has_rows(tmp_path / "missing")
    ParquetSink(tmp_path).write([])
    assert not has_rows(tmp_path)
    ParquetSink(tmp_path).write([row_factory()])
    assert has_rows(tmp_path)
