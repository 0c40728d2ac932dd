"""A reader's memory of the files it has read: reading a store costs what changed, not its history.

Every row and every curve is a file of its own (one per run id, see :mod:`bench.results.parquet`),
and opening one costs 1 to 2 ms whatever its size: 50,000 of them took about a minute and a half
to read here, while listing and stat-ing them takes under a second. So a reader keeps what it
read in one Parquet file, ``<results_dir>/.cache/<name>.parquet``: the rows of every file it read
with that file's relative path, size, modification time (ns) and inode, and a few per-file
integers of the caller's (e.g. when the row was written). The next read takes from it every file
whose four keys are unchanged and opens only the others.

The cache is a copy, never the record: delete it and the next read is slow once. A writer
replaces a file with :func:`os.replace` (a new inode and time), so a replaced file is read again;
a file that no longer exists is dropped from the cache. A cache that cannot be read, or was
written for another schema, is ignored and rebuilt; one that cannot be written (a read-only
folder) is not written, and the read is as right, only slower. Hidden folder: no reader of the
dataset looks there, and it sits outside ``leaderboard/`` and ``curves/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CACHE_DIRNAME = ".cache"
#: Bumped when the cache's own layout changes (its keys), so older caches are ignored.
CACHE_VERSION = 1
_KEYS = ("_file", "_size", "_mtime_ns", "_ino")
_VERSION_KEY = b"sharpbench_cache"
#: Files to open at which the reads go to threads, and how many.
PARALLEL_FROM = 64
READ_THREADS = 4

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRead:
    """One file's rows and the caller's per-file integers (``extras``, in the cache's order)."""

    table: pa.Table
    extras: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReadResult:
    """What :func:`read_cached` found: every readable file's rows, in the order of the files, and
    per row the file's extras (``extras[name][i]`` for row ``i``) and the file it came from."""

    table: pa.Table
    extras: dict[str, list[int]]
    files: list[Path]


def cache_path(results_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(results_dir) / CACHE_DIRNAME / f"{name}.parquet"


def _cache_schema(schema: pa.Schema, extras: Sequence[str]) -> pa.Schema:
    fields = [*schema, pa.field("_file", pa.string()), *(pa.field(k, pa.int64()) for k in (*_KEYS[1:], *extras))]
    version = f"{CACHE_VERSION}:{schema.metadata or {}}".encode()
    return pa.schema(fields, metadata={_VERSION_KEY: version})


def _load(path: Path, expected: pa.Schema) -> pa.Table | None:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as error:
        _log.debug("ignored the unreadable cache %s: %s", path, error)
        return None
    if (table.schema.metadata or {}).get(_VERSION_KEY) != expected.metadata[_VERSION_KEY]:
        return None
    if not table.schema.remove_metadata().equals(expected.remove_metadata()):
        return None
    return table


def _save(path: Path, table: pa.Table) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, staged)
        os.replace(staged, path)  # two readers saving at once: the last one's whole file stays
    except OSError as error:  # a read-only results folder: the read stays right, only slower next time
        _log.debug("did not write the cache %s: %s", path, error)
        with contextlib.suppress(OSError):  # never made, where no folder could be
            staged.unlink(missing_ok=True)


def read_cached(
    results_dir: str | os.PathLike[str],
    name: str,
    schema: pa.Schema,
    root: Path,
    files: Sequence[Path],
    read: Callable[[Path], FileRead | None],
    extras: Sequence[str] = (),
) -> ReadResult:
    """The rows of ``files`` (under ``root``), each file's taken from the cache ``name`` when its
    size, time and inode are those cached, else from ``read`` (``None``: the file is skipped, e.g.
    unreadable or gone; ``read`` says why). ``read``'s tables have exactly ``schema``; ``extras``
    names the integers of :attr:`FileRead.extras`. Saves the cache when anything changed."""
    full = _cache_schema(schema, extras)
    where = cache_path(results_dir, name)
    cached = _load(where, full)
    index: dict[tuple[str, int, int, int], list[int]] = {}
    if cached is not None:
        keys = zip(*(cached.column(k).to_pylist() for k in _KEYS), strict=True)
        for i, key in enumerate(keys):
            index.setdefault(key, []).append(i)
    looked: list[tuple[Path, tuple[str, int, int, int], list[int] | None]] = []
    for path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # moved by a writer since it was listed
        key = (path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        looked.append((path, key, index.get(key)))
    misses = [path for path, _, rows in looked if rows is None]
    if len(misses) >= PARALLEL_FROM:
        # Opening a file is mostly Arrow's work, which releases the GIL: a few threads read many
        # files about twice as fast (measured on 2 cores); results keep the files' order.
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            reads = dict(zip(misses, pool.map(read, misses), strict=True))
    else:
        reads = {path: read(path) for path in misses}
    pieces: list[tuple[str, object]] = []  # ("hit", row indices) or ("new", (read, key, path))
    used = sum(rows is not None for _, _, rows in looked)
    fresh = False
    for path, key, rows in looked:
        if rows is not None:
            pieces.append(("hit", rows))
            continue
        found = reads[path]
        if found is not None:  # an unreadable file is not cached: it is read, and said, every time
            fresh = True
            pieces.append(("new", (found, key, path)))
    tables, new_tables, file_of_row = [], [], []
    extra_values: dict[str, list[int]] = {k: [] for k in extras}
    hits: list[int] = []

    def flush_hits() -> None:
        if hits:
            taken = cached.take(pa.array(hits, pa.int64()))
            tables.append(taken.select(schema.names))
            new_tables.append(taken)
            for k in extras:
                extra_values[k].extend(taken.column(k).to_pylist())
            file_of_row.extend(root / f for f in taken.column("_file").to_pylist())
            hits.clear()

    for kind, value in pieces:
        if kind == "hit":
            hits.extend(value)
            continue
        flush_hits()
        found, key, path = value
        count = found.table.num_rows
        tables.append(found.table)
        columns = {"_file": [key[0]] * count, "_size": [key[1]] * count, "_mtime_ns": [key[2]] * count}
        columns["_ino"] = [key[3]] * count
        for k, v in zip(extras, found.extras, strict=True):
            columns[k] = [v] * count
            extra_values[k].extend([v] * count)
        keyed = found.table
        for k in full.names[len(schema) :]:
            keyed = keyed.append_column(full.field(k), pa.array(columns[k], full.field(k).type))
        new_tables.append(keyed)
        file_of_row.extend([path] * count)
    flush_hits()
    stale = cached is not None and used < len(index)
    if fresh or stale or (cached is None and files):
        whole = pa.concat_tables(new_tables) if new_tables else full.empty_table()
        _save(where, whole.replace_schema_metadata(full.metadata))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return ReadResult(table, extra_values, file_of_row)


__all__ = ["CACHE_DIRNAME", "FileRead", "ReadResult", "cache_path", "read_cached"]
