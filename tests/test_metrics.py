"""Metrics declared once: the Tune report keys, the Parquet columns, MLflow's filter and the
leaderboard's flatness columns all derive from bench.metrics, so a metric cannot be dropped by
forgetting one of them."""

from __future__ import annotations

import dataclasses
import math

import pyarrow as pa
import pytest

from bench import metrics
from bench.measure.flatness import FlatnessResult
from bench.results.schema import SCHEMA, TrialRow
from bench.training import EpochResult

_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}


def test_every_row_metric_is_a_typed_schema_column():
    for metric in metrics.ROW_METRICS:
        field = SCHEMA.field(metric.column)
        assert field.type == _ARROW[metric.kind], metric.name
        assert field.nullable is not metric.required, metric.name
    assert set(metrics.FLATNESS_COLUMNS) <= set(SCHEMA.names)
    assert set(metrics.OBJECTIVES) <= set(metrics.METRICS)
    # each column holds one metric
    columns = [m.column for m in metrics.ROW_METRICS]
    assert len(columns) == len(set(columns))
    assert [f.name for f in dataclasses.fields(TrialRow)] == SCHEMA.names


def _every_reported_key() -> set[str]:
    epoch = EpochResult(
        epoch=1,
        train_loss=0.5,
        val_loss=0.4,
        val_accuracy=0.9,
        learning_rate=0.1,
        epoch_seconds=1.0,
        forward_passes=10,
        backward_passes=10,
        regularizer_metrics={"grad_norm": 1.0},
        flatness=FlatnessResult(
            top_eigenvalue=2.0,
            eigen_iterations=7,
            eigen_converged=True,
            trace=3.0,
            trace_stderr=0.1,
            trace_probes=12,
            epsilon_sharpness=0.01,
            adaptive_sharpness=0.02,
        ).to_metrics(),
    )
    return set(epoch.to_metrics())


def test_everything_a_trial_reports_is_declared_and_reaches_mlflow():
    keys = _every_reported_key() | {metrics.TEST_ACCURACY, metrics.TEST_LOSS, metrics.WALL_SECONDS}
    undeclared = {k for k in keys if not metrics.is_reported(k)}
    assert not undeclared, f"reported but not declared in bench.metrics (would be dropped from MLflow): {undeclared}"
    assert not metrics.is_reported("time_this_iter_s") and not metrics.is_reported(metrics.DEVICE)


@pytest.mark.parametrize(
    ("kind", "required", "value", "expected"),
    [
        ("float", False, 0.25, 0.25),
        ("float", False, math.nan, None),
        ("float", False, math.inf, None),
        ("float", False, None, None),
        ("float", True, None, 0.0),
        ("int", True, 7.0, 7),
        ("int", True, None, 0),
        ("int", False, None, None),
        ("bool", False, 1.0, True),
        ("bool", False, 0.0, False),
        ("bool", False, None, None),
    ],
)
def test_row_value_casts_to_the_column_type(kind, required, value, expected):
    metric = metrics.Metric("m", "1", "test", kind=kind, column="m", required=required)
    got = metric.row_value({} if value is None else {"m": value})
    assert got == expected and type(got) is type(expected)


def test_declaring_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        metrics._declare(metrics.VAL_ACCURACY, "fraction", "again")
