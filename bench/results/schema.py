"""The leaderboard row: one trial, one explicit and versioned Parquet schema.

Parquet readers take the schema from the first file they open, so a column added later silently
disappears and an int/string clash fails to merge. Every batch is therefore written with
:data:`SCHEMA`; a change of columns bumps :data:`SCHEMA_VERSION`. Flatness columns exist from
version 1 on and are null when flatness was not measured. Version 2 added the selection and
search provenance columns (``search_metric``, ``sampler``, ``budget``, ``selected_from_run_id``),
the eigenvalue's iterations and ``converged`` flag and the trace's probe count, all null in
version-1 files. Version 3 added ``precision`` (the precision training used, ``auto`` resolved),
null in older files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3

#: Hive partition columns of the dataset, in directory order.
PARTITION_COLUMNS = ("benchmark", "regularizer")


class TrialStatus(str, Enum):
    COMPLETED = "completed"  # trained all planned epochs
    STOPPED = "stopped"  # stopped early by ASHA; its numbers are from fewer epochs
    FAILED = "failed"  # raised; ``error`` holds the reason


class Phase(str, Enum):
    SEARCH = "search"  # one trial of the tuning search
    FINAL = "final"  # the best config re-run with another training seed


@dataclass
class TrialRow:
    """Everything recorded about one trial. Field order is column order."""

    run_id: str  # unique: "<search name>/<trial id>"
    benchmark: str
    regularizer: str
    phase: str
    status: str
    error: str | None
    dataset: str
    model: str
    seed: int
    search_seed: int
    #: The metric that chose "best" in this trial's search (``bench.selection``), e.g. val_accuracy.
    search_metric: str | None
    sampler: str | None  # JSON: the Optuna sampler's name and settings; null when nothing was searched
    budget: str | None  # JSON: how the equal budget was counted ("trials" or "passes") and what it gave
    #: Final rows: the run_id of the search trial whose config they re-run.
    selected_from_run_id: str | None
    regularizer_hparams: str  # JSON object, sorted keys
    training_hparams: str  # JSON object of the effective training recipe
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    test_loss: float | None
    train_loss: float | None
    epochs_run: int
    epochs_planned: int
    forward_passes: int
    backward_passes: int
    wall_seconds: float
    hessian_top_eigenvalue: float | None
    hessian_eigen_iterations: int | None  # Hessian-vector products the eigenvalue used
    hessian_eigen_converged: bool | None  # False: stopped at the cap, short of its tolerance
    hessian_trace: float | None
    hessian_trace_stderr: float | None
    hessian_trace_probes: int | None
    epsilon_sharpness: float | None
    device: str
    hardware: str
    precision: str | None  # as used: float32, bfloat16 or float64; null when the trial never reported
    package_versions: str  # JSON object name -> version
    git_commit: str | None
    mlflow_run_id: str | None
    timestamp: dt.datetime
    schema_version: int = SCHEMA_VERSION

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "str | None": pa.string(),
    "int": pa.int64(),
    "int | None": pa.int64(),
    "bool | None": pa.bool_(),
    "float": pa.float64(),
    "float | None": pa.float64(),
    "dt.datetime": pa.timestamp("us", tz="UTC"),
}

#: Columns that must never be null.
REQUIRED_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialRow) if "None" not in str(f.type))

SCHEMA = pa.schema(
    [pa.field(f.name, _TYPES[str(f.type)], nullable="None" in str(f.type)) for f in dataclasses.fields(TrialRow)],
    metadata={"sharpbench_schema_version": str(SCHEMA_VERSION)},
)

#: The schema of the files on disk: the partition columns live in the directory names.
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in PARTITION_COLUMNS], metadata=SCHEMA.metadata)
