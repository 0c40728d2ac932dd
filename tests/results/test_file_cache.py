"""The readers' cache: a read opens only the files written since the last one, and reads what a
cold read reads, whatever happened to the files in between."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bench.results.parquet as parquet
from bench.results.file_cache import CACHE_DIRNAME, FileRead, read_cached
from bench.results.parquet import DATASET_DIRNAME, ParquetSink, UnreadableFile, read_rows, run_key, tidy_dataset


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The row files each read opens (the real reader, counted)."""
    paths: list[Path] = []
    real = parquet._read_file

    def counting(path: Path, root: Path):
        paths.append(path)
        return real(path, root)

    monkeypatch.setattr(parquet, "_read_file", counting)
    return paths


def _cold(folder: Path, **kwargs) -> pa.Table:
    """A read with no cache (the cache is moved away and put back)."""
    cache = folder / CACHE_DIRNAME
    aside = folder.parent / f"{folder.name}-cache-aside"
    if cache.exists():
        cache.rename(aside)
    try:
        return read_rows(folder, problems=[], **kwargs)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if aside.exists():
            aside.rename(cache)


def _rows(row_factory, count: int, benchmark: str = "bench") -> list:
    return [row_factory(benchmark=benchmark, regularizer=("erm", "sam")[i % 2], seed=i) for i in range(count)]


def test_a_second_read_opens_only_what_changed(tmp_path: Path, row_factory, opened: list[Path]) -> None:
    rows = _rows(row_factory, 6)
    sink = ParquetSink(tmp_path)
    sink.write(rows)
    first = read_rows(tmp_path)
    assert len(opened) == 6 and first.num_rows == 6
    assert list((tmp_path / CACHE_DIRNAME).rglob("*.parquet"))  # the cache was written

    opened.clear()
    assert read_rows(tmp_path).equals(first) and opened == []  # nothing opened

    later = dataclasses.replace(rows[0], seed=99, timestamp=rows[0].timestamp + dt.timedelta(minutes=1))
    sink.write([later])  # a resumed trial's row replaces its file
    (new,) = _rows(row_factory, 1)
    sink.write([new])
    gone = next((tmp_path / DATASET_DIRNAME).rglob(run_key(rows[1].run_id)))
    gone.unlink()
    opened.clear()
    table = read_rows(tmp_path)
    assert sorted(p.name for p in opened) == sorted([run_key(later.run_id), run_key(new.run_id)])
    seeds = {r["run_id"]: r["seed"] for r in table.to_pylist()}
    assert seeds[later.run_id] == 99 and new.run_id in seeds and rows[1].run_id not in seeds
    assert table.equals(_cold(tmp_path))


def test_the_cache_agrees_with_a_cold_read_after_any_writes(tmp_path: Path, row_factory) -> None:
    rng = random.Random(7)
    sink = ParquetSink(tmp_path)
    written: list = []
    for step in range(40):
        action = rng.choice(["new", "new", "replace", "delete", "read"])
        if action == "new" or not written:
            row = row_factory(benchmark=rng.choice(["a", "b", "c"]), regularizer=rng.choice(["erm", "sam"]), seed=step)
            sink.write([row])
            written.append(row)
        elif action == "replace":
            i = rng.randrange(len(written))
            written[i] = dataclasses.replace(
                written[i], seed=1000 + step, timestamp=written[i].timestamp + dt.timedelta(seconds=step + 1)
            )
            sink.write([written[i]])
        elif action == "delete":
            row = written.pop(rng.randrange(len(written)))
            next((tmp_path / DATASET_DIRNAME).rglob(run_key(row.run_id))).unlink()
        benchmarks = rng.choice([None, ["a"], ["b", "c"]])
        warm = read_rows(tmp_path, benchmarks=benchmarks)
        assert warm.equals(_cold(tmp_path, benchmarks=benchmarks)), step
        expected = {r.run_id: r.seed for r in written if benchmarks is None or r.benchmark in benchmarks}
        assert {r["run_id"]: r["seed"] for r in warm.to_pylist()} == expected


def test_reading_one_benchmark_opens_only_its_folder(tmp_path: Path, row_factory, opened: list[Path]) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 4, "mine") + _rows(row_factory, 5, "other"))
    table = read_rows(tmp_path, benchmarks=["mine"])
    assert set(table.column("benchmark").to_pylist()) == {"mine"} and table.num_rows == 4
    assert len(opened) == 4 and all("/mine/" in p.as_posix() for p in opened)
    assert read_rows(tmp_path, benchmarks=["absent"]).num_rows == 0


def test_a_broken_or_foreign_cache_is_ignored_and_rebuilt(tmp_path: Path, row_factory, opened: list[Path]) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 3))
    first = read_rows(tmp_path)
    (cache,) = (tmp_path / CACHE_DIRNAME).rglob("*.parquet")
    cache.write_bytes(b"not parquet at all")
    opened.clear()
    assert read_rows(tmp_path).equals(first) and len(opened) == 3  # read again, cache rewritten
    opened.clear()
    assert read_rows(tmp_path).equals(first) and opened == []
    # a cache of another schema (an older sharpbench): ignored, not trusted
    table = pq.read_table(cache)
    pq.write_table(table.drop_columns(["seed"]).replace_schema_metadata(table.schema.metadata), cache)
    opened.clear()
    assert read_rows(tmp_path).equals(first) and len(opened) == 3


def test_a_cache_that_cannot_be_written_leaves_the_read_right(tmp_path: Path, row_factory) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 3))
    (tmp_path / CACHE_DIRNAME).write_text("a file where the cache folder would go")
    assert read_rows(tmp_path).num_rows == 3
    assert read_rows(tmp_path).num_rows == 3  # and again, still without a cache
    assert (tmp_path / CACHE_DIRNAME).read_text().startswith("a file")


def test_an_unreadable_file_is_said_on_every_read(tmp_path: Path, row_factory) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 2))
    bad = tmp_path / DATASET_DIRNAME / "bench" / "erm" / "bad.parquet"
    bad.write_bytes(b"PAR1 garbage")
    for _ in range(2):
        problems: list[UnreadableFile] = []
        assert read_rows(tmp_path, problems=problems).num_rows == 2
        assert [p.path for p in problems] == [bad]


def test_a_start_up_tidy_reads_only_new_files_and_still_rewrites_old_layouts(
    tmp_path: Path, row_factory, opened: list[Path]
) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 5))
    read_rows(tmp_path)
    legacy = tmp_path / DATASET_DIRNAME / "benchmark=bench" / "regularizer=erm" / "old.parquet"
    legacy.parent.mkdir(parents=True)
    (old,) = _rows(row_factory, 1)
    pq.write_table(parquet.rows_to_table([old]), legacy)
    read_rows(tmp_path)  # the old file is now cached too, as an old one
    opened.clear()
    report = tidy_dataset(tmp_path)
    assert opened == [] and report.rewritten == (legacy,)  # nothing opened: the cache knew both
    assert not legacy.exists() and read_rows(tmp_path).num_rows == 6


def test_read_cached_keeps_the_callers_per_file_integers(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("x", pa.int64())])
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"x": [i, i]}, schema=schema), root / f"{i}.parquet")
    files = sorted(root.iterdir())
    calls = []

    def read(path: Path) -> FileRead:
        calls.append(path)
        return FileRead(pq.read_table(path), (int(path.stem) * 10,))

    for expected_calls in (3, 0):
        calls.clear()
        found = read_cached(tmp_path, "t", schema, root, files, read, extras=("tag",))
        assert len(calls) == expected_calls
        assert found.table.column("x").to_pylist() == [0, 0, 1, 1, 2, 2]
        assert found.extras == {"tag": [0, 0, 10, 10, 20, 20]}
        assert found.files == [files[0], files[0], files[1], files[1], files[2], files[2]]


def test_a_runs_tidy_reads_its_own_benchmark_and_the_old_layouts_only(
    tmp_path: Path, row_factory, opened: list[Path]
) -> None:
    ParquetSink(tmp_path).write(_rows(row_factory, 3, "mine") + _rows(row_factory, 4, "other"))
    theirs = tmp_path / DATASET_DIRNAME / "other" / "erm" / "bad.parquet"
    mine = tmp_path / DATASET_DIRNAME / "mine" / "erm" / "bad.parquet"
    for bad in (theirs, mine):
        bad.write_bytes(b"not parquet")
    legacy = tmp_path / DATASET_DIRNAME / "benchmark=other" / "regularizer=erm" / "old.parquet"
    legacy.parent.mkdir(parents=True)
    (old,) = _rows(row_factory, 1, "other")
    pq.write_table(parquet.rows_to_table([old]), legacy)
    report = tidy_dataset(tmp_path, benchmarks=["mine"])
    assert [q.source for q in report.quarantined] == [mine] and report.rewritten == (legacy,)
    assert theirs.exists()  # another benchmark's folder: not this run's to tidy
    assert all("/other/" not in p.as_posix() for p in opened if p != legacy)
