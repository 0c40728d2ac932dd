"""The leaderboard row: one trial, one explicit and versioned Parquet schema.

Parquet readers take the schema from the first file they open, so a column added later silently
disappears and an int/string clash fails to merge. Every batch is therefore written with
:data:`SCHEMA`; a change of columns bumps :data:`SCHEMA_VERSION`. Flatness columns exist from
version 1 on and are null when flatness was not measured. Version 2 added the selection and
search provenance columns (``search_metric``, ``sampler``, ``budget``, ``selected_from_run_id``),
the eigenvalue's iterations and ``converged`` flag and the trace's probe count, all null in
version-1 files. Version 3 added ``precision`` (the precision training used, ``auto`` resolved),
null in older files. Version 4 added ``node`` (the Ray node id a trial ran on) and
``started_at`` (when its first attempt started), null in older files. Version 5 added, all null
in older files: ``failure_class`` (why a failed trial failed: ``diverged``, ``oom``, ``infra``
or ``error``, see :class:`FailureClass`; null for trials that did not fail); ``compile_s``
(seconds of one-time warm-up and compilation spent before the trial's clock started, kept out
of ``wall_seconds``); ``suggestion_kind`` (how a search trial's config was drawn: ``default``,
the enqueued paper default, the first trial; ``startup``, drawn without a model: the startup
phase of TPE, GP or CMA-ES, or any draw of the random and QMC samplers; ``model``, drawn from the
sampler's model; null for final rows and for methods with nothing to search). Version 6 added
``evaluated_weights``: the weights the row's validation, test and flatness figures come from,
``trained`` or the average of a ``<method>+swa``/``+ema`` method (``swa``, ``ema``); null in older
files, whose weights were all the trained ones. Version 7 added ``adaptive_sharpness`` (worst-case
adaptive sharpness, :func:`bench.measure.flatness.adaptive_sharpness`), null in older files.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import pyarrow as pa

from bench import metrics
from bench.failures import FailureClass  # noqa: F401  (a row column's values; re-exported)

SCHEMA_VERSION = 7

#: Hive partition columns of the dataset, in directory order.
PARTITION_COLUMNS = ("benchmark", "regularizer")


class TrialStatus(str, Enum):
    COMPLETED = "completed"  # trained all planned epochs
    STOPPED = "stopped"  # stopped early by ASHA; its numbers are from fewer epochs
    FAILED = "failed"  # raised; ``error`` holds the reason


class Phase(str, Enum):
    SEARCH = "search"  # one trial of the tuning search
    FINAL = "final"  # the best config re-run with another training seed


class SuggestionKind(str, Enum):
    """How a search trial's config was drawn (column ``suggestion_kind``)."""

    DEFAULT = "default"  # the enqueued paper default: each study's first trial
    STARTUP = "startup"  # no model: a model-based sampler's startup draw, or a random/QMC draw
    MODEL = "model"  # from the sampler's model (TPE, GP, CMA-ES after their startup trials)


# The row's columns, in order: who the trial is and what it ran; then one column per metric of
# ``bench.metrics.ROW_METRICS`` (declared there, with unit and type); then where it ran.
_IDENTITY: tuple[tuple[str, str], ...] = (
    ("run_id", "str"),  # unique: "<search name>/<trial id>"
    ("benchmark", "str"),
    ("regularizer", "str"),
    ("phase", "str"),
    ("status", "str"),
    ("error", "str | None"),
    ("failure_class", "str | None"),  # FailureClass value of a failed trial; null otherwise
    ("dataset", "str"),
    ("model", "str"),
    ("seed", "int"),
    ("search_seed", "int"),
    ("search_metric", "str | None"),  # the metric that chose "best" in this trial's search (bench.selection)
    ("sampler", "str | None"),  # JSON: the Optuna sampler's name and settings; null when nothing was searched
    ("suggestion_kind", "str | None"),  # search rows: default, startup or model (bench.search.space)
    ("budget", "str | None"),  # JSON: how the equal budget was counted ("trials" or "passes") and what it gave
    ("selected_from_run_id", "str | None"),  # final rows: the run_id of the search trial they re-run
    ("regularizer_hparams", "str"),  # JSON object, sorted keys
    ("training_hparams", "str"),  # JSON object of the effective training recipe
    ("epochs_planned", "int"),
)
_PROVENANCE: tuple[tuple[str, str], ...] = (
    ("device", "str"),
    ("hardware", "str"),
    ("precision", "str | None"),  # as used: float32, bfloat16 or float64; null when the trial never reported
    ("evaluated_weights", "str | None"),  # trained, swa or ema; null when the trial never reported
    ("package_versions", "str"),  # JSON object name -> version
    ("git_commit", "str | None"),
    ("mlflow_run_id", "str | None"),
    ("node", "str | None"),  # Ray node id of the trial's last attempt; null outside Ray
    ("started_at", "dt.datetime | None"),  # first attempt's start; ``timestamp`` is when the row was written
    ("timestamp", "dt.datetime"),
)


def _metric_columns() -> list[tuple[str, str]]:
    return [(str(m.column), m.kind if m.required else f"{m.kind} | None") for m in metrics.ROW_METRICS]


def _to_record(self: Any) -> dict[str, Any]:
    return dataclasses.asdict(self)


#: Everything recorded about one trial (a dataclass; field order is column order).
TrialRow = dataclasses.make_dataclass(
    "TrialRow",
    [
        *_IDENTITY,
        *_metric_columns(),
        *_PROVENANCE,
        ("schema_version", "int", dataclasses.field(default=SCHEMA_VERSION)),
    ],
    namespace={"to_record": _to_record, "__doc__": "Everything recorded about one trial. Field order is column order."},
)


_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "str | None": pa.string(),
    "int": pa.int64(),
    "int | None": pa.int64(),
    "bool | None": pa.bool_(),
    "float": pa.float64(),
    "float | None": pa.float64(),
    "dt.datetime": pa.timestamp("us", tz="UTC"),
    "dt.datetime | None": pa.timestamp("us", tz="UTC"),
}

#: Columns that must never be null.
REQUIRED_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialRow) if "None" not in str(f.type))

SCHEMA = pa.schema(
    [pa.field(f.name, _TYPES[str(f.type)], nullable="None" in str(f.type)) for f in dataclasses.fields(TrialRow)],
    metadata={"sharpbench_schema_version": str(SCHEMA_VERSION)},
)

#: The schema of files written before the partition columns moved into every file (the columns
#: then lived only in hive folder names); bench.results.parquet still reads and rewrites them.
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in PARTITION_COLUMNS], metadata=SCHEMA.metadata)
