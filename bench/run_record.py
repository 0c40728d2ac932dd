"""Run identity: which config a results folder holds, so an old run is never shown as a new one's.

A run of benchmark ``b`` into results folder ``R`` is

* its **config hash**: SHA-256 of the resolved config with the keys that do not change results
  left out (:data:`NOT_IDENTITY`: where results go and how trials are placed), and
* its **run instance**: a random id made when the run first started; MLflow parent runs are
  found by it, so a fresh run never nests under an old run of the same benchmark name.

Both live in ``R/runs/<b>.json`` with the resolved config. A later call with the same hash
resumes; a different hash stops before anything starts (:class:`IdentityMismatch`, naming the
keys that differ) unless the caller asks for a fresh run, which moves the old run's rows, Tune
state and record aside under ``R/superseded/<b>-<old instance>/`` (kept, never read as
results). :class:`FolderLock` keeps a second concurrent run out of the same folder.

Ray-free and MLflow-free: the CLI calls it before anything starts.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchmarkConfig, ConfigError, parse_config
from bench.config.load import with_prior_values

#: Sub-folder of a results folder holding one record per benchmark.
RECORDS_DIRNAME = "runs"
#: Where a superseded run's rows and state are moved by a fresh run (``--restart``).
SUPERSEDED_DIRNAME = "superseded"
LOCK_FILENAME = ".sharpbench.lock"
#: Ray Tune's experiments, under the results folder (``<benchmark>/run``, ``<benchmark>/final-<hash>``).
TUNE_DIRNAME = "ray"

#: Config keys that change where results go or how trials are placed, not what they are: a
#: resumed run may change them (e.g. resume on a bigger machine, log to another server).
NOT_IDENTITY = frozenset(
    {
        "tracking_uri",
        "optuna_storage",
        "search.max_concurrent_trials",
        "search.max_failures",
        "search.checkpoint_every",
        "resources.cpus_per_trial",
        "resources.gpus_per_trial",
        "dataset.data_dir",
        "dataset.download",
        # Streamed batches are the same for any number of loader workers (bench.data.stream).
        "dataset.loader_workers",
    }
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def identity_view(config: BenchmarkConfig) -> dict[str, Any]:
    """The dotted keys of ``config`` that define its results, with their values."""
    flat = _flatten(json.loads(config.model_dump_json()))
    return {k: v for k, v in flat.items() if not any(k == key or k.startswith(key + ".") for key in NOT_IDENTITY)}


def config_hash(config: BenchmarkConfig) -> str:
    """SHA-256 (hex) of :func:`identity_view`, keys sorted: stable across processes and machines."""
    text = json.dumps(identity_view(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def differing_keys(old: BenchmarkConfig, new: BenchmarkConfig) -> list[str]:
    """The dotted keys whose values differ between two configs' identity views."""
    a, b = identity_view(old), identity_view(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


class IdentityMismatch(ValueError):
    """The folder holds a run of another config of the same benchmark; the message is one line."""


@dataclass(frozen=True)
class RunRecord:
    """What a results folder says about one benchmark's run."""

    benchmark: str
    config: BenchmarkConfig
    config_hash: str
    instance: str  # random id, fixed when the run first started
    created: str  # ISO 8601 UTC

    @classmethod
    def new(cls, config: BenchmarkConfig) -> RunRecord:
        return cls(
            config.benchmark,
            config,
            config_hash(config),
            uuid.uuid4().hex[:12],
            dt.datetime.now(dt.timezone.utc).isoformat(),
        )

    def path(self, results_dir: Path) -> Path:
        return record_path(results_dir, self.benchmark)

    def save(self, results_dir: Path) -> Path:
        """Write (atomically) to ``results_dir/runs/<benchmark>.json``."""
        path = self.path(results_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".json.tmp")
        payload = {
            "benchmark": self.benchmark,
            "config_hash": self.config_hash,
            "instance": self.instance,
            "created": self.created,
            "config": json.loads(self.config.model_dump_json()),
        }
        staging.write_text(json.dumps(payload, indent=2) + "\n")
        staging.replace(path)
        return path

    def with_config(self, config: BenchmarkConfig) -> RunRecord:
        """The same run (instance) with a config whose non-identity keys changed."""
        return RunRecord(self.benchmark, config, config_hash(config), self.instance, self.created)


def record_path(results_dir: Path, benchmark: str) -> Path:
    return Path(results_dir) / RECORDS_DIRNAME / f"{benchmark}.json"


def load_record(path: Path) -> RunRecord:
    """Raises :class:`~bench.config.ConfigError` (one line naming the file) when unreadable."""
    try:
        raw = json.loads(path.read_text())
        config = parse_config(with_prior_values(raw["config"]), source=str(path))
        return RunRecord(raw["benchmark"], config, raw["config_hash"], raw["instance"], raw["created"])
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: unreadable run record ({type(error).__name__}: {error})") from None


def load_records(results_dir: Path) -> dict[str, RunRecord]:
    """Every run recorded under ``results_dir``, by benchmark name."""
    folder = Path(results_dir) / RECORDS_DIRNAME
    return {record.benchmark: record for record in (load_record(p) for p in sorted(folder.glob("*.json")))}


def resolve(config: BenchmarkConfig, results_dir: Path, *, restart: bool = False) -> RunRecord:
    """The record this call runs under: the folder's own for the same config (a resume), a new
    one for a new benchmark, or with ``restart`` a new one after moving the old run aside.

    Raises :class:`IdentityMismatch` when the folder holds another config of the benchmark that
    started (left Parquet rows or Tune state) and ``restart`` is false; the record of a run that
    never started is replaced. Call with the folder's :class:`FolderLock` held.
    """
    results_dir = Path(results_dir)
    path = record_path(results_dir, config.benchmark)
    if not path.exists():
        record = RunRecord.new(config)
        record.save(results_dir)
        return record
    old = load_record(path)
    legacy = legacy_experiments(results_dir, config.benchmark)
    # Not part of the identity (the same trials), but where the run's studies are: a resume
    # elsewhere would start empty studies beside the rows and re-ask finished trials.
    moved_studies = old.config.optuna_storage != config.optuna_storage and started(old, results_dir)
    if moved_studies and not restart:

        def named(storage: str | None) -> str:
            return f"--optuna-storage {storage}" if storage else "no --optuna-storage (the folder's own studies)"

        raise IdentityMismatch(
            f"the run of benchmark {config.benchmark!r} in {results_dir} keeps its Optuna studies "
            f"{'in ' + old.config.optuna_storage if old.config.optuna_storage else 'in the folder'}; resume it with "
            f"{named(old.config.optuna_storage)}, not {named(config.optuna_storage)}, or pass --restart to set it aside"
        )
    # The old config's hash under today's schema, not the stored one: a key added since with a
    # default that keeps the old behaviour must not stop a resume (PRIOR_VALUES covers the others).
    if config_hash(old.config) == config_hash(config) and not legacy and not moved_studies:
        record = old.with_config(config)  # non-identity keys (e.g. concurrency) may have changed
        record.save(results_dir)
        return record
    if legacy and not restart:
        raise IdentityMismatch(
            f"{results_dir} holds a run of benchmark {config.benchmark!r} started by an older sharpbench "
            f"(one Tune experiment per method, e.g. ray/{legacy[0].name}), which this version cannot resume; "
            f"pass --restart to set it aside under {results_dir / SUPERSEDED_DIRNAME} and start afresh, or use "
            "another --results folder"
        )
    if not restart and not started(old, results_dir):
        # Nothing of the old run exists but its record (it stopped before its first trial, e.g.
        # on a Ray cluster it could not join): there is nothing to protect or set aside.
        record = RunRecord.new(config)
        record.save(results_dir)
        return record
    if not restart:
        keys = differing_keys(old.config, config)
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        raise IdentityMismatch(
            f"{results_dir} holds a run of benchmark {config.benchmark!r} with another config (differs in {shown}); "
            f"resume it with its own config, use another --results folder or benchmark name, or pass --restart "
            f"to set the old run aside under {results_dir / SUPERSEDED_DIRNAME}"
        )
    supersede(old, results_dir)
    record = RunRecord.new(config)
    record.save(results_dir)
    return record


def started(record: RunRecord, results_dir: Path) -> bool:
    """Whether the run of ``record`` left anything beyond its record: Parquet rows or Tune state."""
    from bench.results.parquet import benchmark_dir

    rows = benchmark_dir(results_dir, record.benchmark)
    return (results_dir / TUNE_DIRNAME / record.benchmark).exists() or (rows.is_dir() and any(rows.rglob("*.parquet")))


def supersede(old: RunRecord, results_dir: Path) -> Path:
    """Move ``old``'s Parquet rows, Tune state and record under ``superseded/<b>-<instance>/``.

    Its Optuna studies stay where they are: their names carry the run instance, so the new run
    never continues them (bench.search.studies). Moves within one file system (``os.replace``), so
    nothing is copied and nothing is half there: each part is either in the live folder or set aside.
    """
    from bench.results.parquet import benchmark_dir

    target = results_dir / SUPERSEDED_DIRNAME / f"{old.benchmark}-{old.instance}"
    target.mkdir(parents=True, exist_ok=True)
    rows = benchmark_dir(results_dir, old.benchmark)
    if rows.exists():
        os.replace(rows, target / "rows")
    tune_state = results_dir / TUNE_DIRNAME
    # ray/<b>/ holds the benchmark's experiments; ray/<b>-<method>-<phase>/ is the older layout.
    for experiment in [
        e for e in [tune_state / old.benchmark, *legacy_experiments(results_dir, old.benchmark)] if e.is_dir()
    ]:
        (target / TUNE_DIRNAME).mkdir(exist_ok=True)
        os.replace(experiment, target / TUNE_DIRNAME / experiment.name)
    os.replace(old.path(results_dir), target / "run.json")
    return target


def legacy_experiments(results_dir: Path, benchmark: str) -> list[Path]:
    """Tune experiments of ``benchmark`` in the layout before one experiment ran the whole
    benchmark (``ray/<benchmark>-<method>-<search|final>/``): not resumable by this version."""
    tune_state = Path(results_dir) / TUNE_DIRNAME
    if not tune_state.is_dir():
        return []
    return sorted(
        p
        for p in tune_state.iterdir()
        if p.is_dir() and p.name.startswith(f"{benchmark}-") and p.name.endswith(("-search", "-final"))
    )


class FolderBusy(RuntimeError):
    """Another process holds the results folder's lock; the message is one line."""


#: Environment variable by which a suite hands its benchmarks' runs the folder lock it holds
#: (:mod:`bench.suite`): the number of an inherited descriptor of the lock file.
HELD_LOCK_FD = "SHARPBENCH_HELD_LOCK_FD"


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<results>/.sharpbench.lock`` for the life of a run.

    The kernel drops the lock when the process dies (kill -9 included), so a crashed run never
    leaves the folder locked. flock is reliable on local file systems; on NFS it depends on the
    server (use one results folder per driver there).

    A suite's benchmarks run in processes of their own under the suite's one lock: the suite
    passes them its locked descriptor (:data:`HELD_LOCK_FD`). A flock belongs to the open file,
    which the child shares, so locking it again succeeds there and nowhere else; the child
    checks it is this folder's lock file and leaves unlocking to the suite.
    """

    def __init__(self, results_dir: Path) -> None:
        self.path = Path(results_dir) / LOCK_FILENAME
        self._file: Any = None
        self._inherited = False

    def _inherit(self) -> bool:
        """Whether this process holds the folder's lock through a descriptor its suite passed."""
        raw = os.environ.get(HELD_LOCK_FD, "")
        if not raw.isdigit():
            return False
        fd = int(raw)
        try:
            mine, theirs = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return False  # a lock of another folder: this run locks its own
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __enter__(self) -> FolderLock:
        if self._inherit():
            self._inherited = True
            return self
        self._file = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise FolderBusy(
                f"{self.path.parent} is in use by another sharpbench run ({holder}); wait for it or use another "
                "--results folder"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {os.uname().nodename}")
        self._file.flush()
        return self

    def descriptor(self) -> int:
        """The locked descriptor, to pass to child processes (:data:`HELD_LOCK_FD`)."""
        return self._file.fileno()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
