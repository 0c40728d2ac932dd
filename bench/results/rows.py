"""A finished trial, whatever its fate, turned into one leaderboard row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bench import metrics, provenance
from bench.config import DataConfig, ModelConfig, TrainingConfig
from bench.results.schema import FailureClass, Phase, TrialRow, TrialStatus
from bench.results.vocabulary import TrialRun


class RowSpec(Protocol):
    """What a row takes from the trial's spec (:class:`bench.training.TrialSpec` is one): the
    record names the trial's inputs without depending on the code that trains it."""

    benchmark: str
    dataset: DataConfig
    model: ModelConfig
    training: TrainingConfig
    regularizer: str
    regularizer_hparams: dict[str, Any]
    seed: int


def regularizer_hparams_json(spec: RowSpec) -> str:
    return json.dumps(spec.regularizer_hparams, sort_keys=True)


def trial_run(
    spec: RowSpec,
    search_name: str,
    trial_id: str,
    phase: Phase,
    selected_from_run_id: str | None,
    ordinal: int | None = None,
) -> TrialRun:
    """The trial's MLflow identity as its row will state it, for a trial that has no row yet;
    ``ordinal``: its place among its method × phase's trials (its run's name)."""
    return TrialRun(
        key=f"{search_name}/{trial_id}",
        benchmark=spec.benchmark,
        regularizer=spec.regularizer,
        phase=phase,
        seed=spec.seed,
        regularizer_hparams=regularizer_hparams_json(spec),
        training_hparams=spec.training.model_dump_json(),
        selected_from_run_id=selected_from_run_id,
        ordinal=ordinal,
    )


_FIELDS = tuple(f.name for f in dataclasses.fields(TrialRow))


def row_of(record: Mapping[str, Any]) -> TrialRow:
    """A row read back from Parquet (a mapping of column → value) as a :class:`TrialRow`."""
    return TrialRow(**{name: record.get(name) for name in _FIELDS})


@dataclass
class TrialOutcome:
    """What the driver knows about a trial when it ends."""

    search_name: str
    trial_id: str
    phase: str
    status: TrialStatus
    spec: RowSpec
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
        regularizer_hparams=regularizer_hparams_json(spec),
        training_hparams=spec.training.model_dump_json(),
        epochs_planned=spec.training.epochs,
        **{str(m.column): m.row_value(result) for m in metrics.ROW_METRICS},
        device=str(result.get(metrics.DEVICE, "unknown")),
        hardware=str(result.get(metrics.HARDWARE, "unknown")),
        precision=None if result.get(metrics.PRECISION) is None else str(result[metrics.PRECISION]),
        evaluated_weights=None
        if result.get(metrics.EVALUATED_WEIGHTS) is None
        else str(result[metrics.EVALUATED_WEIGHTS]),
        package_versions=provenance.package_versions_json(),
        git_commit=provenance.git_commit(),
        mlflow_run_id=outcome.mlflow_run_id,
        node=None if result.get(metrics.NODE) is None else str(result[metrics.NODE]),
        started_at=None
        if result.get(metrics.STARTED_AT) is None
        else dt.datetime.fromtimestamp(float(result[metrics.STARTED_AT]), dt.timezone.utc),
        timestamp=outcome.ended_at or provenance.utc_now(),
    )
