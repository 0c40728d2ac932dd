"""Tune's experiment-state saves: every 2 s while cheap, at most 5% of the time as they grow; its
JSON result log only when asked (both: what Tune writes to the driver's folder at each save)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
from ray.train._internal.storage import StorageContext
from ray.tune import CheckpointConfig
from ray.tune.execution.tune_controller import TuneController

from bench.search.driver import TUNE_RESULT_LOG_VARIABLE, tune_result_log_asked
from bench.search.runtime import init_ray
from bench.search.snapshots import FLOOR_SECONDS, PERIOD_VARIABLE, CostFollowingSnapshots, snapshots_following_cost


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> StorageContext:
    """Ray's real storage context of an experiment (it needs a runtime for its staging folder)."""
    init_ray(None, num_cpus=1)
    try:
        yield StorageContext(storage_path=str(tmp_path_factory.mktemp("tune")), experiment_dir_name="exp")
    finally:
        ray.shutdown()


def _controller(storage: StorageContext) -> TuneController:
    controller = TuneController.__new__(TuneController)  # only what _create_checkpoint_manager reads
    controller._storage = storage
    controller._checkpoint_period = "auto"
    controller._trial_checkpoint_config = CheckpointConfig(num_to_keep=2)
    return controller


def test_tune_builds_our_saver_inside_the_block_and_its_own_outside(monkeypatch, storage):
    monkeypatch.delenv(PERIOD_VARIABLE, raising=False)
    with snapshots_following_cost():
        manager = _controller(storage)._create_checkpoint_manager()
    assert isinstance(manager, CostFollowingSnapshots) and manager.period == FLOOR_SECONDS
    assert manager._sync_every_n_trial_checkpoints == 2  # Tune's forced save per kept checkpoints stays
    outside = _controller(storage)._create_checkpoint_manager()
    assert not isinstance(outside, CostFollowingSnapshots)


def test_a_period_set_in_the_environment_wins(monkeypatch, storage):
    monkeypatch.setenv(PERIOD_VARIABLE, "3600")
    with snapshots_following_cost():
        manager = _controller(storage)._create_checkpoint_manager()
    assert not isinstance(manager, CostFollowingSnapshots)


def test_the_period_follows_the_save_time_through_tunes_own_save_loop(storage):
    """Ray's real save loop (throttle, save, copy to the storage path, adjust) with saves of
    1 ms and 200 ms."""
    manager = CostFollowingSnapshots(storage=storage, sync_every_n_trial_checkpoints=2)
    staging, remote = Path(storage.experiment_driver_staging_path), Path(storage.experiment_fs_path)
    staging.mkdir(parents=True, exist_ok=True)
    saves = []

    def save(seconds: float):
        def write() -> None:
            time.sleep(seconds)
            saves.append(seconds)
            (staging / "experiment_state.json").write_text(str(len(saves)))

        return write

    manager.sync_up_experiment_state(save(0.001), wait=True)
    assert manager.period == FLOOR_SECONDS  # cheap: every 2 s
    manager.sync_up_experiment_state(save(0.001))
    assert saves == [0.001]  # throttled: within the period nothing is saved
    manager.sync_up_experiment_state(save(0.2), force=True, wait=True)
    # 19 × the save (at least 0.2 s, more on a loaded machine): at most 5% of the time saving.
    assert 19 * 0.2 <= manager.period < 19 * 2.0
    period = manager.period
    manager.sync_up_experiment_state(save(0.001), force=True, wait=True)
    assert manager.period < period  # back down with the save's cost (to the 2-s floor when idle)
    assert manager.period >= FLOOR_SECONDS
    assert (remote / "experiment_state.json").read_text() == "3"  # each save reached the storage path


@pytest.mark.parametrize(
    ("value", "asked"),
    [(None, False), ("", False), ("0", False), ("false", False), ("off", False), ("1", True), (" Yes ", True)],
)
def test_tunes_result_log_only_when_asked(value: str | None, asked: bool) -> None:
    environ = {} if value is None else {TUNE_RESULT_LOG_VARIABLE: value}
    assert tune_result_log_asked(environ) is asked
