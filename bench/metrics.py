"""Metric names, defined once: Ray Tune, ASHA, Optuna, MLflow and Parquet all key on them.

ASHA silently ignores a result without its metric key, so a typo here would disable early
stopping without an error; every module imports these constants instead of writing strings.
"""

from typing import Final

EPOCH: Final = "epoch"
TRAIN_LOSS: Final = "train_loss"
VAL_LOSS: Final = "val_loss"
VAL_ACCURACY: Final = "val_accuracy"
TEST_LOSS: Final = "test_loss"
TEST_ACCURACY: Final = "test_accuracy"
EPOCH_SECONDS: Final = "epoch_seconds"
LEARNING_RATE: Final = "learning_rate"
FORWARD_PASSES: Final = "forward_passes"
BACKWARD_PASSES: Final = "backward_passes"
WALL_SECONDS: Final = "wall_seconds"

# Flatness of the final minimum (bench.flatness).
HESSIAN_TOP_EIGENVALUE: Final = "hessian_top_eigenvalue"
#: Hessian-vector products power iteration used, and whether its tolerance was met (1.0 / 0.0).
HESSIAN_EIGEN_ITERATIONS: Final = "hessian_eigen_iterations"
HESSIAN_EIGEN_CONVERGED: Final = "hessian_eigen_converged"
HESSIAN_TRACE: Final = "hessian_trace"
HESSIAN_TRACE_STDERR: Final = "hessian_trace_stderr"
#: Hutchinson probes the trace estimate used (its stopping rule picks the number).
HESSIAN_TRACE_PROBES: Final = "hessian_trace_probes"
EPSILON_SHARPNESS: Final = "epsilon_sharpness"

#: Method-specific metrics reported by a regularizer are logged as ``reg/<name>``.
REGULARIZER_PREFIX: Final = "reg/"

#: Metrics the search may optimize, with their direction.
OBJECTIVES: Final = {VAL_ACCURACY: "max", VAL_LOSS: "min"}

# Text facts a trial reports with its metrics (not logged as MLflow metrics).
DEVICE: Final = "device"
HARDWARE: Final = "hardware"
#: The precision training used (``training.precision: auto`` resolved): float32, bfloat16 or float64.
PRECISION: Final = "precision"
TEXT_KEYS: Final = (DEVICE, HARDWARE, PRECISION)
EPOCHS_PLANNED: Final = "epochs_planned"


def ran_all_epochs(result: dict) -> bool:
    """Whether a reported result is a trial's last planned epoch (else it was stopped early)."""
    return EPOCH in result and EPOCHS_PLANNED in result and result[EPOCH] >= result[EPOCHS_PLANNED]
