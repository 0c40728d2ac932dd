"""A finished trial, whatever its fate, turned into one leaderboard row."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from bench import metrics, provenance
from bench.results.schema import TrialRow, TrialStatus
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
    mlflow_run_id: str | None = None
    search_metric: str | None = None
    sampler: str | None = None  # JSON
    budget: str | None = None  # JSON
    selected_from_run_id: str | None = None


def _number(result: dict[str, Any], key: str) -> float | None:
    value = result.get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _integer(result: dict[str, Any], key: str) -> int | None:
    value = _number(result, key)
    return None if value is None else int(value)


def _flag(result: dict[str, Any], key: str) -> bool | None:
    """A flag reported as 1.0 / 0.0 (Tune and MLflow carry numbers)."""
    value = _number(result, key)
    return None if value is None else value != 0.0


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
        dataset=spec.dataset.name,
        model=spec.model.name,
        seed=spec.seed,
        search_seed=outcome.search_seed,
        search_metric=outcome.search_metric,
        sampler=outcome.sampler,
        budget=outcome.budget,
        selected_from_run_id=outcome.selected_from_run_id,
        regularizer_hparams=json.dumps(spec.regularizer_hparams, sort_keys=True),
        training_hparams=spec.training.model_dump_json(),
        val_accuracy=_number(result, metrics.VAL_ACCURACY),
        val_loss=_number(result, metrics.VAL_LOSS),
        test_accuracy=_number(result, metrics.TEST_ACCURACY),
        test_loss=_number(result, metrics.TEST_LOSS),
        train_loss=_number(result, metrics.TRAIN_LOSS),
        epochs_run=int(result.get(metrics.EPOCH, 0)),
        epochs_planned=spec.training.epochs,
        forward_passes=int(result.get(metrics.FORWARD_PASSES, 0)),
        backward_passes=int(result.get(metrics.BACKWARD_PASSES, 0)),
        wall_seconds=float(result.get(metrics.WALL_SECONDS, 0.0)),
        hessian_top_eigenvalue=_number(result, metrics.HESSIAN_TOP_EIGENVALUE),
        hessian_eigen_iterations=_integer(result, metrics.HESSIAN_EIGEN_ITERATIONS),
        hessian_eigen_converged=_flag(result, metrics.HESSIAN_EIGEN_CONVERGED),
        hessian_trace=_number(result, metrics.HESSIAN_TRACE),
        hessian_trace_stderr=_number(result, metrics.HESSIAN_TRACE_STDERR),
        hessian_trace_probes=_integer(result, metrics.HESSIAN_TRACE_PROBES),
        epsilon_sharpness=_number(result, metrics.EPSILON_SHARPNESS),
        device=str(result.get(metrics.DEVICE, "unknown")),
        hardware=str(result.get(metrics.HARDWARE, "unknown")),
        precision=None if result.get(metrics.PRECISION) is None else str(result[metrics.PRECISION]),
        package_versions=provenance.package_versions_json(),
        git_commit=provenance.git_commit(),
        mlflow_run_id=outcome.mlflow_run_id,
        timestamp=provenance.utc_now(),
    )
