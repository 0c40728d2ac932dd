"""The Parquet leaderboard dataset: one small, atomically placed file per finished trial.

Layout (hive partitioning, values URI-encoded by pyarrow)::

    <results_dir>/leaderboard/benchmark=<b>/regularizer=<r>/<time_ns>-<uuid>-<i>.parquet
    <results_dir>/.staging/<uuid>/...        (transient, same file system, never read)

Every file is written with :data:`~bench.results.schema.FILE_SCHEMA` (the row schema minus the
partition columns, which live in the directory names), never an inferred one. A file is first
written completely under the staging folder and then moved into place with :func:`os.replace`,
which is atomic on one file system: a concurrent reader sees either the whole file or none of it.

:class:`ParquetSink` is meant for a single writer (the driver), called once per finished trial.

>>> import tempfile
>>> from bench.results.parquet import ParquetSink, read_rows
>>> d = tempfile.mkdtemp()
>>> read_rows(d).num_rows
0
"""

from __future__ import annotations

import enum
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from bench.results.schema import PARTITION_COLUMNS, REQUIRED_COLUMNS, SCHEMA, Phase, TrialRow, TrialStatus

#: Sub-folder of ``results_dir`` holding the dataset.
DATASET_DIRNAME = "leaderboard"
#: Sub-folder of ``results_dir`` where files are written before being moved into the dataset.
STAGING_DIRNAME = ".staging"

_PARTITIONING_SCHEMA = pa.schema([SCHEMA.field(name) for name in PARTITION_COLUMNS])
_STATUSES = frozenset(s.value for s in TrialStatus)
_PHASES = frozenset(p.value for p in Phase)


def dataset_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Where the hive-partitioned dataset lives under ``results_dir``."""
    return Path(results_dir) / DATASET_DIRNAME


def _partitioning() -> ds.Partitioning:
    # Explicit string fields: partition columns come back as plain strings, not dictionaries.
    return ds.partitioning(_PARTITIONING_SCHEMA, flavor="hive")


class RowValidationError(ValueError):
    """A row cannot be written: a required column is null, or a value is out of its domain."""


def _record(row: TrialRow) -> dict[str, object]:
    if not isinstance(row, TrialRow):
        raise RowValidationError(f"expected a TrialRow, got {type(row).__name__}")
    record = row.to_record()
    # str-valued enums (TrialStatus, Phase) are stored as their value.
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in record.items()}


def _validate(records: Sequence[dict[str, object]]) -> None:
    problems: list[str] = []
    seen: set[object] = set()
    for record in records:
        who = f"row run_id={record.get('run_id')!r}"
        missing = [name for name in REQUIRED_COLUMNS if record[name] is None]
        if missing:
            problems.append(f"{who}: required column(s) {', '.join(missing)} are None")
        for name in PARTITION_COLUMNS:
            if record[name] == "":
                problems.append(f"{who}: partition column {name} is empty")
        if record["status"] is not None and record["status"] not in _STATUSES:
            problems.append(f"{who}: status {record['status']!r} is not one of {sorted(_STATUSES)}")
        if record["phase"] is not None and record["phase"] not in _PHASES:
            problems.append(f"{who}: phase {record['phase']!r} is not one of {sorted(_PHASES)}")
        stamp = record["timestamp"]
        if stamp is not None and getattr(stamp, "tzinfo", None) is None:
            problems.append(f"{who}: timestamp must be timezone-aware (use bench.provenance.utc_now())")
        if record["run_id"] in seen:
            problems.append(f"{who}: run_id appears twice in one write() call")
        seen.add(record["run_id"])
    if problems:
        raise RowValidationError("cannot write trial rows (nothing was written):\n  " + "\n  ".join(problems))


def rows_to_table(rows: Sequence[TrialRow]) -> pa.Table:
    """Validate ``rows`` and convert them to a table with exactly :data:`SCHEMA`.

    Raises :class:`RowValidationError` (listing every problem) when a required column is None, a
    status/phase is unknown, a timestamp is naive or a run_id repeats within ``rows``; pyarrow
    raises when a value has the wrong type.
    """
    records = [_record(row) for row in rows]
    _validate(records)
    return pa.Table.from_pylist(records, schema=SCHEMA)


class ParquetSink:
    """Appends trial rows to ``<results_dir>/leaderboard`` (see the module docstring).

    Not thread-safe and meant for one writer process; files are named uniquely, so two writers
    would not overwrite each other, but nothing coordinates them either.
    """

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.results_dir = Path(results_dir).expanduser().resolve()
        self.dataset_dir = dataset_dir(self.results_dir)

    def write(self, rows: Sequence[TrialRow]) -> None:
        """Write ``rows`` as one file per (benchmark, regularizer) present in them.

        Everything is validated before anything touches the disk. Writing a row whose run_id was
        written before is allowed (a resumed trial): :func:`read_rows` keeps the latest one.
        """
        table = rows_to_table(rows)
        if table.num_rows == 0:
            return
        # Time-ordered names: within a partition, sorting names sorts by write order.
        basename = f"{time.time_ns():020d}-{uuid.uuid4().hex}-{{i}}.parquet"
        staging = self.results_dir / STAGING_DIRNAME / uuid.uuid4().hex
        staging.mkdir(parents=True, exist_ok=False)
        try:
            ds.write_dataset(
                table,
                staging,
                format="parquet",
                partitioning=_partitioning(),
                basename_template=basename,
                existing_data_behavior="overwrite_or_ignore",
                use_threads=False,
            )
            for path in sorted(p for p in staging.rglob("*.parquet") if p.is_file()):
                target = self.dataset_dir / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def read_rows(results_dir: str | os.PathLike[str], *more_results_dirs: str | os.PathLike[str]) -> pa.Table:
    """All trial rows under one or more results folders, as a table with exactly :data:`SCHEMA`.

    Several folders (runs from several machines or clusters) are read as their union.

    * Partition columns are restored as plain strings (not dictionary-encoded).
    * Nothing there (no folder, no files): an empty table with :data:`SCHEMA`.
    * Deduplication, over the union: when a run_id was written more than once (a resumed or
      re-recorded trial, or the same run copied into two folders), only the row with the latest
      ``timestamp`` is kept; on equal timestamps the row from the file written last wins (file
      names start with the write time in nanoseconds), and on equal names the folder given last.
    * Rows are sorted by benchmark, regularizer, run_id.
    """
    parts = [table for root in (results_dir, *more_results_dirs) if (table := _read_one(dataset_dir(root))) is not None]
    if not parts:
        return SCHEMA.empty_table()
    table = pa.concat_tables(parts)  # in argument order: the row index breaks the last ties
    keep = _latest_per_run_id(
        table.column("run_id").to_pylist(),
        table.column("timestamp").to_pylist(),
        [os.path.basename(f) for f in table.column("__filename").to_pylist()],
    )
    table = table.take(pa.array(keep, pa.int64())).select(SCHEMA.names)
    table = table.sort_by([(name, "ascending") for name in (*PARTITION_COLUMNS, "run_id")])
    return table.cast(SCHEMA)


def has_rows(results_dir: str | os.PathLike[str]) -> bool:
    """Whether ``results_dir`` holds any data file (the sink never writes an empty one)."""
    return bool(_data_files(dataset_dir(results_dir)))


def _read_one(root: Path) -> pa.Table | None:
    """One dataset's rows with :data:`SCHEMA` plus ``__filename``; None when it has no files."""
    files = _data_files(root)
    if not files:
        return None
    dataset = ds.dataset(
        files, format="parquet", schema=SCHEMA, partitioning=_partitioning(), partition_base_dir=str(root)
    )
    return dataset.to_table(columns=[*SCHEMA.names, "__filename"])


def _data_files(root: Path) -> list[str]:
    """The ``*.parquet`` files under ``root``, skipping hidden or ``_``-prefixed names (as pyarrow
    does) and anything else a tool may have left there."""
    if not root.is_dir():
        return []
    return sorted(
        str(path)
        for path in root.rglob("*.parquet")
        if path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
    )


def _latest_per_run_id(run_ids: list[str], stamps: list[object], files: list[str]) -> list[int]:
    best: dict[str, int] = {}
    for i, run_id in enumerate(run_ids):
        j = best.get(run_id)
        if j is None or (stamps[i], files[i], i) >= (stamps[j], files[j], j):
            best[run_id] = i
    return sorted(best.values())


__all__ = [
    "DATASET_DIRNAME",
    "STAGING_DIRNAME",
    "ParquetSink",
    "RowValidationError",
    "dataset_dir",
    "has_rows",
    "read_rows",
    "rows_to_table",
]
