"""``sharpbench sync-mlflow``: back-fill MLflow, the mirror, from Parquet, the record.

After a tracking-store outage (:mod:`bench.results.mlflow_mirror`) a run's rows are all in
Parquet while MLflow lacks trial runs, or holds them RUNNING without their final values. For
every row :func:`sync_to_mlflow` makes sure its trial run exists under its method's parent run
(keyed by :meth:`bench.plan.MethodPlan.parent_key`, the run instance of the folder's run record),
with the row's params, final metrics at step = epochs run (the per-epoch history is not in
Parquet), status and tags. Runs are found by their trial-key tag (or the row's ``mlflow_run_id``),
so a second sync creates and changes nothing. Do not sync a folder while a run writes into it:
its RUNNING runs would be closed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from bench import metrics
from bench.config import BenchmarkConfig
from bench.plan import MethodPlan, plan_methods
from bench.results import summary
from bench.results.mlflow_sink import (
    RUN_STATUS,
    TAG_DEVICE,
    TAG_HARDWARE,
    TAG_PHASE,
    TAG_PRECISION,
    TAG_REGULARIZER,
    TAG_STATUS,
    MlflowSink,
    default_tracking_uri,
    normalize_tracking_uri,
)
from bench.results.parquet import read_rows
from bench.results.schema import Phase, TrialStatus
from bench.run_record import RunRecord, load_records

#: What ``selected_from_run_id`` is tagged as on a final trial's run (as SinkCallback tags it).
TAG_SELECTED_FROM = "sharpbench.selected_from_run_id"


def parent_params(config: BenchmarkConfig, plan: MethodPlan) -> dict[str, str]:
    """The params of a method's parent run: dataset, model, budget, search seed, search space."""
    return {
        "dataset": config.dataset.name,
        "model": config.model.name,
        "trials_per_method": str(config.search.trials_per_method),
        "search_seed": str(config.search.seed),
        "search_space": json.dumps({p.key: p.domain.describe() for p in plan.params}),
        "fixed": json.dumps(plan.fixed, sort_keys=True),
    }


@dataclass(frozen=True)
class SyncSummary:
    """Counts of one sync: trial runs created, completed (found unfinished) and already there;
    parent runs created or finished."""

    tracking_uris: tuple[str, ...]
    created: int
    completed: int
    already_there: int
    parents_created: int
    parents_finished: int

    def line(self) -> str:
        return (
            f"sync-mlflow: {self.created} trial run(s) created, {self.completed} completed, "
            f"{self.already_there} already there; {self.parents_created} parent run(s) created, "
            f"{self.parents_finished} finished → {', '.join(self.tracking_uris)}"
        )


class SyncError(RuntimeError):
    """Sync could not start: a missing folder, no rows, an unusable tracking URI (one line)."""


def _trial_params(row: dict[str, Any]) -> dict[str, object]:
    # The same names SinkCallback gives them: regularizer.<name>, training.<name>, seed.
    params: dict[str, object] = {f"regularizer.{k}": v for k, v in json.loads(row["regularizer_hparams"]).items()}
    params.update({f"training.{k}": v for k, v in json.loads(row["training_hparams"]).items()})
    params["seed"] = row["seed"]
    return params


def _trial_tags(row: dict[str, Any]) -> dict[str, str]:
    tags = {TAG_PHASE: row["phase"], TAG_REGULARIZER: row["regularizer"]}
    if row.get("selected_from_run_id"):
        tags[TAG_SELECTED_FROM] = row["selected_from_run_id"]
    for column, tag in ((metrics.DEVICE, TAG_DEVICE), (metrics.PRECISION, TAG_PRECISION), (metrics.HARDWARE, TAG_HARDWARE)):
        if row.get(column) is not None:
            tags[tag] = str(row[column])
    return tags


def _final_metrics(row: dict[str, Any]) -> dict[str, float | None]:
    """Every row metric under its MLflow (Tune) key; bools as 0/1, nulls skipped by the sink."""
    return {m.name: None if row.get(str(m.column)) is None else float(row[str(m.column)]) for m in metrics.ROW_METRICS}


def _is_complete(sink: MlflowSink, run_id: str, status: TrialStatus) -> bool:
    run = sink.client.get_run(run_id)
    return run.info.status == RUN_STATUS[status] and run.data.tags.get(TAG_STATUS) == status.value


def _existing(sink: MlflowSink, row: dict[str, Any]) -> str | None:
    """The row's run in this store: its recorded ``mlflow_run_id`` if this experiment holds it
    (active), else the run tagged with its trial key."""
    recorded = row.get("mlflow_run_id")
    if recorded:
        try:
            run = sink.client.get_run(recorded)
        except MlflowException:  # another store's id (the run wrote elsewhere): look it up by tag
            run = None
        if run is not None and run.info.experiment_id == sink.experiment_id and run.info.lifecycle_stage == "active":
            return recorded
    return sink.find_trial_run(row["run_id"])


def finish_from_row(sink: MlflowSink, run_id: str, row: dict[str, Any]) -> None:
    """End trial run ``run_id`` as its Parquet ``row`` says: the row's tags, final metrics (at
    step = epochs run) and status. For a run left RUNNING although its trial ended (an MLflow
    outage, or the driver killed before MLflow received the end)."""
    sink._log(run_id, tags=_trial_tags(row))  # noqa: SLF001 - the sink's own batching
    sink.finish_trial(run_id, TrialStatus(row["status"]), _final_metrics(row), row.get("error"), step=int(row["epochs_run"]))


def sync_to_mlflow(results_dir: Path, tracking_uri: str | None = None) -> SyncSummary:
    """Back-fill the MLflow store from the Parquet rows of ``results_dir`` (see module doc).

    ``tracking_uri``: default, per benchmark, the run record's ``tracking_uri``, else the SQLite
    store inside ``results_dir``. Raises :class:`SyncError` before writing anything when the
    folder is missing, has no rows or a store cannot be opened; MLflow's own errors after that
    propagate (a rerun picks up where it stopped: sync is idempotent).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SyncError(f"{results_dir} is not a folder" if results_dir.exists() else f"results folder not found: {results_dir}")
    rows = read_rows(results_dir).to_pylist()
    if not rows:
        raise SyncError(f"no results: the Parquet dataset under {results_dir} is empty or missing")
    records: dict[str, RunRecord] = load_records(results_dir)
    sinks: dict[str, MlflowSink] = {}
    for benchmark in sorted({row["benchmark"] for row in rows}):
        record = records.get(benchmark)
        uri = normalize_tracking_uri(tracking_uri or (record.config.tracking_uri if record else None) or default_tracking_uri(results_dir))
        try:
            sinks[benchmark] = MlflowSink(uri, experiment_name=benchmark)
        except Exception as error:  # MLflow raises many types here; all mean "this URI does not work"
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SyncError(f"cannot use MLflow tracking URI {uri}: {first}") from None

    counts: Counter[str] = Counter()
    parents: dict[tuple[str, str, str], tuple[str, bool]] = {}  # (benchmark, method, phase) -> (run id, to finish)
    for row in sorted(rows, key=lambda r: r["run_id"]):
        benchmark, method, phase = row["benchmark"], row["regularizer"], row["phase"]
        sink = sinks[benchmark]
        record = records.get(benchmark)
        where = (benchmark, method, phase)
        if where not in parents:
            parents[where] = _parent(sink, record, row, counts)
        status = TrialStatus(row["status"])
        run_id = _existing(sink, row)
        if run_id is not None and _is_complete(sink, run_id, status):
            counts["already"] += 1
            continue
        if run_id is None:
            trial_id = row["run_id"].rsplit("/", 1)[-1]
            run_id = sink.trial_run(parents[where][0], row["run_id"], f"{method}-{trial_id}", _trial_params(row), _trial_tags(row))
            counts["created"] += 1
            sink.finish_trial(run_id, status, _final_metrics(row), row.get("error"), step=int(row["epochs_run"]))
        else:  # left RUNNING by an outage: add what it lacks
            finish_from_row(sink, run_id, row)
            counts["completed"] += 1

    for (benchmark, method, phase), (parent_id, to_finish) in parents.items():
        if to_finish:
            _finish_parent(sinks[benchmark], parent_id, results_dir, benchmark, method, Phase(phase), rows)
            counts["parents_finished"] += 1
    return SyncSummary(
        tracking_uris=tuple(dict.fromkeys(s.tracking_uri for s in sinks.values())),
        created=counts["created"],
        completed=counts["completed"],
        already_there=counts["already"],
        parents_created=counts["parents_created"],
        parents_finished=counts["parents_finished"],
    )


def _parent(sink: MlflowSink, record: RunRecord | None, row: dict[str, Any], counts: Counter[str]) -> tuple[str, bool]:
    """The parent run of ``row``'s search (created when missing), and whether to finish it."""
    search_name = row["run_id"].rsplit("/", 1)[0]
    plan = None
    if record is not None:
        plan = next((p for p in plan_methods(record.config) if p.regularizer == row["regularizer"]), None)
    key = plan.parent_key(row["phase"], record.instance) if plan is not None and record is not None else search_name
    found = sink.find_parent_run(key)
    if found is not None:
        running = sink.client.get_run(found).info.status == RunStatus.to_string(RunStatus.RUNNING)
        return found, running
    params = parent_params(record.config, plan) if plan is not None and record is not None else {}
    config = record.config.model_dump(mode="json") if record is not None else None
    created = sink.parent_run(key, row["benchmark"], row["regularizer"], row["phase"], params=params, config=config)
    counts["parents_created"] += 1
    return created, True


def _finish_parent(
    sink: MlflowSink, run_id: str, results_dir: Path, benchmark: str, method: str, phase: Phase, rows: list[dict[str, Any]]
) -> None:
    """As the run's callback ends a parent: this phase's trial counts and the method's standing."""
    mine = [r for r in rows if r["benchmark"] == benchmark and r["regularizer"] == method and r["phase"] == phase.value]
    values: dict[str, float | None] = {f"trials_{s.value}": float(sum(r["status"] == s.value for r in mine)) for s in TrialStatus}
    board = summary.method_board(results_dir, benchmark, method)
    if board is None:
        sink.finish_parent(run_id, values)
        return
    parent = summary.summarize(board, phase)
    sink.finish_parent(run_id, {**values, **parent.metrics}, tags=parent.tags, standing=parent.board_json)


__all__ = ["SyncError", "SyncSummary", "parent_params", "sync_to_mlflow"]
