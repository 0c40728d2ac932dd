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

A sink is not thread-safe; use it from one thread (the driver's callback).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.results.schema import Phase, TrialStatus

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

#: Tag keys written by the sink.
TAG_ROLE = "sharpbench.role"  # "search" (parent) or "trial"
TAG_SEARCH_NAME = "sharpbench.search_name"
TAG_SEARCH_ID = "sharpbench.search_id"  # sha256 of the search name: the lookup key
TAG_TRIAL_KEY = "sharpbench.trial_key"
TAG_TRIAL_ID = "sharpbench.trial_id"  # sha256 of the trial key: the lookup key
TAG_BENCHMARK = "sharpbench.benchmark"
TAG_REGULARIZER = "sharpbench.regularizer"
TAG_PHASE = "sharpbench.phase"
TAG_STATUS = "sharpbench.status"  # a TrialStatus value; "stopped" runs are FINISHED in MLflow
TAG_ERROR = "sharpbench.error"

ROLE_SEARCH = "search"
ROLE_TRIAL = "trial"

#: MLflow run status for each trial status. An ASHA-stopped trial ended normally (it was not
#: killed by a user or a crash), so it is FINISHED; the ``sharpbench.status`` tag says "stopped".
RUN_STATUS: Mapping[TrialStatus, str] = {
    TrialStatus.COMPLETED: RunStatus.to_string(RunStatus.FINISHED),
    TrialStatus.STOPPED: RunStatus.to_string(RunStatus.FINISHED),
    TrialStatus.FAILED: RunStatus.to_string(RunStatus.FAILED),
}

_STATE_VERSION = 1
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
    return "sqlite:///" + str(Path(results_dir).expanduser().resolve() / TRACKING_DB_NAME)


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
        rest = uri[len("sqlite:///") :]
        path, sep, query = rest.partition("?")
        if path in ("", ":memory:") or path.startswith("file:"):
            return uri
        absolute = Path(path).expanduser()
        if not absolute.is_absolute():
            absolute = Path.cwd() / absolute
        return "sqlite:///" + os.path.normpath(absolute) + sep + query
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
# The sink
# --------------------------------------------------------------------------------------------


class MlflowSink:
    """Parent run per search, nested run per trial, in experiment ``experiment_name``.

    ``tracking_uri`` is normalized with :func:`normalize_tracking_uri`; for a SQLite store the
    database's folder is created and new experiments keep artifacts in ``<that folder>/mlartifacts``.
    The experiment is created (or restored, if deleted) on construction.
    """

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = normalize_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        artifact_location: str | None = None
        if self.tracking_uri.startswith("sqlite:////"):
            db = Path(self.tracking_uri[len("sqlite:///") :].partition("?")[0])
            db.parent.mkdir(parents=True, exist_ok=True)
            artifact_location = (db.parent / "mlartifacts").as_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment(experiment_name, artifact_location)
        self._parents: dict[str, str] = {}  # search name -> run id
        self._trials: dict[str, str] = {}  # trial key -> run id
        self._last_step: dict[str, int] = {}  # run id -> last step logged by log_epoch

    # ---------------------------------------------------------------- experiment / lookups

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # created concurrently by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

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
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
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
    ) -> str:
        """The run of search ``search_name``: created once, reused (and set RUNNING) afterwards.

        ``params`` are logged on creation; on reuse only params the run lacks are added (MLflow
        params are immutable; a changed value is kept as first logged, with a warning).
        """
        tags = {
            TAG_ROLE: ROLE_SEARCH,
            TAG_SEARCH_NAME: search_name,
            TAG_BENCHMARK: benchmark,
            TAG_REGULARIZER: regularizer,
            TAG_PHASE: Phase(phase).value,
        }
        return self._get_or_create(self._parents, TAG_SEARCH_ID, search_name, search_name, params, tags)

    def trial_run(
        self,
        parent_run_id: str,
        trial_key: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
    ) -> str:
        """The run of trial ``trial_key`` (unique across searches, e.g. ``"<search>/<trial id>"``),
        nested under ``parent_run_id``.

        Looked up in the in-memory map, then by tag in the experiment; created only when neither
        knows it. A found run is set RUNNING again, so a resumed trial logs into its old run.
        """
        all_tags = {
            **{str(k): str(v) for k, v in tags.items()},
            TAG_ROLE: ROLE_TRIAL,
            TAG_TRIAL_KEY: trial_key,
            MLFLOW_PARENT_RUN_ID: parent_run_id,
        }
        return self._get_or_create(self._trials, TAG_TRIAL_ID, trial_key, run_name, params, all_tags)

    def _get_or_create(
        self,
        known: dict[str, str],
        id_tag: str,
        key: str,
        run_name: str,
        params: Mapping[str, object],
        tags: Mapping[str, str],
    ) -> str:
        """The run identified by ``key``: from ``known``, else found by its ``id_tag`` digest, else created.

        A new run gets ``tags`` (plus the digest) and ``params``; a found one is set RUNNING again
        and only gets the params it lacks.
        """
        run_id = known.get(key) or self._find_run(id_tag, _digest(key), key)
        values = {k: param_value(v) for k, v in params.items()}
        if run_id is None:
            all_tags = {k: truncate(v, MAX_TAG_VAL_LENGTH) for k, v in {**tags, id_tag: _digest(key)}.items()}
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name).info.run_id
            self._log(run_id, params=values)
        else:
            self._log(run_id, params=self._missing_params(run_id, values))
        known[key] = run_id
        return run_id

    def _missing_params(self, run_id: str, values: Mapping[str, str]) -> dict[str, str]:
        logged = self._reopen(run_id)
        changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
        if changed:
            _log.warning("run %s keeps its first values of params %s (MLflow params are immutable)", run_id, changed)
        return {k: v for k, v in values.items() if k not in logged}

    def log_epoch(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """All of one epoch's metrics at ``step`` in one ``log_batch`` call (more than
        MLflow's 1000 metrics per batch would be split). A resumed trial that repeats epochs
        logs those steps again; MLflow keeps both points."""
        self._log(run_id, metrics=self._metrics(metrics, step))
        self._last_step[run_id] = max(step, self._last_step.get(run_id, step))

    def finish_trial(
        self,
        run_id: str,
        status: TrialStatus,
        metrics: Mapping[str, float | None],
        error: str | None = None,
    ) -> None:
        """Log final ``metrics`` (None values skipped) and the status tags in one batch, then end
        the run: FINISHED for completed and stopped trials, FAILED for failed ones.

        Final metrics are logged at the last step :meth:`log_epoch` logged for this run (so they
        are the run's latest values in the UI), step 0 when that is unknown. A failed trial gets
        the tag ``sharpbench.error`` with ``error`` (or "unknown error"), truncated to MLflow's limit.
        """
        status = TrialStatus(status)
        tags = {TAG_STATUS: status.value}
        if status is TrialStatus.FAILED:
            tags[TAG_ERROR] = error or "unknown error"
        elif error:
            tags[TAG_ERROR] = error
        self._log(run_id, metrics=self._metrics(metrics, self._last_step.get(run_id, 0)), tags=tags)
        self.client.set_terminated(run_id, status=RUN_STATUS[status])

    def finish_parent(self, run_id: str, metrics: Mapping[str, float | None]) -> None:
        """Log the search's summary ``metrics`` (None skipped) and end its run as FINISHED."""
        self._log(run_id, metrics=self._metrics(metrics, 0))
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

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
    "RUN_STATUS",
    "MlflowSink",
    "default_tracking_uri",
    "normalize_tracking_uri",
    "param_value",
    "truncate",
]
