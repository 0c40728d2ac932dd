"""The Parquet leaderboard dataset: schema, partitions, validation, dedupe, other readers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
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
from tests.runner import sharpbench_command

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
                            {
                                "hessian_top_eigenvalue": 12.5,
                                "hessian_eigen_iterations": 17,
                                "hessian_eigen_converged": True,
                                "hessian_trace": 300.0,
                                "hessian_trace_stderr": 4.0,
                                "hessian_trace_probes": 42,
                                "epsilon_sharpness": 0.01,
                                "mlflow_run_id": "ab" * 16,
                            }
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
        assert (
            pq.read_schema(path).metadata[b"sharpbench_schema_version"] == SCHEMA.metadata[b"sharpbench_schema_version"]
        )
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
        ({"suggestion_kind": "guess"}, "suggestion_kind 'guess' is not one of"),
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
    later = dataclasses.replace(
        first, status="completed", test_accuracy=0.9, timestamp=first.timestamp + dt.timedelta(hours=1)
    )
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
def test_partition_values_with_special_characters(
    tmp_path: Path, row_factory, benchmark: str, regularizer: str
) -> None:
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
    shared_later = dataclasses.replace(
        shared, status="completed", test_accuracy=0.9, timestamp=shared.timestamp + dt.timedelta(hours=1)
    )
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


# ------------------------------------------------------------------ types every reader gets right


NUMERIC_LOOKING = {"benchmark": "007", "regularizer": "1e3"}  # int-like and float-like names


def test_numeric_looking_names_stay_strings_for_pandas_and_pyarrow(tmp_path: Path, row_factory) -> None:
    # Alone in the dataset: a reader that inferred types from the folder names would see only
    # numbers here and turn "007" into 7.
    row = row_factory(**NUMERIC_LOOKING)
    ParquetSink(tmp_path).write([row])
    root = tmp_path / DATASET_DIRNAME

    frame = pd.read_parquet(root)  # plain, as the README shows
    assert list(frame["benchmark"]) == ["007"] and list(frame["regularizer"]) == ["1e3"]
    assert type(frame["benchmark"].iloc[0]) is str
    for table in (pq.read_table(root), ds.dataset(root, partitioning="hive").to_table(), ds.dataset(root).to_table()):
        assert table.schema.field("benchmark").type == pa.string(), table.schema
        assert table.column("benchmark").to_pylist() == ["007"]
    assert read_rows(tmp_path).to_pylist() == [row.to_record()]


def test_duckdb_reads_one_row_per_run_id_with_string_names(tmp_path: Path, row_factory) -> None:
    duckdb = pytest.importorskip("duckdb")  # not a dependency: see the README's "What you get"
    sink = ParquetSink(tmp_path)
    row = row_factory(**NUMERIC_LOOKING)
    sink.write([row, row_factory()])
    sink.write([dataclasses.replace(row, seed=5, timestamp=row.timestamp + dt.timedelta(minutes=1))])
    pattern = str(tmp_path / DATASET_DIRNAME / "*" / "*" / "*.parquet")  # the README's query
    result = duckdb.sql(f"SELECT run_id, benchmark, seed FROM read_parquet('{pattern}') ORDER BY run_id")
    assert dict(zip(result.columns, result.types, strict=True))["benchmark"] == "VARCHAR"
    got = {run_id: (benchmark, seed) for run_id, benchmark, seed in result.fetchall()}
    assert len(got) == 2 and got[row.run_id] == ("007", 5)


# ------------------------------------------------------------------ unreadable files


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated(path: Path) -> None:
    # A real row file cut in half (an interrupted copy): its footer is gone.
    elsewhere = Path(tempfile.mkdtemp())
    ParquetSink(elsewhere).write([dataclasses.replace(_truncated.row, run_id="truncated/trial")])
    (source,) = (elsewhere / DATASET_DIRNAME).rglob("*.parquet")
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_schema(path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2], "name": ["a", "b"]}), path)


def _wrong_type(path: Path) -> None:
    # Our columns, but seed as a string: a pandas export of the table, say.
    table = read_rows(_wrong_type.results)
    table = table.set_column(table.schema.get_field_index("seed"), "seed", table.column("seed").cast(pa.string()))
    pq.write_table(table, path)


BAD_FILES = {
    "random bytes": _random_bytes,
    "truncated": _truncated,
    "foreign schema": _foreign_schema,
    "wrong column type": _wrong_type,
}
BAD_REASONS = {
    "random bytes": "magic bytes",
    "truncated": "",
    "foreign schema": "no column run_id",
    "wrong column type": "seed is string",
}


@pytest.fixture(params=sorted(BAD_FILES))
def dataset_with_bad_file(request, tmp_path: Path, row_factory) -> tuple[Path, Path, list[TrialRow], str]:
    """A results folder with two good rows and one bad file next to them."""
    results = tmp_path / "results"
    rows = [row_factory(regularizer="erm"), row_factory(regularizer="sam")]
    ParquetSink(results).write(rows)
    _truncated.row, _wrong_type.results = rows[0], results
    bad = next((results / DATASET_DIRNAME).rglob("*.parquet")).parent / "bad.parquet"
    BAD_FILES[request.param](bad)
    return results, bad, rows, request.param


def test_read_rows_skips_an_unreadable_file_and_names_it(dataset_with_bad_file) -> None:
    results, bad, rows, kind = dataset_with_bad_file
    content = bad.read_bytes()
    problems: list[UnreadableFile] = []
    table = read_rows(results, problems=problems)
    assert _by_run_id(table) == {r.run_id: r.to_record() for r in rows}
    (problem,) = problems
    assert problem.path == bad and BAD_REASONS[kind] in problem.reason
    assert "\n" not in str(problem) and str(bad) in str(problem)
    # without a list: a warning of its own category, never an exception
    with pytest.warns(UnreadableFileWarning, match="bad.parquet"):
        assert read_rows(results).num_rows == len(rows)
    assert bad.read_bytes() == content  # a reader never changes the data


def test_tidy_quarantines_an_unreadable_file_so_pandas_reads_the_rest(dataset_with_bad_file) -> None:
    results, bad, rows, kind = dataset_with_bad_file
    content = bad.read_bytes()
    report = tidy_dataset(results)
    (moved,) = report.quarantined
    assert moved.source == bad.resolve() and not bad.exists()
    assert moved.destination.parent.is_relative_to(results.resolve() / QUARANTINE_DIRNAME)
    assert moved.destination.read_bytes() == content  # moved, not lost
    assert BAD_REASONS[kind] in moved.destination.with_name(moved.destination.name + ".reason").read_text()
    (line,) = report.lines()
    assert str(bad.resolve()) in line and "\n" not in line

    problems: list[UnreadableFile] = []
    assert _by_run_id(read_rows(results, problems=problems)) == {r.run_id: r.to_record() for r in rows}
    assert problems == []
    frame = pd.read_parquet(results / DATASET_DIRNAME)
    assert sorted(frame["run_id"]) == sorted(r.run_id for r in rows)
    assert tidy_dataset(results).quarantined == ()  # nothing left to do


def test_a_second_quarantined_file_of_the_same_name_keeps_the_first(tmp_path: Path, row_factory) -> None:
    ParquetSink(tmp_path).write([row_factory()])
    folder = next((tmp_path / DATASET_DIRNAME).rglob("*.parquet")).parent
    (folder / "bad.parquet").write_bytes(b"first")
    first = tidy_dataset(tmp_path).quarantined[0].destination
    (folder / "bad.parquet").write_bytes(b"second")
    second = tidy_dataset(tmp_path).quarantined[0].destination
    assert first != second and first.read_bytes() == b"first" and second.read_bytes() == b"second"


def test_writer_replaces_an_unreadable_file_of_its_run_id_after_quarantining_it(tmp_path: Path, row_factory) -> None:
    row = row_factory()
    sink = ParquetSink(tmp_path)
    sink.write([row])
    (path,) = (tmp_path / DATASET_DIRNAME).rglob("*.parquet")
    path.write_bytes(b"PAR1 garbage")  # e.g. a disk fault
    with pytest.warns(UnreadableFileWarning, match="moved unreadable Parquet file"):
        sink.write([row])
    assert read_rows(tmp_path).to_pylist() == [row.to_record()]
    (kept,) = (tmp_path / QUARANTINE_DIRNAME).rglob("*.parquet")
    assert kept.read_bytes() == b"PAR1 garbage"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sharpbench_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("kind", ["random bytes", "foreign schema"])
def test_leaderboard_cli_skips_an_unreadable_file_with_one_line(tmp_path: Path, row_factory, kind: str) -> None:
    rows = [row_factory(regularizer="erm"), row_factory(regularizer="sam")]
    ParquetSink(tmp_path).write(rows)
    bad = next((tmp_path / DATASET_DIRNAME).rglob("*.parquet")).parent / "bad.parquet"
    _truncated.row, _wrong_type.results = rows[0], tmp_path
    BAD_FILES[kind](bad)
    content = bad.read_bytes()

    done = _cli("leaderboard", str(tmp_path), "--format", "csv")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and str(bad) in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "erm" in done.stdout and "sam" in done.stdout  # the readable rows are ranked
    assert bad.read_bytes() == content and not (tmp_path / QUARANTINE_DIRNAME).exists()  # read-only


def test_leaderboard_cli_with_only_unreadable_files_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / DATASET_DIRNAME / "x" / "y" / "bad.parquet"
    bad.parent.mkdir(parents=True)
    _random_bytes(bad)
    done = _cli("leaderboard", str(tmp_path))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 2, done.stderr
    assert str(bad) in lines[0] and "no readable results" in lines[1]


# ------------------------------------------------------------------ staging


def _staging_entry(results: Path, owner: str, age_s: float = 0.0) -> Path:
    entry = results / STAGING_DIRNAME / f"{owner}~{uuid.uuid4().hex}"
    entry.mkdir(parents=True)
    (entry / "half-written.parquet").write_bytes(b"PAR1")
    if age_s:
        stamp = time.time() - age_s
        os.utime(entry, (stamp, stamp))
    return entry


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # exited and reaped: no process has this pid until it is reused


def test_stale_staging_is_cleaned_and_a_live_writers_is_kept(tmp_path: Path, row_factory) -> None:
    host = socket.gethostname()
    dead = _staging_entry(tmp_path, f"{host}~{_dead_pid()}")
    live = _staging_entry(tmp_path, f"{host}~{os.getpid()}")
    other_host_young = _staging_entry(tmp_path, f"another-host~{os.getpid()}")
    other_host_old = _staging_entry(tmp_path, "another-host~1", age_s=STALE_STAGING_SECONDS + 60)
    live_but_old = _staging_entry(tmp_path, f"{host}~{os.getpid()}", age_s=STALE_STAGING_SECONDS + 60)
    stray_file = tmp_path / STAGING_DIRNAME / "leftover.tmp"
    stray_file.write_bytes(b"")
    os.utime(stray_file, (time.time() - 2 * STALE_STAGING_SECONDS,) * 2)

    ParquetSink(tmp_path).write([row_factory()])  # the writer cleans at start-up
    assert not dead.exists() and not other_host_old.exists() and not live_but_old.exists() and not stray_file.exists()
    assert live.exists() and other_host_young.exists()
    assert read_rows(tmp_path).num_rows == 1
    assert clean_staging(tmp_path) == []  # idempotent


def test_a_killed_writer_leaves_whole_files_and_its_staging_is_cleaned(tmp_path: Path) -> None:
    # A real writer process killed with SIGKILL mid-loop: every file in the dataset is whole
    # (os.replace), and its staging entries go at the next writer's start.
    script = f"""
import dataclasses, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from bench.results.parquet import ParquetSink
from tests.results.conftest import make_row
sink = ParquetSink({str(tmp_path)!r})
i = 0
while True:
    sink.write([make_row(run_id=f"killed/trial_{{i % 7}}", seed=i)])
    i += 1
    if i == 20:
        print("written", flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "written"
    child.kill()
    child.wait()
    problems: list[UnreadableFile] = []
    table = read_rows(tmp_path, problems=problems)
    assert problems == [] and table.num_rows == 7
    assert len(list((tmp_path / DATASET_DIRNAME).rglob("*.parquet"))) == 7
    assert len(pd.read_parquet(tmp_path / DATASET_DIRNAME)) == 7
    removed = clean_staging(tmp_path)  # the killed pid's entries, if it died inside a write
    assert all(f"~{child.pid}~" in p.name for p in removed)
    assert not any((tmp_path / STAGING_DIRNAME).iterdir())


# ------------------------------------------------------------------ datasets written by earlier versions

V2_ONLY = [
    "search_metric",
    "sampler",
    "budget",
    "selected_from_run_id",
    "hessian_eigen_iterations",
    "hessian_eigen_converged",
    "hessian_trace_probes",
]


def _write_legacy(results: Path, rows: list[TrialRow], time_ns: int, *, version: int = 2) -> None:
    """Rows as the writer before this one stored them: hive folders (partition columns only in the
    path), several rows per file named "<time_ns>-<uuid>-<i>.parquet"; version 1 lacks V2_ONLY."""
    from bench.results.parquet import rows_to_table

    table = rows_to_table(rows)
    schema = FILE_SCHEMA
    if version == 1:
        table = table.drop_columns(V2_ONLY)
        schema = pa.schema(
            [f for f in FILE_SCHEMA if f.name not in V2_ONLY], metadata={"sharpbench_schema_version": "1"}
        )
    partitioning = ds.partitioning(pa.schema([SCHEMA.field(n) for n in PARTITION_COLUMNS]), flavor="hive")
    ds.write_dataset(
        table.select([*schema.names, *PARTITION_COLUMNS]),
        results / DATASET_DIRNAME,
        format="parquet",
        partitioning=partitioning,
        basename_template=f"{time_ns:020d}-{uuid.uuid4().hex}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
    )


def test_older_datasets_are_read_and_tidied_into_one_file_per_run_id(tmp_path: Path, row_factory) -> None:
    a, b, c = (
        row_factory(benchmark="007", regularizer=m, search_metric=None, sampler=None, budget=None)
        for m in ("erm", "sam", "erm")
    )
    v1 = row_factory(benchmark="007", regularizer="sam")
    v1_expected = {**v1.to_record(), **{name: None for name in V2_ONLY}}
    retried = dataclasses.replace(a, status="completed", seed=11, timestamp=a.timestamp + dt.timedelta(minutes=5))
    _write_legacy(tmp_path, [a, b, c], 1_000)
    _write_legacy(tmp_path, [retried], 2_000)  # a resumed trial: its run id twice in the dataset
    _write_legacy(tmp_path, [v1], 3_000, version=1)
    expected = {
        retried.run_id: retried.to_record(),
        b.run_id: b.to_record(),
        c.run_id: c.to_record(),
        v1.run_id: v1_expected,
    }

    assert _by_run_id(read_rows(tmp_path)) == expected  # read as they are
    before = read_rows(tmp_path)
    report = tidy_dataset(tmp_path)
    assert len(report.rewritten) == 4 and report.quarantined == () and report.lines() == []
    assert read_rows(tmp_path).equals(before)  # the same rows, now in the current layout
    root = tmp_path / DATASET_DIRNAME
    assert sorted(p.name for p in root.rglob("*.parquet")) == sorted(run_key(r) for r in expected)
    assert not list(root.glob("benchmark=*"))  # the hive folders are gone with their files

    frame = pd.read_parquet(root)
    assert len(frame) == 4 and set(frame["run_id"]) == set(expected)
    assert set(frame["benchmark"]) == {"007"}
    assert frame.set_index("run_id").loc[retried.run_id, "seed"] == 11
    assert tidy_dataset(tmp_path).rewritten == ()  # idempotent


def test_a_newer_row_survives_a_tidy_of_an_older_file(tmp_path: Path, row_factory) -> None:
    # After an upgrade, a resumed trial's new row exists next to its old one in a legacy file.
    old = row_factory()
    new = dataclasses.replace(old, seed=3, timestamp=old.timestamp + dt.timedelta(minutes=1))
    ParquetSink(tmp_path).write([new])
    _write_legacy(tmp_path, [old], time.time_ns())  # written later, but the older row
    assert read_rows(tmp_path).to_pylist() == [new.to_record()]
    tidy_dataset(tmp_path)
    assert read_rows(tmp_path).to_pylist() == [new.to_record()]
    assert len(list((tmp_path / DATASET_DIRNAME).rglob("*.parquet"))) == 1


@pytest.mark.parametrize(
    ("column", "version", "value"),
    [("suggestion_kind", "4", "startup"), ("evaluated_weights", "5", "swa")],
)
def test_a_file_from_before_a_column_reads_back_with_it_null(
    tmp_path: Path, row_factory, column: str, version: str, value: str
) -> None:
    """Schema 5 added suggestion_kind, 6 evaluated_weights; a file written by the version before
    (current layout, no such column) is read with it null, next to a current row that has it, and
    pandas reads both."""
    old, new = row_factory(regularizer="erm"), row_factory(regularizer="erm", **{column: value})
    ParquetSink(tmp_path).write([new])
    from bench.results.parquet import rows_to_table

    table = rows_to_table([old]).drop_columns([column])
    older = table.replace_schema_metadata({"sharpbench_schema_version": version})
    path = tmp_path / DATASET_DIRNAME / old.benchmark / old.regularizer / run_key(old.run_id)
    pq.write_table(older, path)
    rows = _by_run_id(read_rows(tmp_path))
    assert rows[old.run_id] == {**old.to_record(), column: None}
    assert rows[new.run_id][column] == value
    # pandas takes the schema of the first file it opens: tidy rewrites the older file (in place:
    # it is its own run id's path, and must not be removed after the rewrite).
    assert len(tidy_dataset(tmp_path).rewritten) == 1
    frame = pd.read_parquet(tmp_path / DATASET_DIRNAME).set_index("run_id")
    assert frame.loc[new.run_id, column] == value and pd.isna(frame.loc[old.run_id, column])
    assert _by_run_id(read_rows(tmp_path)) == rows and tidy_dataset(tmp_path).rewritten == ()  # nothing lost, once


def test_one_benchmarks_rows_keep_the_latest_row_rule_of_the_whole_read(tmp_path: Path, row_factory) -> None:
    """Reading one benchmark drops the others' rows before the latest-row rule: each row keeps its
    own file's write time (a legacy folder of another benchmark sorts between this one's files)."""
    from bench.results.parquet import rows_to_table

    older = row_factory(benchmark="mine", regularizer="erm", seed=1)
    again = dataclasses.replace(older, seed=7)  # the same run id and timestamp, written earlier
    _write_legacy(tmp_path, [older], 1_000)
    _write_legacy(tmp_path, [row_factory(benchmark="other", regularizer="erm")], 1_000)
    ParquetSink(tmp_path)._put(rows_to_table([again]), 500)
    whole = read_rows(tmp_path)
    mine = read_rows(tmp_path, benchmarks=iter(["mine"]))  # any iterable, read once
    assert mine.to_pylist() == [r for r in whole.to_pylist() if r["benchmark"] == "mine"]
    assert [r["seed"] for r in mine.to_pylist()] == [1]  # the row written last (the legacy file's)
