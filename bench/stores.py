"""The run's stores on disk: SQLite (``mlflow.db``, an ``optuna.db`` of older runs) and Optuna's journal file.

* **Optuna's studies default to a journal file** (``optuna.journal``, :func:`journal_path`): an
  append-only log of JSON lines that Optuna replays into memory. Asking and telling a trial there
  took 2–4 ms against 18–29 ms in SQLite (4 studies × 6 trials × 12 epoch values, measured here),
  and the driver does it between every two trials. Any SQLAlchemy URL (SQLite, PostgreSQL) still
  works where it is given. A write cut short (a full disk) leaves a last line without its newline;
  Optuna would append the next one to it and never read the file again, so the torn tail is cut off
  when the journal is opened (:func:`repair_journal`): it is the write that failed, never a
  record the run went on from.

* **Paths are taken literally.** ``"sqlite:///" + path`` is parsed as a URL: ``%41`` is decoded
  to ``A``, ``?`` starts a query string and ``#`` a fragment, so a results folder such as
  ``runs/50% noise?`` put the store somewhere else. :func:`sqlite_url` escapes the path
  (SQLAlchemy's ``URL.create``), :func:`sqlite_path` reads it back; both MLflow and Optuna parse
  these URLs with SQLAlchemy, so every tool sees the same file.
* **Readers never block the run.** In SQLite's default rollback journal, a reader holding a read
  transaction (optuna-dashboard, a notebook) blocks every writer; after Python's 5-s busy
  time-out the run's next write raised ``database is locked`` and the run ended. A store in WAL
  mode (:func:`use_wal`) lets readers and one writer work at once. WAL needs shared memory
  between the processes, which network file systems do not give: there the journal is left
  alone and the busy time-out (:data:`LOCK_TIMEOUT_S`) is what protects the run.
* **A store locked past the time-out** ends the run with one line (:func:`locked_message`) and the
  run is resumable like any interrupted one.

Depends only on :mod:`bench.failures` (which depends on nothing): the results and search rooms both use it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from functools import cache
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from bench.failures import exception_chain

_log = logging.getLogger(__name__)

#: Suffix of an Optuna journal file: a storage named by a path with it is a journal, not a URL.
JOURNAL_SUFFIX = ".journal"

#: Seconds a write waits for another connection's lock before it fails (SQLite's busy time-out;
#: Python's default is 5 s, which a dashboard's long read outlasted).
LOCK_TIMEOUT_S = 120.0
#: A journal lock older than this was left by a killed writer (an append holds it for milliseconds).
STALE_JOURNAL_LOCK_S = 10.0

#: File-system types on which SQLite's WAL is unsafe (no shared memory across hosts).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "9p", "afs", "ncpfs"}
)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///<path>`` with the path escaped, so any folder name (spaces, ``%``, ``?``, ``#``,
    unicode) reaches SQLite unchanged.

    >>> sqlite_url("/tmp/50% noise?/optuna.db")
    'sqlite:////tmp/50%25 noise%3F/optuna.db'
    """
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:`` URL (decoded as SQLAlchemy, MLflow and Optuna decode it); None
    for another database or an in-memory one.

    >>> sqlite_path("sqlite:////tmp/50%25 noise%3F/optuna.db")
    PosixPath('/tmp/50% noise?/optuna.db')
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def journal_path(storage: str) -> Path | None:
    """The file of an Optuna journal storage (a path ending in :data:`JOURNAL_SUFFIX`, not a
    URL); None for a SQLAlchemy URL.

    >>> journal_path("/r/optuna.journal"), journal_path("sqlite:////r/optuna.db")
    (PosixPath('/r/optuna.journal'), None)
    """
    if "://" in storage or not storage.endswith(JOURNAL_SUFFIX):
        return None
    return Path(storage)


def repair_journal(path: str | os.PathLike[str]) -> int:
    """Cut an Optuna journal back to its last complete line: bytes after the last newline are a
    write that failed part-way (an append is one ``write`` of whole lines, and the run stopped
    on its error). Returns the bytes cut (0 for a whole or missing file)."""
    try:
        with open(path, "rb+") as journal:
            size = journal.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            end = size
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - 65536)
                journal.seek(start)
                newline = journal.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end == size:
                return 0
            journal.truncate(end)
            return size - end
    except FileNotFoundError:
        return 0


def clear_stale_journal_lock(path: str | os.PathLike[str], older_than: float = STALE_JOURNAL_LOCK_S) -> bool:
    """Remove the lock of Optuna's journal ``path`` when a killed writer left it: a link that does
    not lead to this journal (the results folder moved after a kill -9: it leads to where the
    journal was), whatever its age, or one whose own mtime is older than ``older_than`` seconds.
    Optuna's lock would wait for the first forever (its grace period stats the link's target,
    fails, and retries at once, spinning a core) and for the second its 30 s grace period. Returns
    whether a lock was removed."""
    lock = Path(f"{os.fspath(path)}.lock")  # optuna.storages.journal's LOCK_FILE_SUFFIX
    try:
        age = time.time() - lock.lstat().st_mtime  # the link's own time, whether its target exists or not
    except FileNotFoundError:
        return False
    elsewhere = not lock.exists() or not os.path.samefile(lock, path)
    if not elsewhere and age < older_than:
        return False  # a live writer's, or one just killed: Optuna's own grace period handles it
    try:
        lock.unlink()
    except FileNotFoundError:
        return False  # its writer released it meanwhile
    return True


def filesystem_type(path: str | os.PathLike[str]) -> str:
    """The type of the file system holding ``path`` (its longest mount point in
    ``/proc/self/mountinfo``); ``""`` where that cannot be read (not Linux)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                # Mount points escape spaces and other bytes as octal (\040).
                point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, line.split(" - ", 1)[1].split()[0]
    except OSError:
        return ""
    return kind


def wal_allowed(path: str | os.PathLike[str]) -> bool:
    """Whether WAL is safe for a database under ``path``'s folder: not on a network file system."""
    kind = filesystem_type(Path(path).parent)
    return kind.split(".")[0] not in NETWORK_FILESYSTEMS and not kind.startswith("fuse.s")  # fuse.sshfs, fuse.s3fs


def use_wal(path: str | os.PathLike[str]) -> bool:
    """Put the SQLite database ``path`` (created when missing) in WAL mode where the file system
    allows it; True when it is in WAL mode afterwards. The mode is stored in the file: every later
    connection, a dashboard's included, uses it. Switching needs a moment without other
    connections; a store that another program holds open stays as it is (False)."""
    if not wal_allowed(path):
        return False
    connection = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()
    return str(mode).lower() == "wal"


@cache
def optuna_storage(url: str):  # -> optuna's BaseStorage (optuna imported lazily: a heavy import)
    """Optuna's storage for ``url``, one per process and URL: a journal file (:func:`journal_path`;
    Optuna's symlink lock, which works on network file systems too), or an RDB storage. An SQLite
    store is put in WAL mode and its writes wait up to :data:`LOCK_TIMEOUT_S` for a lock; any
    other database as Optuna opens it."""
    import optuna

    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        if clear_stale_journal_lock(journal):
            _log.warning("%s.lock was left by a killed run: removed", journal)
        lock = JournalFileSymlinkLock(str(journal))  # Optuna's writers hold it while they append
        if journal.exists() and lock.acquire():
            try:
                cut = repair_journal(journal)
            finally:
                lock.release()
            if cut:
                _log.warning("%s ended in a write cut short (%d bytes, e.g. a full disk): cut off", journal, cut)
        return optuna.storages.JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))
    path = sqlite_path(url)
    if path is None:
        return optuna.storages.RDBStorage(url)
    use_wal(path)
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": LOCK_TIMEOUT_S}})


def is_locked_error(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is SQLite's "database is locked" / "busy"."""
    texts = (str(e).lower() for e in exception_chain(error))
    return any("database is locked" in text or "database is busy" in text for text in texts)


def locked_message(store: str) -> str:
    """The one line a run ends with when a store stayed locked past the time-out."""
    return (
        f"{store} stayed locked for more than {LOCK_TIMEOUT_S:g} s: another program holds a write lock on it "
        "(close it, e.g. a tool that edits the database); the run is saved, re-run the same command to resume"
    )
