"""How often Ray Tune saves its experiment state: every 2 s while that is cheap, less often as it grows.

At each save Tune writes its whole experiment state (every trial of the run, about 20 KB each,
ended trials included) and copies its driver folder to the storage path. Every 2 s keeps what a
kill -9 can lose small (a resumed run restarts what Tune had not saved), but the save's cost
grows with the trials run: writing the state took 0.37 s at 10,000 trials (190 MB), so a fixed
2-s period made the driver's cost per trial grow with the history (measured by
:mod:`bench.benchmarks.scale`). Tune's own ``"auto"`` period (19 × the last save's time: at most
5% of the time spent saving) never goes below 10 s; this one starts at 2 s and follows the same
rule above it.

Tune takes its period from ``TUNE_GLOBAL_CHECKPOINT_S`` only, so :func:`snapshots_following_cost`
hands Tune's controller a checkpoint manager with this rule while a benchmark runs (unless that
variable is set: then Tune's period it names); a test checks that the installed Ray still builds
its manager where this expects.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
from ray.tune.execution.tune_controller import TuneController

#: The period while a save is cheap (what a kill -9 loses of Tune's state, at most).
FLOOR_SECONDS = 2.0
#: Tune's own setting of the period (seconds, or ``auto``): set, it wins.
PERIOD_VARIABLE = "TUNE_GLOBAL_CHECKPOINT_S"
#: At most this share of the driver's time goes to saving Tune's state.
SHARE = 0.05


class CostFollowingSnapshots(_ExperimentCheckpointManager):
    """Tune's experiment-state saver with the period ``max(FLOOR_SECONDS, save time × (1/SHARE − 1))``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "checkpoint_period": "auto"})
        self._checkpoint_period = FLOOR_SECONDS

    def _update_auto_checkpoint_time(self, time_taken: float) -> None:
        self._checkpoint_period = max(FLOOR_SECONDS, time_taken * (1 / SHARE - 1))

    @property
    def period(self) -> float:
        return self._checkpoint_period


def _create(controller: TuneController) -> CostFollowingSnapshots:
    return CostFollowingSnapshots(
        storage=controller._storage,
        sync_every_n_trial_checkpoints=controller._trial_checkpoint_config.num_to_keep,
    )


@contextmanager
def snapshots_following_cost() -> Iterator[None]:
    """While in this block, Tune's controllers save their experiment state by this module's rule,
    unless ``TUNE_GLOBAL_CHECKPOINT_S`` names a period."""
    if os.environ.get(PERIOD_VARIABLE):
        yield
        return
    original = TuneController._create_checkpoint_manager
    TuneController._create_checkpoint_manager = _create
    try:
        yield
    finally:
        TuneController._create_checkpoint_manager = original
