"""Shared helpers for the results tests: a factory of complete, valid trial rows."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from bench.results.schema import Phase, TrialRow, TrialStatus

BASE_TIME = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
_counter = itertools.count()


def make_row(**overrides: Any) -> TrialRow:
    """A valid row with distinct values in every column; ``overrides`` replace fields."""
    n = next(_counter)
    fields: dict[str, Any] = dict(
        run_id=f"search-{n}/trial_{n:05d}",
        benchmark="digits-mlp",
        regularizer="sam",
        phase=Phase.SEARCH.value,
        status=TrialStatus.COMPLETED.value,
        error=None,
        dataset="digits",
        model="mlp",
        seed=100 + n,
        search_seed=7,
        search_metric="val_accuracy",
        sampler=json.dumps({"name": "tpe", "n_startup_trials": 2, "seed": 7}),
        suggestion_kind="model",
        budget=json.dumps({"kind": "trials", "trials": 6}),
        selected_from_run_id=None,
        regularizer_hparams=json.dumps({"rho": 0.05 + n / 1000}, sort_keys=True),
        training_hparams=json.dumps({"epochs": 10, "lr": 0.1}, sort_keys=True),
        val_accuracy=0.80 + (n % 10) / 100,
        val_loss=0.5 - (n % 10) / 100,
        test_accuracy=0.79 + (n % 7) / 100,
        test_loss=0.55,
        train_loss=0.3,
        epochs_run=10,
        epochs_planned=10,
        forward_passes=2000 + n,
        backward_passes=2000 + n,
        wall_seconds=12.5 + n,
        compile_s=None,
        hessian_top_eigenvalue=None,
        hessian_eigen_iterations=None,
        hessian_eigen_converged=None,
        hessian_trace=None,
        hessian_trace_stderr=None,
        hessian_trace_probes=None,
        epsilon_sharpness=None,
        adaptive_sharpness=None,
        device="cpu",
        hardware="test cpu (2 threads)",
        precision="float32",
        evaluated_weights="trained",
        package_versions=json.dumps({"torch": "2.14.1"}),
        git_commit="abc123",
        mlflow_run_id=None,
        node=None,
        started_at=None,
        timestamp=BASE_TIME + dt.timedelta(seconds=n),
    )
    fields.setdefault("failure_class", None)
    fields.update(overrides)
    if fields["status"] == "failed" and fields["failure_class"] is None:
        fields["failure_class"] = "error"
    return TrialRow(**fields)


@pytest.fixture
def row_factory() -> Callable[..., TrialRow]:
    return make_row
