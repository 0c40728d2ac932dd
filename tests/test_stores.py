"""SQLite stores: paths taken literally in URLs, WAL so that readers never block the run's writes,
a busy time-out for the rest, and one line for a store locked past it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import OperationalError

from bench.results.mlflow_sink import MlflowSink, default_tracking_uri
from bench.stores import (
    STALE_JOURNAL_LOCK_S,
    clear_stale_journal_lock,
    filesystem_type,
    is_locked_error,
    locked_message,
    optuna_storage,
    repair_journal,
    sqlite_path,
    sqlite_url,
    use_wal,
    wal_allowed,
)

HOSTILE_FOLDERS = ["plain", "with space", "50% noise", "what?", "hash#tag", "%41", "dígitos ü", "a&b=c;d", "x%2Fy"]


@pytest.mark.parametrize("folder", HOSTILE_FOLDERS)
def test_sqlite_url_round_trips_and_sqlalchemy_opens_that_very_file(tmp_path, folder):
    path = tmp_path / folder / "store.db"
    path.parent.mkdir()
    url = sqlite_url(path)
    assert sqlite_path(url) == path
    storage = optuna.storages.RDBStorage(url)  # SQLAlchemy parses the URL as Optuna and MLflow do
    optuna.create_study(storage=storage, study_name="s")
    assert path.is_file() and path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]  # no other file or folder appeared


def test_a_naive_url_would_reach_another_file(tmp_path):
    """Why sqlite_url exists: the string concatenation it replaced decodes %41 to A."""
    (tmp_path / "%41").mkdir()
    naive = f"sqlite:///{tmp_path / '%41' / 'store.db'}"
    assert sqlite_path(naive) == tmp_path / "A" / "store.db"
    assert sqlite_path(sqlite_url(tmp_path / "%41" / "store.db")) == tmp_path / "%41" / "store.db"


def test_mlflow_store_in_a_hostile_folder_lands_there(tmp_path):
    """Through the sink sharpbench writes with. (MLflow 3.17 itself also makes an empty folder named
    after the *escaped* path; the sink removes what MLflow made there.)"""
    folder = tmp_path / "r a%41?b#c é"
    sink = MlflowSink(default_tracking_uri(folder), experiment_name="e")
    assert sink.tracking_uri == sqlite_url(folder / "mlflow.db")
    assert (folder / "mlflow.db").is_file()
    assert "e" in {e.name for e in MlflowClient(tracking_uri=sink.tracking_uri).search_experiments()}
    assert not sink.artifacts_elsewhere  # the artifact folder's URI is read back as this folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r a%41?b#c é"]


def test_non_sqlite_urls_have_no_path():
    assert sqlite_path("postgresql+psycopg://u@127.0.0.1/db") is None
    assert sqlite_path("sqlite:///:memory:") is None


def test_wal_lets_a_writer_commit_while_a_reader_holds_a_transaction(tmp_path):
    path = tmp_path / "store.db"
    assert use_wal(path) is True
    writer = sqlite3.connect(path, timeout=0.1)
    writer.execute("create table t(x int)")
    writer.commit()
    reader = sqlite3.connect(path, timeout=0.1)
    reader.execute("begin")
    assert reader.execute("select count(*) from t").fetchone() == (0,)  # the read transaction is open
    writer.execute("insert into t values (1)")
    writer.commit()  # with the rollback journal this raises "database is locked" after 0.1 s
    assert reader.execute("select count(*) from t").fetchone() == (0,)  # the reader's snapshot
    reader.rollback()
    assert reader.execute("select count(*) from t").fetchone() == (1,)


def test_without_wal_the_same_reader_blocks_the_writer(tmp_path):
    """The failure WAL removes, shown on the same steps (so the test above can fail)."""
    path = tmp_path / "store.db"
    writer = sqlite3.connect(path, timeout=0.1)
    writer.execute("create table t(x int)")
    writer.commit()
    reader = sqlite3.connect(path, timeout=0.1)
    reader.execute("begin")
    reader.execute("select count(*) from t").fetchone()
    writer.execute("insert into t values (1)")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        writer.commit()


def test_optuna_storage_is_in_wal_mode_and_waits_for_a_writer(tmp_path):
    path = tmp_path / "optuna.db"
    storage = optuna_storage(sqlite_url(path))
    assert optuna_storage(sqlite_url(path)) is storage  # one per process and URL
    assert sqlite3.connect(path).execute("pragma journal_mode").fetchone()[0] == "wal"
    study = optuna.create_study(storage=storage, study_name="s")
    # Another program takes the write lock for 1.5 s: Optuna's write waits (busy time-out), not fails.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("begin immediate")
    release = threading.Timer(1.5, lambda: other.execute("commit"))
    release.start()
    started = time.monotonic()
    study.set_user_attr("k", "v")
    waited = time.monotonic() - started
    release.join()
    assert waited >= 1.0
    assert optuna.load_study(study_name="s", storage=storage).user_attrs == {"k": "v"}


def test_an_optuna_journal_is_one_storage_per_process_and_another_process_replays_it(tmp_path):
    path = tmp_path / "optuna.journal"
    storage = optuna_storage(str(path))
    assert optuna_storage(str(path)) is storage  # one per process and path
    assert isinstance(storage, optuna.storages.JournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.report(0.5, 1)
    study.tell(trial, 0.25)
    # A dashboard, a notebook or a resumed run: another process reads the same studies back.
    read = subprocess.run(
        [sys.executable, "-c", READ_JOURNAL, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    assert read.stdout.split() == ["COMPLETE", "0.25", "{1:", "0.5}"]


def test_a_journal_write_cut_short_is_cut_off_when_the_journal_is_opened(tmp_path):
    """A full disk stops a run in the middle of an append: the journal ends in half a line, and
    Optuna would put the next line after it and never read the file again (seen: every resume
    failed with a JSONDecodeError). Opening it cuts the torn tail; the trials written whole stay."""
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))), study_name="s")
    trial = study.ask()
    trial.report(0.5, 1)
    study.tell(trial, 0.25)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":7,"worker_id":"x","trial_id":1,"st')  # the append ENOSPC cut short
    storage = optuna_storage(str(path))
    assert path.read_bytes() == whole
    again = optuna.load_study(study_name="s", storage=storage)
    assert [(t.state.name, t.value, t.intermediate_values) for t in again.trials] == [("COMPLETE", 0.25, {1: 0.5})]
    again.tell(again.ask(), 0.5)  # and the next write is a line of its own
    assert len(optuna.load_study(study_name="s", storage=optuna_storage(str(path))).trials) == 2
    assert not (tmp_path / "optuna.journal.lock").exists()  # the lock taken for the cut is released


@pytest.mark.timeout(60)
def test_a_lock_left_by_a_killed_run_does_not_stop_the_next_one(tmp_path):
    """kill -9 while Optuna appended leaves ``optuna.journal.lock``, a symlink to the journal; moved
    with its folder, the link dangles, and Optuna's lock spun a core forever (seen in CI: a resumed
    run at 98% CPU for 8 minutes, and again in CI when the resumed run opened the journal within
    STALE_JOURNAL_LOCK_S of the kill). A lock that leads elsewhere is removed on opening whatever its
    age, one older than STALE_JOURNAL_LOCK_S too; a fresh one to this journal (a live writer's) is
    left to Optuna."""
    old = tmp_path / "old" / "optuna.journal"
    old.parent.mkdir()
    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(old))), study_name="s")
    study.tell(study.ask(), 0.25)
    moved = tmp_path / "moved"
    old.parent.rename(moved)
    path, lock = moved / "optuna.journal", moved / "optuna.journal.lock"
    lock.symlink_to(old)  # the killed writer's link, to where the journal was
    assert not lock.exists() and lock.is_symlink()  # dangling, and just made
    started = time.monotonic()
    storage = optuna_storage(str(path))
    assert time.monotonic() - started < STALE_JOURNAL_LOCK_S and not lock.is_symlink()
    assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == [0.25]
    # a fresh lock is a live writer's: left in place
    lock.symlink_to(path)
    assert clear_stale_journal_lock(path) is False and lock.is_symlink()
    stale = time.time() - 2 * STALE_JOURNAL_LOCK_S
    os.utime(lock, (stale, stale), follow_symlinks=False)
    assert clear_stale_journal_lock(path) is True and not lock.is_symlink()
    assert clear_stale_journal_lock(path) is False  # nothing left to remove
    # a fresh link to a journal that still exists elsewhere (the folder copied, not moved): not ours
    (tmp_path / "copy.journal").write_text("")
    lock.symlink_to(tmp_path / "copy.journal")
    assert clear_stale_journal_lock(path) is True and not lock.is_symlink()


def test_repairing_a_journal_keeps_whole_files_and_empties_one_torn_line(tmp_path):
    path = tmp_path / "j.journal"
    assert repair_journal(path) == 0  # missing
    path.write_bytes(b"")
    assert repair_journal(path) == 0
    path.write_bytes(b'{"a":1}\n{"b":2}\n')
    assert repair_journal(path) == 0 and path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    path.write_bytes(b'{"a":1}\n' + b"x" * 70000)  # a tail longer than one read block
    assert repair_journal(path) == 70000 and path.read_bytes() == b'{"a":1}\n'
    path.write_bytes(b'{"only":')
    assert repair_journal(path) == 8 and path.read_bytes() == b""


READ_JOURNAL = """
import sys, optuna
from bench.stores import optuna_storage
trial = optuna.load_study(study_name="s", storage=optuna_storage(sys.argv[1])).trials[0]
print(trial.state.name, trial.value, trial.intermediate_values)
"""


def test_wal_is_not_used_where_the_file_system_cannot_share_memory(tmp_path):
    assert filesystem_type("/proc/self") == "proc"
    assert wal_allowed(tmp_path / "x.db") is (filesystem_type(tmp_path).split(".")[0] not in {"nfs", "nfs4", "cifs"})


def test_locked_errors_are_recognised_through_wrappers():
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as inner:
            raise OperationalError("INSERT ...", {}, inner) from inner
    except OperationalError as outer:
        wrapped = RuntimeError("a searcher failed")
        wrapped.__cause__ = outer
        assert is_locked_error(wrapped)
    assert not is_locked_error(RuntimeError("disk I/O error"))
    line = locked_message("the Optuna store sqlite:////r/optuna.db")
    assert "\n" not in line and "120 s" in line and "re-run the same command to resume" in line
