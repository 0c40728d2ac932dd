"""``sharpbench sync-mlflow``: back-fill MLflow, the mirror, from Parquet, the record.

After a tracking-store outage (:mod:`bench.results.mlflow_mirror`) a run's rows are all in
Parquet while MLflow lacks trial runs, or holds them RUNNING without their final values. For
every row :func:`sync_to_mlflow` makes sure its trial run exists under its method's parent run
(keyed by :meth:`bench.plan.MethodPlan.parent_key`, the run instance of the folder's run record),
with the row's params, final metrics at step = epochs run (the per-epoch history is not in
Parquet), status and tags: the writer is the live run's own (:class:`bench.results.sinks.MlflowTrialSink`,
names from :mod:`bench.results.vocabulary`). Runs are found by their trial-key tag (or the row's
``mlflow_run_id``), so a second sync creates and changes nothing. Do not sync a folder while a
run writes into it: its RUNNING runs would be closed.

This orchestration sits above the record (it reads run records and plans, and the leaderboard
for the parents' standing); :mod:`bench.results` keeps the writer alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import standing
from bench.failures import first_line
from bench.plan import plan_methods
from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, normalize_tracking_uri
from bench.results.parquet import no_results_folder, no_rows, read_rows
from bench.results.rows import row_of
from bench.results.schema import Phase, TrialRow
from bench.results.sinks import MlflowTrialSink, ParentEnd
from bench.results.vocabulary import ParentRun, parent_finish, parent_params
from bench.run_record import RunRecord, load_records


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


def parent_of(record: RunRecord | None, row: TrialRow) -> ParentRun:
    """The parent run of ``row``'s method × phase: keyed by the run record's instance, or by the
    search name alone when the folder has no record of the run (then created without params)."""
    phase = Phase(row.phase)
    plan = None
    if record is not None:
        plan = next((p for p in plan_methods(record.config) if p.regularizer == row.regularizer), None)
    if plan is None or record is None:
        return ParentRun(row.run_id.rsplit("/", 1)[0], row.benchmark, row.regularizer, phase, {}, None)
    return ParentRun(
        key=plan.parent_key(phase.value, record.instance),
        benchmark=row.benchmark,
        regularizer=row.regularizer,
        phase=phase,
        params=parent_params(record.config, plan.described_space, plan.fixed),
        config=record.config.model_dump(mode="json"),
    )


def sync_to_mlflow(results_dir: Path, tracking_uri: str | None = None) -> SyncSummary:
    """Back-fill the MLflow store from the Parquet rows of ``results_dir`` (see module doc).

    ``tracking_uri``: default, per benchmark, the run record's ``tracking_uri``, else the SQLite
    store inside ``results_dir``. Raises :class:`SyncError` before writing anything when the
    folder is missing, has no rows or a store cannot be opened; MLflow's own errors after that
    propagate (a rerun picks up where it stopped: sync is idempotent).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SyncError(no_results_folder(results_dir))
    rows = [row_of(record) for record in read_rows(results_dir).to_pylist()]
    if not rows:
        raise SyncError(no_rows(results_dir))
    records: dict[str, RunRecord] = load_records(results_dir)
    sinks: dict[str, MlflowTrialSink] = {}
    for benchmark in sorted({row.benchmark for row in rows}):
        record = records.get(benchmark)
        uri = normalize_tracking_uri(
            tracking_uri or (record.config.tracking_uri if record else None) or default_tracking_uri(results_dir)
        )
        try:
            sinks[benchmark] = MlflowTrialSink(MlflowSink(uri, experiment_name=benchmark))
        except Exception as error:  # MLflow raises many types here; all mean "this URI does not work"
            raise SyncError(f"cannot use MLflow tracking URI {uri}: {first_line(error)}") from None

    counts: Counter[str] = Counter()
    #: (benchmark, method, phase) -> (its parent run, whether to finish it)
    parents: dict[tuple[str, str, str], tuple[ParentRun, bool]] = {}
    for row in sorted(rows, key=lambda r: r.run_id):
        sink = sinks[row.benchmark]
        where = (row.benchmark, row.regularizer, row.phase)
        if where not in parents:
            parents[where] = _parent(sink, parent_of(records.get(row.benchmark), row), counts)
        counts[sink.backfill(row, lambda p=parents[where][0], s=sink: s.parent(p)).value] += 1

    for (benchmark, method, phase), (parent, to_finish) in parents.items():
        if to_finish:
            mine = [r for r in rows if (r.benchmark, r.regularizer, r.phase) == (benchmark, method, phase)]
            board = standing.method_board(results_dir, benchmark, method)
            summary = standing.summarize(board, Phase(phase)) if board is not None else None
            finish = parent_finish(mine, summary)
            sinks[benchmark].finish([ParentEnd(parent, finish)])
            counts["parents_finished"] += 1
    return SyncSummary(
        tracking_uris=tuple(dict.fromkeys(s.sink.tracking_uri for s in sinks.values())),
        created=counts["created"],
        completed=counts["completed"],
        already_there=counts["already"],
        parents_created=counts["parents_created"],
        parents_finished=counts["parents_finished"],
    )


def _parent(sink: MlflowTrialSink, parent: ParentRun, counts: Counter[str]) -> tuple[ParentRun, bool]:
    """``parent``, created when the store lacks it, and whether to finish it (new, or RUNNING)."""
    found = sink.sink.find_parent_run(parent.key)
    if found is not None:
        sink.parent_run_ids[sink.parent_slot(parent.regularizer, parent.phase.value)] = found
        return parent, sink.parent_running(found)
    sink.parent(parent)
    counts["parents_created"] += 1
    return parent, True


__all__ = ["SyncError", "SyncSummary", "parent_of", "sync_to_mlflow"]
