"""One trial without Ray: :mod:`~bench.training.trainer` trains and evaluates, and
:mod:`~bench.training.averaging` keeps the SWA/EMA average of the weights when a method asks for one."""

from bench.training.trainer import (
    EVAL_BATCH_SIZE,
    Diverged,
    EpochResult,
    Trainer,
    TrialResult,
    TrialSpec,
    _lr_factor,
    run_trial,
)

__all__ = [
    "EVAL_BATCH_SIZE",
    "Diverged",
    "EpochResult",
    "Trainer",
    "TrialResult",
    "TrialSpec",
    "_lr_factor",
    "run_trial",
]
