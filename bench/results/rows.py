"""A finished trial, whatever its fate, turned into one leaderboard row."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from bench import metrics, provenance
from bench.results.schema import FailureClass, TrialRow, TrialStatus
from bench.training import TrialSpec


@dataclass
class TrialOutcome:
    """What the driver knows about a trial when it ends."""

    search_name: str
    trial_id: str
    phase: str
    status: TrialStatus
    spec: TrialSpec
    search_seed: int
    last_result: dict[str, Any]
    error: str | None = None
    #: Why a failed trial failed (None for a trial that did not fail).
    failure_class: FailureClass | None = None
    mlflow_run_id: str | None = None
    search_metric: str | None = None
    sampler: str | None = None  # JSON
    suggestion_kind: str | None = None  # search trials: default, startup or model
    budget: str | None = None  # JSON
    selected_from_run_id: str | None = None
    #: When the trial ended; None: now (the driver writes a trial's row as it ends).
    ended_at: dt.datetime | None = None


def build_row(outcome: TrialOutcome) -> TrialRow:
    result = outcome.last_result
    spec = outcome.spec
    return TrialRow(
        run_id=f"{outcome.search_name}/{outcome.trial_id}",
        benchmark=spec.benchmark,
        regularizer=spec.regularizer,
        phase=outcome.phase,
        status=outcome.status.value,
        error=outcome.error,
        failure_class=outcome.failure_class.value if outcome.failure_class is not None else None,
        dataset=spec.dataset.name,
        model=spec.model.name,
        seed=spec.seed,
        search_seed=outcome.search_seed,
        search_metric=outcome.search_metric,
        sampler=outcome.sampler,
        suggestion_kind=outcome.suggestion_kind,
        budget=outcome.budget,
        selected_from_run_id=outcome.selected_from_run_id,
        regularizer_hparams=json.dumps(spec.regularizer_hparams, sort_keys=True),
        training_hparams=spec.training.model_dump_json(),
        epochs_planned=spec.training.epochs,
        **{str(m.column): m.row_value(result) for m in metrics.ROW_METRICS},
        device=str(result.get(metrics.DEVICE, "unknown")),
        hardware=str(result.get(metrics.HARDWARE, "unknown")),
        precision=None if result.get(metrics.PRECISION) is None else str(result[metrics.PRECISION]),
        package_versions=provenance.package_versions_json(),
        git_commit=provenance.git_commit(),
        mlflow_run_id=outcome.mlflow_run_id,
        node=None if result.get(metrics.NODE) is None else str(result[metrics.NODE]),
        started_at=None if result.get(metrics.STARTED_AT) is None else dt.datetime.fromtimestamp(float(result[metrics.STARTED_AT]), dt.timezone.utc),
        timestamp=outcome.ended_at or provenance.utc_now(),
    )
