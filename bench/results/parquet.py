"""The Parquet leaderboard dataset: one file per run id, readable by any Parquet reader.

Layout::

    <results_dir>/leaderboard/<benchmark>/<regularizer>/<run key>.parquet   one row: one trial
    <results_dir>/.staging/<host>~<pid>~<uuid>/...    transient, same file system, never read
    <results_dir>/quarantine/...                      unreadable files moved aside by tidy_dataset

Why this shape (each point is a trap that a reader other than ours fell into):

* **One run id, one file.** The file name is derived from the run id (:func:`run_key`), and a
  file is written completely under ``.staging`` and then moved into place with :func:`os.replace`,
  atomic on one file system. A resumed or re-recorded trial therefore *replaces* its row, so
  ``pd.read_parquet`` sees each run id once, and a concurrent reader sees the old file or the new
  one, never half of one.
* **Every column is inside every file**, with exactly :data:`~bench.results.schema.SCHEMA`.
  The folders are named by the benchmark and the regularizer for people, *not* as ``key=value``
  (hive) segments: readers type-infer hive values (pandas and pyarrow turn a benchmark ``007``
  into the integer 7, DuckDB infers dates and numbers too), and pyarrow refuses a column that is
  both in the files and in the path. Folder names are percent-encoded, with a leading ``.``/``_``
  encoded too because pyarrow skips such names.
* **Older datasets** (hive folders ``benchmark=<b>/regularizer=<r>/``, several rows per file,
  schema version 1) are still read by :func:`read_rows`, which takes the partition columns from
  the path when a file lacks them and keeps the latest row per run id. :func:`tidy_dataset`
  rewrites them into the layout above so that other readers get them right as well.

Unreadable files (random bytes, truncated, a foreign schema) never raise: :func:`read_rows` skips
each one and reports it as an :class:`UnreadableFile` (one line naming it); it never changes the
data, so the read-only ``sharpbench leaderboard`` uses it. The writer side, :func:`tidy_dataset`
(meant for the start of ``sharpbench run``), moves them to ``<results_dir>/quarantine/`` instead,
so that ``pd.read_parquet`` works afterwards too.

:class:`ParquetSink` is meant for one writer per run id (the driver, once per finished trial).

>>> import tempfile
>>> from bench.results.parquet import ParquetSink, read_rows
>>> d = tempfile.mkdtemp()
>>> read_rows(d).num_rows
0
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import hashlib
import os
import re
import shutil
import socket
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.naming import partition_segment
from bench.results.file_cache import FileRead, ReadResult, read_cached
from bench.results.schema import (
    PARTITION_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEMA,
    Phase,
    SuggestionKind,
    TrialRow,
    TrialStatus,
)

#: Sub-folder of ``results_dir`` holding the dataset.
DATASET_DIRNAME = "leaderboard"
#: Sub-folder of ``results_dir`` where files are written before being moved into the dataset.
STAGING_DIRNAME = ".staging"
#: Sub-folder of ``results_dir`` where :func:`tidy_dataset` moves unreadable files.
QUARANTINE_DIRNAME = "quarantine"
#: A staging entry older than this (seconds) is abandoned whoever owns it: a write takes
#: milliseconds, so an hour leaves room for slow shared file systems and clock skew between hosts.
STALE_STAGING_SECONDS = 3600.0

# File metadata key: when the file was written (ns since the epoch). It breaks ties between two
# rows of one run id with equal timestamps (e.g. the same run in two folders); unlike an mtime it
# survives a copy.
_WRITTEN_KEY = b"sharpbench_written_ns"
# Files written before this module named files "<time_ns>-<uuid>-<i>.parquet".
_LEGACY_NAME = re.compile(r"^(\d{20})-[0-9a-f]{32}-\d+\.parquet$")
_STATUSES = frozenset(s.value for s in TrialStatus)
_PHASES = frozenset(p.value for p in Phase)
_KINDS = frozenset(k.value for k in SuggestionKind)


def dataset_dir(results_dir: str | os.PathLike[str]) -> Path:
    """Where the dataset lives under ``results_dir``."""
    return Path(results_dir) / DATASET_DIRNAME


def results_folder_hint(folder: str | os.PathLike[str]) -> str | None:
    """For a folder with no dataset: None, or one line naming the results folder it belongs to
    when it is itself the dataset inside one (``results/leaderboard`` given for ``results``)."""
    path = Path(folder)
    if path.name == DATASET_DIRNAME and has_rows(path.parent):
        return f"{path} is the Parquet dataset of the results folder {path.parent}: give {path.parent}"
    return None


def no_results_folder(folder: str | os.PathLike[str]) -> str:
    """Why ``folder`` cannot be read as a results folder (missing, or not a folder), in one line:
    the same words from every command that reads one."""
    path = Path(folder)
    if path.exists():
        return f"{path} is not a folder: give the --results folder of `sharpbench run`"
    return f"results folder not found: {path} (run `sharpbench run CONFIG --results {path}` first)"


def no_rows(*folders: str | os.PathLike[str]) -> str:
    """Why ``folders`` (existing folders) give no board or report, in one line: the hint for a
    dataset folder given for its results folder (:func:`results_folder_hint`), else that none
    holds a trial row."""
    paths = [Path(folder) for folder in folders]
    for hint in filter(None, map(results_folder_hint, paths)):
        return hint
    where = ", ".join(str(dataset_dir(path)) for path in paths)
    return (
        f"no results in {', '.join(map(str, paths))}: no trial rows under {where} "
        f"(run `sharpbench run CONFIG --results {paths[0]}` first)"
    )


def run_key(run_id: str) -> str:
    """The file name of ``run_id``'s row: 32 hex digits of its SHA-256, then ``.parquet``.

    A hash, not the run id itself: run ids hold ``/`` and may exceed a file name's 255 bytes.
    """
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:32] + ".parquet"


def benchmark_dir(results_dir: str | os.PathLike[str], benchmark: str) -> Path:
    """The folder of one benchmark's rows under ``results_dir``."""
    return dataset_dir(results_dir) / partition_segment(benchmark)


def row_path(root: Path, benchmark: str, regularizer: str, run_id: str) -> Path:
    """Where the dataset ``root`` holds ``run_id``'s row."""
    return root / partition_segment(benchmark) / partition_segment(regularizer) / run_key(run_id)


# ------------------------------------------------------------------ problems


@dataclasses.dataclass(frozen=True)
class UnreadableFile:
    """A file under the dataset that is not a sharpbench row file: ``reason`` is one line."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipped unreadable Parquet file {self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """An unreadable file that :func:`tidy_dataset` moved from ``source`` to ``destination``."""

    source: Path
    destination: Path
    reason: str

    def __str__(self) -> str:
        return f"moved unreadable Parquet file {self.source} to {self.destination}: {self.reason}"


class UnreadableFileWarning(UserWarning):
    """Issued by :func:`read_rows` for each skipped file when the caller collects no ``problems``."""


class _NotARowFile(Exception):
    """Internal: why a file cannot be read as sharpbench rows (one line)."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ------------------------------------------------------------------ validation (writer)


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
        kind = record["suggestion_kind"]
        if kind is not None and kind not in _KINDS:
            problems.append(f"{who}: suggestion_kind {kind!r} is not one of {sorted(_KINDS)}")
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


# ------------------------------------------------------------------ reading one file


@dataclasses.dataclass(frozen=True)
class _FileRows:
    table: pa.Table  # exactly SCHEMA
    written_ns: int  # write order, for ties on equal timestamps
    current: bool  # already in this module's layout (one row, named by its run key, full SCHEMA)
    newer: bool  # holds columns this version does not know (a later schema): read, never rewritten


def _legacy_partitions(path: Path, root: Path) -> dict[str, str]:
    """Partition values from the hive folders of an older dataset (``benchmark=<b>/...``)."""
    values: dict[str, str] = {}
    for part in path.relative_to(root).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key in PARTITION_COLUMNS:
            values[key] = urllib.parse.unquote(value)  # pyarrow wrote them URI-encoded
    return values


# Built once: a schema's ``names`` is a new list at every call (a read checks ~50 names per file).
_SCHEMA_NAMES = tuple(SCHEMA.names)
_SCHEMA_SET = frozenset(_SCHEMA_NAMES)
_BARE_SCHEMA = SCHEMA.remove_metadata()


def _read_file(path: Path, root: Path) -> _FileRows:
    """The rows of one file, checked and cast to :data:`SCHEMA`; raises :class:`_NotARowFile`."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)  # one small row group: buffering ahead only costs (~20%)
        physical = parquet.schema_arrow
        if physical.remove_metadata().equals(_BARE_SCHEMA):  # the common case, checked at once
            present, wrong = list(_SCHEMA_NAMES), []
        else:
            names = set(physical.names)
            present = [name for name in _SCHEMA_NAMES if name in names]
            wrong = [
                f"{name} is {physical.field(name).type}, expected {SCHEMA.field(name).type}"
                for name in present
                if physical.field(name).type != SCHEMA.field(name).type
            ]
        if wrong:
            raise _NotARowFile(f"foreign schema: {'; '.join(wrong)}")
        from_path = {k: v for k, v in _legacy_partitions(path, root).items() if k not in present}
        missing = [name for name in REQUIRED_COLUMNS if name not in present and name not in from_path]
        if missing:
            raise _NotARowFile(f"foreign schema: no column {', '.join(missing)}")
        table = parquet.read(columns=present, use_threads=False)
        mtime_ns = path.stat().st_mtime_ns
    except (_NotARowFile, FileNotFoundError):
        raise
    except (pa.ArrowException, OSError, ValueError) as error:  # not Parquet, truncated, corrupt pages
        raise _NotARowFile(_one_line(error)) from error
    columns = []
    present_set = set(present)
    for field in SCHEMA:
        if field.name in present_set:
            columns.append(table.column(field.name))
        elif field.name in from_path:
            columns.append(pa.array([from_path[field.name]] * table.num_rows, field.type))
        else:  # a column added after this file's schema version: null, as documented in schema.py
            columns.append(pa.nulls(table.num_rows, field.type))
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    nulls = [name for name in REQUIRED_COLUMNS if table.column(name).null_count]
    if nulls:
        raise _NotARowFile(f"null values in required column(s) {', '.join(nulls)}")
    written = (physical.metadata or {}).get(_WRITTEN_KEY, b"")
    legacy = _LEGACY_NAME.match(path.name)
    if written.isdigit():
        written_ns = int(written)
    elif legacy:
        written_ns = int(legacy.group(1))
    else:  # written by another tool: its modification time is the best order there is
        written_ns = mtime_ns
    current = (
        table.num_rows == 1
        and physical.remove_metadata().equals(_BARE_SCHEMA)
        and path == row_path(root, *(table.column(c)[0].as_py() for c in (*PARTITION_COLUMNS, "run_id")))
    )
    newer = not _SCHEMA_SET.issuperset(physical.names)
    return _FileRows(table, written_ns, current, newer)


def _data_files(root: Path, benchmarks: Iterable[str] | None = None) -> list[Path]:
    """The ``*.parquet`` files under ``root``, skipping hidden or ``_``-prefixed names (as pyarrow
    does, so that both see the same files) and anything else a tool may have left there; with
    ``benchmarks``, only under those benchmarks' folders (and in older layouts, which any may hold)."""
    if not root.is_dir():
        return []
    wanted = None if benchmarks is None else {partition_segment(name) for name in benchmarks}
    found = []
    for top in root.iterdir():
        if top.name.startswith((".", "_")):
            continue
        if wanted is not None and top.name not in wanted and "=" not in top.name and not top.is_file():
            continue  # another benchmark's folder (a current folder name never holds "=", hive's do)
        candidates = [top] if top.is_file() else top.rglob("*.parquet")
        found.extend(
            path
            for path in candidates
            if path.suffix == ".parquet"
            and path.is_file()
            and not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
        )
    return sorted(found)


def _report(problem: UnreadableFile, problems: list[UnreadableFile] | None) -> None:
    if problems is None:
        warnings.warn(str(problem), UnreadableFileWarning, stacklevel=3)
    else:
        problems.append(problem)


# ------------------------------------------------------------------ writer


class ParquetSink:
    """Records trial rows under ``<results_dir>/leaderboard`` (see the module docstring).

    Not thread-safe; several processes may write into one folder as long as no two of them write
    the same run id (each trial is recorded by its own search's driver). On its first write it
    removes stale staging entries (:func:`clean_staging`).
    """

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.results_dir = Path(results_dir).expanduser().resolve()
        self.dataset_dir = dataset_dir(self.results_dir)
        self._staging_cleaned = False

    def write(self, rows: Sequence[TrialRow]) -> None:
        """Record ``rows``, one file per row, named by the row's run id.

        Everything is validated before anything touches the disk (:class:`RowValidationError`).
        A row whose run id was recorded before replaces that file atomically, unless the recorded
        row has a later ``timestamp`` (the rule :func:`read_rows` applies too: the latest row of a
        run id wins; on equal timestamps the one written last). If the recorded file is
        unreadable it is moved to quarantine first, with an :class:`UnreadableFileWarning`.
        """
        table = rows_to_table(rows)
        if table.num_rows == 0:
            return
        if not self._staging_cleaned:
            clean_staging(self.results_dir)
            self._staging_cleaned = True
        for i in range(table.num_rows):
            self._put(table.slice(i, 1))

    def _put(self, row: pa.Table, written_ns: int | None = None) -> None:
        """Place one row (a :data:`SCHEMA` table of length 1) at its run id's path; ``written_ns``
        keeps the write order of a row moved from an older file (default: now)."""
        written_ns = time.time_ns() if written_ns is None else written_ns
        benchmark, regularizer, run_id = (row.column(c)[0].as_py() for c in (*PARTITION_COLUMNS, "run_id"))
        target = row_path(self.dataset_dir, benchmark, regularizer, run_id)
        if target.exists():
            try:
                recorded = _read_file(target, self.dataset_dir)
            except FileNotFoundError:
                pass  # removed meanwhile: nothing to compare with
            except _NotARowFile as error:
                moved = _quarantine(self.results_dir, target, str(error))
                warnings.warn(str(moved), UnreadableFileWarning, stacklevel=3)
            else:
                new = (row.column("timestamp")[0].as_py(), written_ns)
                if (recorded.table.column("timestamp")[0].as_py(), recorded.written_ns) > new:
                    return  # the recorded row is the later one and stays
        write_atomically(self.results_dir, row.replace_schema_metadata(written_metadata(written_ns)), target)


def written_metadata(written_ns: int) -> dict[bytes, bytes]:
    """A row file's schema metadata: the schema's own and when the row was written (the tie-break
    between two rows of one run id with equal timestamps)."""
    return {**SCHEMA.metadata, _WRITTEN_KEY: str(written_ns).encode()}


def write_atomically(results_dir: Path, table: pa.Table, target: Path) -> None:
    """Write ``table`` to ``target`` whole: under ``<results_dir>/.staging`` (same file system),
    then :func:`os.replace` into place, so a reader sees the old file or the new one, never half."""
    staging = _new_staging_dir(results_dir)
    try:
        staged = staging / target.name
        pq.write_table(table, staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only our own, just-made folder


# ------------------------------------------------------------------ staging


def _new_staging_dir(results_dir: Path) -> Path:
    # The owner is in the name, so clean_staging can tell a live writer's entry from a dead one's.
    path = results_dir / STAGING_DIRNAME / f"{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_staging(results_dir: str | os.PathLike[str], *, older_than_s: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove abandoned entries of ``<results_dir>/.staging`` (left by a writer that was killed).

    An entry is abandoned when its owner (``<host>~<pid>~...``) is a process of this host that no
    longer runs, or, whatever its owner (another host, an unknown name), when it was last modified
    more than ``older_than_s`` seconds ago. A live writer's entry is younger than that: each write
    makes its own and removes it within milliseconds. Returns the removed paths.
    """
    staging = Path(results_dir) / STAGING_DIRNAME
    if not staging.is_dir():
        return []
    removed = []
    host, now = socket.gethostname(), time.time()
    for entry in sorted(staging.iterdir()):
        owner_host, _, rest = entry.name.partition("~")
        pid = rest.partition("~")[0]
        dead_owner = owner_host == host and pid.isdigit() and not _pid_alive(int(pid))
        try:
            old = now - entry.lstat().st_mtime > older_than_s
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        if dead_owner or old:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


# ------------------------------------------------------------------ reader


def read_rows(
    results_dir: str | os.PathLike[str],
    *more_results_dirs: str | os.PathLike[str],
    problems: list[UnreadableFile] | None = None,
    benchmarks: Iterable[str] | None = None,
) -> pa.Table:
    """All trial rows under one or more results folders, as a table with exactly :data:`SCHEMA`;
    with ``benchmarks``, only theirs (only their folders are read).

    Several folders (runs from several machines or clusters) are read as their union.

    * Nothing there (no folder, no files): an empty table with :data:`SCHEMA`.
    * Unreadable files (not Parquet, truncated, a foreign schema, nulls in a required column) are
      skipped and reported, one :class:`UnreadableFile` each: appended to ``problems`` when a list
      is given, else issued as an :class:`UnreadableFileWarning`. Nothing on disk is changed.
    * Older files (hive folders, several rows per file, schema version 1) are read too: partition
      values from the path when the file lacks them, columns added later as nulls.
    * Deduplication, over the union: when a run_id was recorded more than once (an older dataset,
      or the same run copied into two folders), only the row with the latest ``timestamp`` is
      kept; on equal timestamps the row from the file written last wins, and then the folder
      given last.
    * Rows are sorted by benchmark, regularizer, run_id.
    """
    tables: list[pa.Table] = []
    order: list[int] = []
    benchmarks = None if benchmarks is None else tuple(benchmarks)
    for folder in (results_dir, *more_results_dirs):
        root = dataset_dir(folder)

        def read(path: Path, root: Path = root) -> FileRead | None:
            try:
                rows = _read_file(path, root)
            except FileNotFoundError:
                return None  # moved by a writer since it was listed (quarantined or rewritten): not lost
            except _NotARowFile as error:
                _report(UnreadableFile(path, str(error)), problems)
                return None
            return FileRead(rows.table, (rows.written_ns, rows.current | rows.newer << 1))

        found = _read_cached(folder, read, benchmarks)
        tables.append(found.table)
        order.extend(found.extras["written_ns"])
    table = pa.concat_tables(tables)  # in argument order: the row index breaks the last ties
    if benchmarks is not None:  # an older file may hold several benchmarks
        mine = pc.is_in(table["benchmark"], value_set=pa.array(sorted(set(benchmarks)), pa.string()))
        order = [written for written, keep in zip(order, mine.to_pylist(), strict=True) if keep]
        table = table.filter(mine)
    if table.num_rows == 0:
        return SCHEMA.empty_table()
    keep = _latest_per_run_id(table.column("run_id").to_pylist(), table.column("timestamp").to_pylist(), order)
    table = table.take(pa.array(keep, pa.int64()))
    return table.sort_by([(name, "ascending") for name in (*PARTITION_COLUMNS, "run_id")])


def _read_cached(
    results_dir: str | os.PathLike[str],
    read: Callable[[Path], FileRead | None],
    benchmarks: Iterable[str] | None = None,
) -> ReadResult:
    """Every row file of ``results_dir`` (or of ``benchmarks``) through the readers' cache
    (:mod:`bench.results.file_cache`), one cache per top folder (a benchmark's), so a read of one
    benchmark loads and saves only its own; per row, the file's ``written_ns`` and ``flags``
    (1: a current file, 2: one with newer columns)."""
    root = dataset_dir(results_dir)
    groups: dict[str, list[Path]] = {}
    for path in _data_files(root, benchmarks):
        parts = path.relative_to(root).parts
        groups.setdefault(parts[0] if len(parts) > 1 else "", []).append(path)
    found = []
    for top, files in sorted(groups.items()):
        name = "rows/" + hashlib.sha256(top.encode()).hexdigest()[:32]  # any folder name, within 255 bytes
        found.append(read_cached(results_dir, name, SCHEMA, root, files, read, extras=("written_ns", "flags")))
    return ReadResult(
        pa.concat_tables([f.table for f in found]) if found else SCHEMA.empty_table(),
        {k: [v for f in found for v in f.extras[k]] for k in ("written_ns", "flags")},
        [path for f in found for path in f.files],
    )


def has_rows(results_dir: str | os.PathLike[str]) -> bool:
    """Whether ``results_dir`` holds any data file (the sink never writes an empty one); the file
    may still turn out unreadable."""
    return bool(_data_files(dataset_dir(results_dir)))


def _latest_per_run_id(run_ids: list[str], stamps: list[object], written: list[int]) -> list[int]:
    best: dict[str, int] = {}
    for i, run_id in enumerate(run_ids):
        j = best.get(run_id)
        if j is None or (stamps[i], written[i], i) >= (stamps[j], written[j], j):
            best[run_id] = i
    return sorted(best.values())


# ------------------------------------------------------------------ tidying (writers only)


@dataclasses.dataclass(frozen=True)
class TidyReport:
    """What :func:`tidy_dataset` changed."""

    quarantined: tuple[Quarantined, ...]
    rewritten: tuple[Path, ...]  # older files whose rows now live in one file per run id
    staging_removed: tuple[Path, ...]

    def lines(self) -> list[str]:
        """One line per quarantined file (worth a user's attention); the rest is routine."""
        return [str(q) for q in self.quarantined]


def _quarantine(results_dir: Path, path: Path, reason: str) -> Quarantined:
    """Move ``path`` (under the dataset) to ``<results_dir>/quarantine/``, keeping its relative
    path, never overwriting an earlier quarantined file; its reason goes into ``<name>.reason``."""
    relative = path.relative_to(dataset_dir(results_dir))
    destination = results_dir / QUARANTINE_DIRNAME / relative
    if destination.exists():
        destination = destination.with_name(f"{destination.stem}.{time.time_ns()}{destination.suffix}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, destination)
    destination.with_name(destination.name + ".reason").write_text(reason + "\n")
    return Quarantined(path, destination, reason)


def tidy_dataset(results_dir: str | os.PathLike[str], benchmarks: Iterable[str] | None = None) -> TidyReport:
    """Make ``<results_dir>/leaderboard`` right for every reader; for ``sharpbench run`` at start-up.
    With ``benchmarks``, only their folders and the older layouts (which any benchmark's rows may
    be in): a run tidies what it writes, so its start-up does not grow with other benchmarks' rows.

    1. Stale staging entries are removed (:func:`clean_staging`).
    2. Unreadable files are moved to ``<results_dir>/quarantine/`` (:class:`Quarantined`, one
       line each in :meth:`TidyReport.lines`, for the caller to print).
    3. Older files (hive folders, several rows per file, an older schema version) are rewritten
       as one current file per run id (the latest row wins, as in :func:`read_rows`), then
       removed, and so are the folders they leave empty. A crash in between leaves both, which
       :func:`read_rows` deduplicates; the next call completes the rewrite.

    Changes the folder: call it from a writer, never from a read-only command. Raises ``OSError``
    when the folder cannot be written.
    """
    results_dir = Path(results_dir).expanduser().resolve()
    root = dataset_dir(results_dir)
    staging_removed = tuple(clean_staging(results_dir))
    quarantined: list[Quarantined] = []
    rewritten: list[Path] = []
    sink = ParquetSink(results_dir)
    sink._staging_cleaned = True

    def read(path: Path) -> FileRead | None:
        try:
            rows = _read_file(path, root)
        except FileNotFoundError:
            return None  # moved by another writer since it was listed
        except _NotARowFile as error:
            try:
                quarantined.append(_quarantine(results_dir, path, str(error)))
            except FileNotFoundError:
                pass  # removed by another writer meanwhile: nothing left to move
            return None
        return FileRead(rows.table, (rows.written_ns, rows.current | rows.newer << 1))

    # Through the cache: a start-up reads only the files written since the last read, not the history.
    found = _read_cached(results_dir, read, benchmarks)
    older: dict[Path, list[int]] = {}
    for i, (path, flags) in enumerate(zip(found.files, found.extras["flags"], strict=True)):
        if not flags:
            older.setdefault(path, []).append(i)
    for path, indices in older.items():
        # Oldest first within the file, so a later row of one run id replaces an earlier one.
        targets = set()
        for i in indices:
            row = found.table.slice(i, 1)
            sink._put(row, found.extras["written_ns"][i])
            targets.add(row_path(root, *(row.column(c)[0].as_py() for c in (*PARTITION_COLUMNS, "run_id"))))
        if path not in targets:
            # A file of the current layout but an older schema version is its own target, now
            # replaced in place by the rewrite: removing it would lose the row.
            path.unlink(missing_ok=True)
        rewritten.append(path)
    for folder in sorted({p.parent for p in rewritten}, key=lambda p: len(p.parts), reverse=True):
        while folder != root:
            try:
                folder.rmdir()
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise
            folder = folder.parent
    return TidyReport(tuple(quarantined), tuple(rewritten), staging_removed)


__all__ = [
    "DATASET_DIRNAME",
    "QUARANTINE_DIRNAME",
    "STAGING_DIRNAME",
    "STALE_STAGING_SECONDS",
    "ParquetSink",
    "Quarantined",
    "RowValidationError",
    "TidyReport",
    "UnreadableFile",
    "UnreadableFileWarning",
    "clean_staging",
    "dataset_dir",
    "has_rows",
    "read_rows",
    "row_path",
    "rows_to_table",
    "run_key",
    "tidy_dataset",
    "written_metadata",
]
