"""Recording searches and trials to MLflow through :class:`mlflow.tracking.MlflowClient`.

No fluent (global, active-run) state is used, so the sink works from a Ray Tune callback on the
driver, next to other code that may use ``mlflow.start_run``.

Structure: one *parent* run per search (tagged with its search name) and one *nested* run per trial
(tag ``mlflow.parentRunId``). Both are idempotent, so re-running or resuming a search reuses the
runs it already created instead of opening second ones (the pitfall of Ray's
``MLflowLoggerCallback``):

* :meth:`MlflowSink.parent_run` looks the parent up by its search name;
* :meth:`MlflowSink.trial_run` looks a trial up by its trial key, first in an in-memory map that a
  callback saves and restores with :meth:`MlflowSink.state` / :meth:`MlflowSink.load_state`, then
  by a tag search in the experiment (a fresh process, a lost state).

Lookups use a tag holding a SHA-256 digest of the name (MLflow's filter strings cannot escape
quotes, and tag values have a length limit); the readable name is stored in a second tag.

Use an absolute tracking URI (:func:`default_tracking_uri`, :func:`normalize_tracking_uri`): a
trial runs in its own working directory, where ``sqlite:///mlflow.db`` would be another database.

Every run carries its provenance as MLflow's own source tags (``mlflow.source.git.commit``,
``mlflow.source.name``/``type``) plus one ``sharpbench.package.<name>`` tag per tracked package
(:class:`RunSource`); the experiment is tagged as a model-training experiment
(:data:`EXPERIMENT_KIND_TAG`). MLflow 3.17's UI shows that kind but does not open the experiment
by it: the address that opens its training runs is :func:`bench.results.mlflow_ui.runs_view_url`.

A sink is not thread-safe; use it from one thread (the driver's callback).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)
from sqlalchemy.engine import make_url

from bench import provenance
from bench.results.schema import Phase, TrialStatus
from bench.results.vocabulary import (  # noqa: F401  (the names also re-exported from here)
    ABANDONED_RUN_STATUS,
    PARENT_FINISHED,
    ROLE_SEARCH,
    ROLE_TRIAL,
    RUN_STATUS,
    RUNNING,
    STATUS_ABANDONED,
    TAG_BENCHMARK,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_HARDWARE,
    TAG_PACKAGE_PREFIX,
    TAG_PHASE,
    TAG_PRECISION,
    TAG_REGULARIZER,
    TAG_ROLE,
    TAG_SEARCH_ID,
    TAG_SEARCH_NAME,
    TAG_STATUS,
    TAG_TRIAL_ID,
    TAG_TRIAL_KEY,
    ParentRun,
    parent_run_name,
    parent_tags,
    trial_end_tags,
)
from bench.stores import sqlite_path, sqlite_url, use_wal

try:  # MLflow's own limits (3.17: params 6000, tags 8000, keys 250, 1000 metrics / 100 params per batch)
    from mlflow.utils.validation import (
        MAX_ENTITY_KEY_LENGTH,
        MAX_METRICS_PER_BATCH,
        MAX_PARAM_VAL_LENGTH,
        MAX_PARAMS_TAGS_PER_BATCH,
        MAX_TAG_VAL_LENGTH,
    )
except ImportError:  # pragma: no cover - a future MLflow that moved them
    MAX_ENTITY_KEY_LENGTH, MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH = 250, 1000, 6000
    MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH = 100, 8000

_log = logging.getLogger(__name__)

#: MLflow 3's experiment-type tag: the value is the UI's ``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``
#: (mlflow/server/js, MLflow 3.17), shown as the experiment's type ("Machine learning"). Earlier 3.x
#: UIs opened an experiment by it; 3.17 opens it in the browser's last workflow (GenAI at first)
#: whatever it says, so the console prints :func:`bench.results.mlflow_ui.runs_view_url` too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

#: MLflow's source name and type for every run: a local program (``SourceType.LOCAL``, what MLflow
#: itself records for a script), not an MLflow Project (``PROJECT`` means ``mlflow run``).
SOURCE_NAME = "sharpbench"
SOURCE_TYPE = "LOCAL"

#: Artifact names: a trial run's resolved TrialSpec; a parent run's resolved benchmark config
#: and its method's leaderboard standing.
TRIAL_CONFIG_ARTIFACT = "config.json"
BENCHMARK_CONFIG_ARTIFACT = "benchmark_config.json"
STANDING_ARTIFACT = "standing.json"

_STATE_VERSION = 1

#: MLflow's HTTP client waits 120 s per request and retries 7 times with a backoff factor of 2
#: (mlflow/environment_variables.py, 3.17): minutes per call against a dead server. sharpbench's
#: own client gets these bounds (a few seconds per failed call) unless the user set them.
BOUNDED_HTTP_ENV: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds per request
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # seconds: sleeps ~1 s, then ~2 s (plus jitter)
}
_TRUNCATION_MARK = "...[truncated {n} chars]"
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Tracking URIs
# --------------------------------------------------------------------------------------------

TRACKING_DB_NAME = "mlflow.db"


def default_tracking_uri(results_dir: str | os.PathLike[str]) -> str:
    """``sqlite:////abs/results_dir/mlflow.db``: an absolute SQLite URI inside ``results_dir``.

    >>> default_tracking_uri("/tmp/results")
    'sqlite:////tmp/results/mlflow.db'
    """
    return sqlite_url(Path(results_dir).expanduser().resolve() / TRACKING_DB_NAME)


def normalize_tracking_uri(uri: str) -> str:
    """Make a tracking URI independent of the working directory.

    * ``sqlite:///relative.db`` becomes ``sqlite:////abs/relative.db``; absolute SQLite paths,
      in-memory databases and query strings are kept.
    * A bare path (``mlruns``, ``./x``, ``~/x``, ``/abs/x``) and ``file:`` URIs become absolute
      ``file:///abs/...`` URIs.
    * Anything else (``http(s)://``, ``databricks``, ``postgresql://``, ...) is returned unchanged.
      (A relative ``sqlite://`` URL with two slashes is not recognized by MLflow either.)

    >>> normalize_tracking_uri("http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    >>> normalize_tracking_uri("sqlite:////abs/mlflow.db")
    'sqlite:////abs/mlflow.db'
    """
    uri = uri.strip()
    if uri == "databricks":  # MLflow's name for the default Databricks profile, not a path
        return uri
    if uri.startswith("sqlite:///"):
        parsed = make_url(uri)  # the path decoded as MLflow's SQLAlchemy engine decodes it
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            return uri
        absolute = Path(path).expanduser()
        if not absolute.is_absolute():
            absolute = Path.cwd() / absolute
        return parsed.set(database=os.path.normpath(absolute)).render_as_string(hide_password=False)
    if uri.startswith("file:"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            return uri
        # "file:relative/dir" and "file:///abs/dir" both carry the path in parsed.path.
        return Path(os.path.normpath(Path.cwd() / Path(parsed.path).expanduser())).as_uri()
    scheme = urlparse(uri).scheme
    if scheme and len(scheme) > 1:  # a URI (one letter would be a Windows drive)
        return uri
    return Path(os.path.normpath(Path.cwd() / Path(uri).expanduser())).as_uri()


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def truncate(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, ending with a mark saying how much was cut.

    >>> truncate("abcdefghijklmnopqrstuvwxyz" * 2, 30)
    'abcdefg...[truncated 45 chars]'
    """
    if len(value) <= limit:
        return value
    keep = max(0, limit - len(_TRUNCATION_MARK.format(n=len(value))))
    # Fewer cut characters may need fewer digits: keep as much as still fits.
    while keep < limit and keep + 1 + len(_TRUNCATION_MARK.format(n=len(value) - keep - 1)) <= limit:
        keep += 1
    return (value[:keep] + _TRUNCATION_MARK.format(n=len(value) - keep))[:limit]


def param_value(value: object) -> str:
    """How a parameter value is stored: strings as they are, containers as sorted JSON, the rest
    with ``str``; then truncated to MLflow's parameter value limit."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    else:
        text = str(value)
    return truncate(text, MAX_PARAM_VAL_LENGTH)


def _check_key(kind: str, key: str) -> str:
    if not key or len(key) > MAX_ENTITY_KEY_LENGTH:
        raise ValueError(f"{kind} key {key[:80]!r} must have 1 to {MAX_ENTITY_KEY_LENGTH} characters")
    return key


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSource:
    """Where every run of a sink came from, written as tags when a run is created.

    ``git_commit`` is :func:`bench.provenance.git_commit`'s value (``<sha>`` or ``<sha>-dirty``,
    ``None`` outside a checkout); MLflow's ``mlflow.source.git.commit`` gets the bare sha and
    ``mlflow.source.git.dirty`` says whether the tree had changes, so ``commit + "-dirty"`` is the
    Parquet row's ``git_commit``.
    """

    git_commit: str | None
    package_versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls) -> RunSource:
        """This process's checkout and installed packages (:mod:`bench.provenance`)."""
        return cls(git_commit=provenance.git_commit(), package_versions=provenance.package_versions())

    def tags(self) -> dict[str, str]:
        tags = {MLFLOW_SOURCE_NAME: SOURCE_NAME, MLFLOW_SOURCE_TYPE: SOURCE_TYPE}
        if self.git_commit:
            sha, dirty, _ = self.git_commit.partition("-dirty")
            tags[MLFLOW_GIT_COMMIT] = sha
            tags[MLFLOW_GIT_DIRTY] = "true" if dirty else "false"
        tags.update({TAG_PACKAGE_PREFIX + name: version for name, version in self.package_versions.items()})
        return tags


@contextlib.contextmanager
def _store_lock(db: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``<db>.lock`` (nothing for other stores); the kernel releases
    it when the holder dies."""
    if db is None:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _no_stray_folder(uri: str) -> Iterator[None]:
    """MLflow (3.17, ``_make_parent_dirs_if_sqlite``) makes the parent folder of an SQLite URI's
    path *without decoding it*: for a results folder with ``%``, ``?``, ``#`` or non-ASCII
    characters (escaped in the URI, :func:`bench.stores.sqlite_url`) it left empty folders named
    after the escaped text. The folders that MLflow made here, and that stayed empty, are removed."""
    raw = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    made = [] if raw is None else [folder for folder in (raw, *raw.parents) if not folder.exists()]
    try:
        yield
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not made after all, or not empty: not ours to remove
                folder.rmdir()


#: Suffix of a SQLite store being created (:func:`_create_store`), then the creating pid.
CREATING_SUFFIX = ".creating-"


def _create_store(db: Path) -> None:
    """Make a new SQLite store's schema in a file beside ``db``, then move it into place.

    MLflow builds a schema through a chain of migrations; a process killed part-way (kill -9 in
    the first seconds of a run) left a store no later call could open ("duplicate column name",
    "table ... already exists"), and ``--restart`` did not help. With this, ``db`` is absent or
    whole. Call with the store's lock held (:func:`_store_lock`): files an earlier, killed
    creation left are removed first."""
    for stale in db.parent.glob(f"{db.name}{CREATING_SUFFIX}*"):
        stale.unlink(missing_ok=True)
    staging = db.with_name(f"{db.name}{CREATING_SUFFIX}{os.getpid()}")
    try:
        MlflowClient(tracking_uri=sqlite_url(staging)).search_experiments(max_results=1)  # every migration
        os.replace(staging, db)
    finally:
        staging.unlink(missing_ok=True)


def _artifact_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"artifact name {name!r} must be a relative path without '..'")
    return path


# --------------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------------


@dataclass
class _PendingEpochs:
    """Epochs of one run that :meth:`MlflowSink.log_epoch` holds back, oldest first."""

    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


class MlflowSink:
    """Parent run per search, nested run per trial, in experiment ``experiment_name``.

    ``tracking_uri`` is normalized with :func:`normalize_tracking_uri`; for a SQLite store the
    database's folder is created and new experiments keep artifacts in ``<that folder>/mlartifacts``.
    The experiment is created (or restored, if deleted) on construction and tagged as a
    model-training experiment unless it already declares a kind. ``source`` (default:
    :meth:`RunSource.current`) is tagged on every run the sink creates.

    ``epoch_flush_seconds`` (default 0: every epoch is sent at once) lets :meth:`log_epoch` send
    a run's epochs at most once per that many seconds: an epoch logged sooner after the run's
    last send is held back, and goes with the run's next epoch logged after the period, its
    :meth:`finish_trial` or a :meth:`flush`, all in one ``log_batch``. Epochs longer than the
    period are sent as they come. Ray Tune's trials wait
    for the driver's callbacks after every report, so one SQLite write per epoch (~5 ms here)
    is paid by every epoch of every trial; held back, it is paid once per period. Each point
    keeps the time it was logged at; the UI shows a running trial's curve up to that period late.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        source: RunSource | None = None,
        *,
        epoch_flush_seconds: float = 0.0,
    ) -> None:
        if epoch_flush_seconds < 0:
            raise ValueError(f"epoch_flush_seconds must be >= 0, got {epoch_flush_seconds}")
        self.epoch_flush_seconds = epoch_flush_seconds
        self._pending: dict[str, _PendingEpochs] = {}  # run id -> epochs not sent yet
        self._last_sent: dict[str, float] = {}  # run id -> time.monotonic() of its last epoch send
        self.tracking_uri = normalize_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.source = source if source is not None else RunSource.current()
        artifact_location: str | None = None
        db: Path | None = None
        if self.tracking_uri.startswith("sqlite:///"):
            db = sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            artifact_location = (db.parent / "mlartifacts").as_uri()
        for name, value in BOUNDED_HTTP_ENV.items():
            os.environ.setdefault(name, value)  # read by MLflow per request: set before the first
        # The client (3.17: on construction) and the first call create a fresh SQLite store's
        # schema; two processes doing it at once race ("table ... already exists", alembic's
        # version row), so one at a time (FIELD-NOTES, MLflow).
        with _store_lock(db), _no_stray_folder(self.tracking_uri):
            if db is not None and not db.exists():
                _create_store(db)
            if db is not None:
                use_wal(db)  # a dashboard reading the store never blocks this run's writes
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            self.experiment_id = self._experiment(experiment_name, artifact_location)
        #: MLflow fixes an experiment's artifact folder when it is created. When the results folder
        #: holding the sqlite store has moved since, that folder is the old place: logging there
        #: would recreate the old results folder, so artifacts are skipped (said once, below).
        self.artifacts_elsewhere = db is not None and not self._artifacts_beside(db)
        if self.artifacts_elsewhere:
            _log.warning(
                "MLflow artifacts of experiment %r live in %s, fixed when it was created; the store has moved to %s, "
                "so this run logs no artifacts (metrics, params and tags still go to MLflow; Parquet has every row)",
                experiment_name,
                self.client.get_experiment(self.experiment_id).artifact_location,
                db.parent,
            )
        self._parents: dict[str, str] = {}  # search name -> run id
        self._trials: dict[str, str] = {}  # trial key -> run id
        self._last_step: dict[str, int] = {}  # run id -> last step logged by log_epoch
        #: (run id, key, step) -> the value this sink last sent there, by log_metrics and finish_parent: a
        #: parent's counters are logged as each trial ends and again as it ends, once per point.
        self._points: dict[tuple[str, str, int], float] = {}
        #: run id -> the last epoch step the run holds (in the store or sent by this sink): a
        #: resumed or retried trial re-runs epochs after its checkpoint; they are not logged twice.
        self._logged_through: dict[str, int] = {}
        self._tags_sent: dict[str, dict[str, str]] = {}  # run id -> tags log_epoch already sent

    # ---------------------------------------------------------------- experiment / lookups

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING}
                )
            except MlflowException:  # created concurrently by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            # An experiment created before the tag existed (or by another tool); one a user has
            # set to another kind in the UI is left as it is.
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING)
        return experiment.experiment_id

    def _artifacts_beside(self, db: Path) -> bool:
        location = self.client.get_experiment(self.experiment_id).artifact_location or ""
        if not location.startswith("file://"):
            return True  # not a local folder: nothing of ours to recreate
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
        return folder.is_relative_to(db.parent.resolve()) or folder.is_relative_to(db.parent)

    def _find_run(self, tag: str, digest: str, what: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tag}` = '{digest}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=10,
            order_by=["attributes.start_time ASC"],
        )
        if not runs:
            return None
        if len(runs) > 1:
            _log.warning("%d MLflow runs for %s; using the oldest, %s", len(runs), what, runs[0].info.run_id)
        return runs[0].info.run_id

    def _reopen(self, run_id: str) -> dict[str, str]:
        """Mark a reused run RUNNING again; return its params (to avoid re-logging them)."""
        run = self.client.get_run(run_id)
        if run.info.status != RUNNING:
            self.client.update_run(run_id, status=RUNNING)
        return dict(run.data.params)

    def _log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """As few ``log_batch`` calls as MLflow's batch limits allow (one in the usual case)."""
        param_list = [Param(_check_key("param", k), v) for k, v in (params or {}).items()]
        tag_list = [RunTag(_check_key("tag", k), truncate(v, MAX_TAG_VAL_LENGTH)) for k, v in (tags or {}).items()]
        metric_chunks = list(_chunks(list(metrics), MAX_METRICS_PER_BATCH)) or [[]]
        param_chunks = list(_chunks(param_list, MAX_PARAMS_TAGS_PER_BATCH)) or [[]]
        tag_chunks = list(_chunks(tag_list, MAX_PARAMS_TAGS_PER_BATCH)) or [[]]
        for i in range(max(len(metric_chunks), len(param_chunks), len(tag_chunks))):
            batch_metrics = metric_chunks[i] if i < len(metric_chunks) else []
            batch_params = param_chunks[i] if i < len(param_chunks) else []
            batch_tags = tag_chunks[i] if i < len(tag_chunks) else []
            if batch_metrics or batch_params or batch_tags:
                self.client.log_batch(
                    run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags, synchronous=True
                )

    @staticmethod
    def _metrics(values: Mapping[str, float | None], step: int) -> list[Metric]:
        stamp = _now_ms()
        return [
            Metric(_check_key("metric", key), float(value), stamp, int(step))
            for key, value in values.items()
            if value is not None
        ]

    # ---------------------------------------------------------------- runs

    def parent_run(
        self,
        search_name: str,
        benchmark: str,
        regularizer: str,
        phase: Phase | str,
        params: Mapping[str, str],
        config: Mapping[str, Any] | None = None,
    ) -> str:
        """The run of search ``search_name``: created once, reused (and set RUNNING) afterwards.

        ``params`` are logged on creation; on reuse only params the run lacks are added (MLflow
        params are immutable; a changed value is kept as first logged, with a warning).
        ``config`` (the resolved benchmark config, JSON-serializable) becomes the artifact
        ``benchmark_config.json`` of a new run.
        """
        parent = ParentRun(search_name, benchmark, regularizer, Phase(phase), params, config)
        name = parent_run_name(parent)
        run_id, created = self._get_or_create(
            self._parents, TAG_SEARCH_ID, search_name, name, params, parent_tags(parent)
        )
        if created and config is not None and not self.artifacts_elsewhere:
            self.client.log_dict(run_id, dict(config), BENCHMARK_CONFIG_ARTIFACT)
        return run_id

    def trial_run(
        self,
        parent_run_id: str,
        trial_key: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
        config: Mapping[str, Any] | None = None,
        *,
        find: bool = True,
    ) -> str:
        """The run of trial ``trial_key`` (unique across searches, e.g. ``"<search>/<trial id>"``),
        nested under ``parent_run_id``.

        Looked up in the in-memory map, then by tag in the experiment (unless ``find`` is false:
        the caller knows no earlier run exists; a search by tag grows with the experiment's runs);
        created only when neither knows it. A found run is set RUNNING again, so a resumed trial logs into its old run.
        ``config`` (the resolved trial spec, JSON-serializable) becomes the artifact
        ``config.json`` of a new run.
        """
        all_tags = {
            **{str(k): str(v) for k, v in tags.items()},
            TAG_ROLE: ROLE_TRIAL,
            TAG_TRIAL_KEY: trial_key,
            MLFLOW_PARENT_RUN_ID: parent_run_id,
        }
        run_id, created = self._get_or_create(
            self._trials, TAG_TRIAL_ID, trial_key, run_name, params, all_tags, find=find
        )
        if created and config is not None and not self.artifacts_elsewhere:
            self.client.log_dict(run_id, dict(config), TRIAL_CONFIG_ARTIFACT)
        return run_id

    def _get_or_create(
        self,
        known: dict[str, str],
        id_tag: str,
        key: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
        *,
        find: bool = True,
    ) -> tuple[str, bool]:
        """The run identified by ``key``, and whether it was created now: from ``known``, else
        found by its ``id_tag`` digest (when ``find``), else created.

        A new run gets the source tags, ``tags`` (plus the digest) and ``params``; a found one is
        set RUNNING again and only gets the params it lacks.
        """
        run_id = known.get(key) or (self._find_run(id_tag, _digest(key), key) if find else None)
        values = {k: param_value(v) for k, v in params.items()}
        created = run_id is None
        if run_id is None:
            merged = {**self.source.tags(), **tags, id_tag: _digest(key)}
            all_tags = {k: truncate(v, MAX_TAG_VAL_LENGTH) for k, v in merged.items()}
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name).info.run_id
            self._log(run_id, params=values)
        else:
            self._log(run_id, params=self._missing_params(run_id, values))
        known[key] = run_id
        return run_id, created

    def find_parent_run(self, search_name: str) -> str | None:
        """The run id of search ``search_name`` in this experiment, ``None`` when it has none."""
        return self._parents.get(search_name) or self._find_run(TAG_SEARCH_ID, _digest(search_name), search_name)

    def find_trial_run(self, trial_key: str) -> str | None:
        """The run id of trial ``trial_key`` in this experiment, ``None`` when it has none (not reopened)."""
        return self._trials.get(trial_key) or self._find_run(TAG_TRIAL_ID, _digest(trial_key), trial_key)

    def _missing_params(self, run_id: str, values: Mapping[str, str]) -> dict[str, str]:
        logged = self._reopen(run_id)
        changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
        if changed:
            _log.warning("run %s keeps its first values of params %s (MLflow params are immutable)", run_id, changed)
        return {k: v for k, v in values.items() if k not in logged}

    def log_epoch(
        self, run_id: str, step: int, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
    ) -> None:
        """All of one epoch's metrics at ``step`` in one ``log_batch`` call (more than
        MLflow's 1000 metrics per batch would be split). A resumed trial that repeats epochs
        logs those steps again: MLflow would keep both points, so a step the run already holds
        (read from the store once per run and process, then tracked) is skipped.

        ``tags`` (e.g. the device and precision a trial used) ride in the same batch, and only
        those whose value differs from what this sink last sent for the run.

        With ``epoch_flush_seconds`` > 0 the epoch is held back when the run's last send was
        less than that long ago (see the class docstring)."""
        if run_id not in self._logged_through:
            self._logged_through[run_id] = self._stored_through(run_id)
        if step <= self._logged_through[run_id]:
            return  # the run holds this epoch already (a resumed trial repeats it)
        self._logged_through[run_id] = step
        sent = self._tags_sent.setdefault(run_id, {})
        changed = {k: str(v) for k, v in (tags or {}).items() if sent.get(k) != str(v)}
        pending = self._pending.setdefault(run_id, _PendingEpochs())
        pending.metrics += self._metrics(metrics, step)
        pending.tags.update(changed)
        sent.update(changed)
        self._last_step[run_id] = max(step, self._last_step.get(run_id, step))
        last = self._last_sent.get(run_id)
        if last is None or time.monotonic() - last >= self.epoch_flush_seconds:
            self.flush(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set ``tags`` on run ``run_id`` in one batch."""
        self._log(run_id, tags=tags)

    def log_metrics(self, run_id: str, values: Mapping[str, float | None], step: int) -> None:
        """Log ``values`` (None skipped) at ``step`` in one batch (a parent run's counters as
        its trials end)."""
        self._log(run_id, metrics=self._new_points(run_id, self._metrics(values, step)))

    def _new_points(self, run_id: str, points: list[Metric]) -> list[Metric]:
        """``points`` less those this sink already sent with the same value at the same step."""
        new = [p for p in points if self._points.get((run_id, p.key, p.step)) != p.value]
        self._points.update({(run_id, p.key, p.step): p.value for p in new})
        return new

    def _stored_through(self, run_id: str) -> int:
        """The last epoch step the store holds for ``run_id`` (-1 for none): every epoch logs
        :data:`bench.metrics.EPOCH`, so that one metric's history says which steps are held."""
        from bench.metrics import EPOCH  # this module names no metric otherwise

        history = self.client.get_metric_history(run_id, EPOCH)
        return max((int(point.step) for point in history), default=-1)

    def flush(self, run_id: str | None = None) -> None:
        """Send the epochs :meth:`log_epoch` holds back: ``run_id``'s, or every run's. Held-back
        epochs leave the buffer before the call, so a failing store raises once and they are not
        sent twice (``sharpbench sync-mlflow`` back-fills from Parquet)."""
        for held in [run_id] if run_id is not None else list(self._pending):
            pending = self._pending.pop(held, None)
            if pending is not None and (pending.metrics or pending.tags):
                self._last_sent[held] = time.monotonic()
                self._log(held, metrics=pending.metrics, tags=pending.tags)

    @property
    def pending_epochs(self) -> int:
        """How many epoch metrics (points) are held back, over all runs."""
        return sum(len(p.metrics) for p in self._pending.values())

    def finish_trial(
        self,
        run_id: str,
        status: TrialStatus,
        metrics: Mapping[str, float | None],
        error: str | None = None,
        step: int | None = None,
    ) -> None:
        """Log final ``metrics`` (None values skipped) and the status tags in one batch, then end
        the run: FINISHED for completed and stopped trials, FAILED for failed ones.

        Final metrics are logged at the last step :meth:`log_epoch` logged for this run (so they
        are the run's latest values in the UI), step 0 when that is unknown, or at ``step``, in the
        same batch as the run's held-back epochs. A failed trial gets
        the tag ``sharpbench.error`` with ``error`` (or "unknown error"), truncated to MLflow's limit.
        """
        status = TrialStatus(status)
        tags = trial_end_tags(status, error)
        at = self._last_step.get(run_id, 0) if step is None else step
        held = self._pending.pop(run_id, None) or _PendingEpochs()
        # The held-back epochs and the final figures in one batch.
        self._log(run_id, metrics=[*held.metrics, *self._metrics(metrics, at)], tags={**held.tags, **tags})
        self.client.set_terminated(run_id, status=RUN_STATUS[status])

    def running_trial_runs(self, parent_run_ids: Iterable[str]) -> dict[str, str]:
        """Trial key → run id of the trial runs under ``parent_run_ids`` that are still RUNNING
        (after an interrupted run: the trials that were running, and those whose end MLflow had
        not received yet)."""
        running = {}
        for parent in parent_run_ids:
            for run in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and attributes.status = 'RUNNING'",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=SEARCH_MAX_RESULTS_DEFAULT,
            ):
                running[run.data.tags.get(TAG_TRIAL_KEY, "")] = run.info.run_id
        return running

    def abandon(self, run_id: str) -> None:
        """End a trial run as KILLED, tagged ``sharpbench.status = abandoned``, and delete it (MLflow's
        soft delete: ``mlflow.MlflowClient().restore_run`` brings it back): a trial of an
        interrupted run that nothing continues (a resumed run issued its config again as a new
        trial, with a run of its own). Left alone it would read RUNNING forever, and its parent
        would list more trials than the method has."""
        self.client.set_tag(run_id, TAG_STATUS, STATUS_ABANDONED)
        self.client.set_terminated(run_id, status=ABANDONED_RUN_STATUS)
        self.client.delete_run(run_id)

    def finish_parent(
        self,
        run_id: str,
        metrics: Mapping[str, float | None],
        tags: Mapping[str, str] | None = None,
        standing: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """Log the search's summary ``metrics`` (None skipped, at ``step``) and ``tags`` in one
        batch, the method's leaderboard ``standing`` (JSON-serializable) as ``standing.json``,
        and end the run as FINISHED."""
        self._log(run_id, metrics=self._new_points(run_id, self._metrics(metrics, step)), tags=tags)
        if standing is not None and not self.artifacts_elsewhere:
            self.client.log_dict(run_id, dict(standing), STANDING_ARTIFACT)
        self.client.set_terminated(run_id, status=PARENT_FINISHED)

    def log_parent_artifacts(self, parent_run_id: str, files: Mapping[str, str | os.PathLike[str]]) -> None:
        """Attach files to a run (e.g. a parent run's report figures): ``{artifact name: local file}``.

        The name is the artifact's path inside the run (``"figures/accuracy.png"``); a file whose
        own name differs is logged under the given one. Raises FileNotFoundError for a missing
        file and ValueError for an absolute name or one containing ``..``.
        """
        targets = {name: (_artifact_path(name), Path(local)) for name, local in files.items()}
        for name, (_, local) in targets.items():
            if not local.is_file():
                raise FileNotFoundError(f"artifact {name!r}: no file at {local}")
        if self.artifacts_elsewhere:
            return
        for artifact, local in targets.values():
            folder = None if str(artifact.parent) == "." else str(artifact.parent)
            if local.name == artifact.name:
                self.client.log_artifact(parent_run_id, str(local), artifact_path=folder)
                continue
            with tempfile.TemporaryDirectory() as staging:  # log_artifact keeps the file's own name
                renamed = Path(staging) / artifact.name
                shutil.copyfile(local, renamed)
                self.client.log_artifact(parent_run_id, str(renamed), artifact_path=folder)

    # ---------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """JSON-serializable state: search → parent run, trial key → run, last logged steps."""
        return {
            "version": _STATE_VERSION,
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parents": dict(self._parents),
            "trials": dict(self._trials),
            "last_step": dict(self._last_step),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Merge a :meth:`state` into this sink (entries in ``state`` win)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported MlflowSink state version {state.get('version')!r}")
        self._parents.update(state.get("parents", {}))
        self._trials.update(state.get("trials", {}))
        self._last_step.update({k: int(v) for k, v in state.get("last_step", {}).items()})


__all__ = [
    "BOUNDED_HTTP_ENV",
    "RUN_STATUS",
    "MlflowSink",
    "RunSource",
    "default_tracking_uri",
    "normalize_tracking_uri",
    "param_value",
    "truncate",
]
