"""Metrics, declared once: Ray Tune, ASHA, Optuna, MLflow, Parquet and the leaderboard key on them.

Each :class:`Metric` says what it measures, its unit, its type, and where it goes:

* every declared metric is a key of the trial's Tune report and is logged to MLflow per epoch
  (:data:`REPORTED`; Tune's own bookkeeping keys are not);
* ``column``: the Parquet row column that keeps its value at the trial's last report
  (:data:`ROW_METRICS`; ``bench.results.schema`` builds those columns from here);
* ``leaderboard``: averaged over the chosen rows in the leaderboard (:data:`FLATNESS_COLUMNS`).

A new metric is one :func:`_declare` line here plus the code that computes it. ASHA silently
ignores a result without its metric key, so a typo in a name would disable early stopping
without an error: every module imports these constants instead of writing strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

Kind = Literal["float", "int", "bool"]


@dataclass(frozen=True)
class Metric:
    """One reported figure. Values travel as floats (Tune and MLflow take numbers; a bool as
    1.0/0.0); ``kind`` is the type of its Parquet column."""

    name: str
    unit: str
    description: str
    kind: Kind = "float"
    #: Parquet column of the value at the last report: None for per-epoch-only metrics.
    column: str | None = None
    #: A column that is never null (0 when the trial reported nothing).
    required: bool = False
    #: Averaged over the chosen rows and shown by the leaderboard.
    leaderboard: bool = False
    #: The values it can take, (lower, upper); intervals of its mean are cut at them. None: unbounded.
    bounds: tuple[float, float] | None = None

    def row_value(self, result: dict[str, Any]) -> float | int | bool | None:
        """The column value from a reported result: finite numbers only, else None (or 0 when
        required), cast to ``kind``."""
        value = result.get(self.name)
        number = None if value is None else float(value)
        if number is not None and not math.isfinite(number):
            number = None
        if number is None:
            return (0 if self.kind == "int" else 0.0) if self.required else None
        if self.kind == "int":
            return int(number)
        if self.kind == "bool":
            return number != 0.0
        return number


#: Every declared metric, by name, in declaration order (which is column order).
METRICS: dict[str, Metric] = {}


def _declare(name: str, unit: str, description: str, **where: Any) -> str:
    if name in METRICS:
        raise ValueError(f"metric {name!r} declared twice")
    METRICS[name] = Metric(name, unit, description, **where)
    return name


#: An accuracy is a fraction of examples.
FRACTION: Final = (0.0, 1.0)
VAL_ACCURACY: Final = _declare(
    "val_accuracy", "fraction", "accuracy on the validation split", column="val_accuracy", bounds=FRACTION
)
VAL_LOSS: Final = _declare("val_loss", "nats", "mean cross-entropy on the validation split", column="val_loss")
TEST_ACCURACY: Final = _declare(
    "test_accuracy", "fraction", "accuracy on the test split (last epoch only)", column="test_accuracy", bounds=FRACTION
)
TEST_LOSS: Final = _declare(
    "test_loss", "nats", "mean cross-entropy on the test split (last epoch only)", column="test_loss"
)
TRAIN_LOSS: Final = _declare("train_loss", "nats", "mean clean training loss over the epoch", column="train_loss")
EPOCH: Final = _declare(
    "epoch", "epochs", "epochs trained so far (1-based)", kind="int", column="epochs_run", required=True
)
FORWARD_PASSES: Final = _declare(
    "forward_passes", "passes", "forward passes so far", kind="int", column="forward_passes", required=True
)
BACKWARD_PASSES: Final = _declare(
    "backward_passes", "passes", "backward passes so far", kind="int", column="backward_passes", required=True
)
WALL_SECONDS: Final = _declare(
    "wall_seconds", "s", "the trial's wall time so far, across retries", column="wall_seconds", required=True
)
#: Reported once per trial attempt, measured before its clock starts: never part of WALL_SECONDS.
COMPILE_SECONDS: Final = _declare(
    "compile_s", "s", "warm-up/compile (several workers: their start too) before the trial's clock", column="compile_s"
)
EPOCH_SECONDS: Final = _declare("epoch_seconds", "s", "wall time of the last epoch")
LEARNING_RATE: Final = _declare("learning_rate", "1", "learning rate at the end of the epoch")
# Flatness of the final minimum (bench.measure.flatness).
HESSIAN_TOP_EIGENVALUE: Final = _declare(
    "hessian_top_eigenvalue",
    "loss/weight²",
    "top Hessian eigenvalue (Lanczos)",
    column="hessian_top_eigenvalue",
    leaderboard=True,
)
HESSIAN_EIGEN_ITERATIONS: Final = _declare(
    "hessian_eigen_iterations",
    "HVPs",
    "Hessian-vector products the eigenvalue used",
    kind="int",
    column="hessian_eigen_iterations",
)
HESSIAN_EIGEN_CONVERGED: Final = _declare(
    "hessian_eigen_converged",
    "flag",
    "whether the eigenvalue met its tolerance (else: stopped at the cap)",
    kind="bool",
    column="hessian_eigen_converged",
)
HESSIAN_TRACE: Final = _declare(
    "hessian_trace",
    "loss/weight²",
    "Hessian trace (Hutchinson or Hutch++: flatness.trace_estimator)",
    column="hessian_trace",
    leaderboard=True,
)
HESSIAN_TRACE_STDERR: Final = _declare(
    "hessian_trace_stderr", "loss/weight²", "standard error of the trace estimate", column="hessian_trace_stderr"
)
HESSIAN_TRACE_PROBES: Final = _declare(
    "hessian_trace_probes",
    "HVPs",
    "Hessian-vector products the trace used (Hutchinson: its probes; Hutch++: 2 × sketch + residual probes)",
    kind="int",
    column="hessian_trace_probes",
)
EPSILON_SHARPNESS: Final = _declare(
    "epsilon_sharpness",
    "nats",
    "largest loss increase in an L2 ball (Keskar et al. 2017)",
    column="epsilon_sharpness",
    leaderboard=True,
)

ADAPTIVE_SHARPNESS: Final = _declare(
    "adaptive_sharpness",
    "nats",
    "largest loss increase with each weight moved relative to its size (Andriushchenko et al. 2023)",
    column="adaptive_sharpness",
    leaderboard=True,
)

#: Method-specific metrics reported by a regularizer are logged as ``reg/<name>``.
REGULARIZER_PREFIX: Final = "reg/"

#: Metrics the search may optimize, with their direction.
OBJECTIVES: Final = {VAL_ACCURACY: "max", VAL_LOSS: "min"}

#: What goes to MLflow from a trial's report: the declared metrics and the regularizer's own.
REPORTED: Final = frozenset(METRICS)

#: Metrics kept in the Parquet row, in column order.
ROW_METRICS: Final = tuple(m for m in METRICS.values() if m.column is not None)

#: Flatness figures the leaderboard averages over the chosen rows.
FLATNESS_COLUMNS: Final = tuple(m.column for m in METRICS.values() if m.leaderboard)

# Text facts a trial reports with its metrics (not logged as MLflow metrics).
DEVICE: Final = "device"
HARDWARE: Final = "hardware"
#: The precision training used (``training.precision: auto`` resolved): float32, bfloat16 or float64.
PRECISION: Final = "precision"
#: The weights validation, test and flatness saw: ``trained``, or ``swa``/``ema`` (regularizers.averaging).
EVALUATED_WEIGHTS: Final = "evaluated_weights"
#: The Ray node the trial ran on (its last attempt), and when its first attempt started (Unix seconds).
NODE: Final = "node"
STARTED_AT: Final = "started_at"
#: A trial that ended itself as failed (it diverged) says so in its last report, without raising
#: (Tune would retry it): the row's ``error`` text and its ``failure_class`` (FailureClass value).
FAILURE: Final = "failure"
FAILURE_CLASS: Final = "failure_class"
TEXT_KEYS: Final = (DEVICE, HARDWARE, PRECISION, EVALUATED_WEIGHTS, NODE, FAILURE, FAILURE_CLASS)
EPOCHS_PLANNED: Final = "epochs_planned"
#: A report that stands for several epochs (``bench.search.reporting``) carries the epochs before
#: its own here: a list of their reported metrics (with :data:`EPOCH`), oldest first.
EARLIER_EPOCHS: Final = "earlier_epochs"


def is_reported(key: str) -> bool:
    """Our metrics only: Tune adds its own bookkeeping keys (time_this_iter_s, pid, ...)."""
    return key in REPORTED or key.startswith(REGULARIZER_PREFIX)


def ran_all_epochs(result: dict) -> bool:
    """Whether a reported result is a trial's last planned epoch (else it was stopped early)."""
    return EPOCH in result and EPOCHS_PLANNED in result and result[EPOCH] >= result[EPOCHS_PLANNED]


def batched(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for consecutive epochs' ``reports`` (oldest first): the newest one, with the
    reported metrics of the others under :data:`EARLIER_EPOCHS` (absent for a single epoch).
    Raises ValueError for an empty list."""
    if not reports:
        raise ValueError("no epoch to report")
    report = dict(reports[-1])
    if len(reports) > 1:
        report[EARLIER_EPOCHS] = [{key: value for key, value in r.items() if is_reported(key)} for r in reports[:-1]]
    return report


def epochs_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every epoch a report stands for, oldest first: its :data:`EARLIER_EPOCHS`, then itself
    (the inverse of :func:`batched`, up to unreported keys of the earlier epochs)."""
    return [*result.get(EARLIER_EPOCHS, ()), result]
