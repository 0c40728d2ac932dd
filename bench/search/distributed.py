"""A trial on several workers (``resources.workers_per_trial``): a Ray Train run inside the Tune trial.

The Tune trial function (:func:`run_data_parallel`) starts a ``TorchTrainer`` whose workers each run
:func:`bench.search.trainable.train` on their shard of every batch (:mod:`bench.training.parallel`;
Ray Train sets up the process group: gloo on CPU, nccl on GPU). Train V2 runs inside Tune as the
Ray docs describe; its own bridge forwards metrics only, so ours (:class:`_Forward`, run by the
Train controller) also forwards the checkpoint folder of rank 0, and the trial function reports
both to Tune. A Tune checkpoint is then what it is for one worker: what a retried or resumed trial
starts from, handed to every worker of the new run.

The trial itself holds only :data:`TRIAL_RESOURCES` (it waits); Ray Train places the workers, each with
``resources.cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs, on any nodes that hold them.

A trial Tune ends from outside (ASHA stops it, the run is interrupted) must end its Train run before
its process goes: Ray Train's controller, owned by that process, dies with it, and the workers'
placement group would stay reserved until the driver exits (Ray Train's own clean-up of it watches
the controller through Ray's State API, which a runtime without the dashboard does not serve), so
the next trials' workers would wait forever. :func:`data_parallel_trainable` gives such trials a
clean-up that aborts the Train run the way Ray Train's Ctrl-C handler does, and waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import ray.train
from ray import tune
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, RayActorError
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2.api.callback import UserCallback
from ray.tune.trainable import Trainable
from ray.tune.trainable.function_trainable import wrap_function
from ray.util.queue import Empty, Queue

from bench.config import BenchmarkConfig
from bench.plan import MethodPlan
from bench.search.trainable import train
from bench.training.parallel import DataParallel

#: What the Tune trial of a multi-worker trial holds: nothing its workers need, since it only waits
#: for their reports (Tune refuses an empty request, so one byte of memory; a CPU share, however
#: small, left too little for workers that fill the machine: they waited forever).
TRIAL_RESOURCES = {"cpu": 0, "memory": 1}
#: Seconds the trial function waits for a report before looking whether the run ended.
POLL_S = 0.2
#: The Train run's folder inside the Tune trial's folder (its checkpoints until Tune copied them).
TRAIN_FOLDER = "workers"
#: Seconds an ended trial waits for its Train run to abort. Long, because a controller still waiting
#: for its workers' resources handles the abort only when that wait ends (Ray Train's worker-group
#: start timeout, 60 s by default); giving up earlier would leave the placement group behind.
ABORT_WAIT_S = 120.0
#: Seconds an ended trial waits for its trial function to end before removing the Train run's folder.
ENDED_WAIT_S = 10.0

log = logging.getLogger(__name__)


class _Started(NamedTuple):
    """The Train controller's first message: its handle, for the trial's clean-up to abort it."""

    controller: ActorHandle


class _Report(NamedTuple):
    """Rank 0's metrics and checkpoint folder of one report."""

    metrics: dict[str, Any]
    folder: str | None


class _Announce(ControllerCallback):
    """Runs in the Train controller as it starts (before any report): its handle to the trial."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_controller_start(self, train_run_context: Any) -> None:
        self.queue.put(_Started(ray.get_runtime_context().current_actor))


class _Forward(UserCallback):
    """Runs in the Train controller: rank 0's metrics and checkpoint folder, report by report,
    to the trial function's queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        self.queue.put(_Report(metrics[0], None if checkpoint is None else checkpoint.path))


class _TrainRun:
    """The Train run of the trial this process runs (Tune does not reuse the process for another),
    as its clean-up needs it."""

    #: The run of this process's trial, from its start until the trial function returns.
    current: _TrainRun | None = None

    def __init__(self, runner: threading.Thread, storage: Any) -> None:
        self.runner = runner
        self.storage = storage
        self.controller: ActorHandle | None = None
        self.started = threading.Event()  # the controller's handle is known, or the trial function ended
        self.ended = threading.Event()  # the trial function ended
        self.aborted = False

    @property
    def folder(self) -> str:
        return f"{self.storage.trial_fs_path}/{TRAIN_FOLDER}"

    def abort(self) -> None:
        """End the Train run (workers and placement group) and wait for it, up to
        :data:`ABORT_WAIT_S`; Ray Train's own Ctrl-C handler does the same."""
        self.aborted = True
        deadline = time.monotonic() + ABORT_WAIT_S
        while not self.started.wait(POLL_S) and self.runner.is_alive() and time.monotonic() < deadline:
            pass  # the controller is being created: it announces itself before anything else
        if self.controller is None:
            return  # the run never started a controller (or has ended): nothing holds resources
        try:
            ray.get(self.controller.abort.remote(), timeout=max(deadline - time.monotonic(), 1.0))
        except RayActorError:
            pass  # the abort ends the controller's process: this is how it succeeds
        except GetTimeoutError:
            log.warning(
                "the Train run of an ended trial did not abort in %.0f s: its workers' resources may "
                "stay reserved until the driver exits",
                ABORT_WAIT_S,
            )
        self.runner.join(timeout=max(deadline - time.monotonic(), 0.0))

    def remove_folder(self) -> None:
        """Remove the aborted run's folder once the trial function (which may still be copying a
        checkpoint from it into Tune's) has ended."""
        if not self.ended.wait(ENDED_WAIT_S):
            log.warning("the trial function of an ended trial did not end: its Train run's folder stays")
            return
        try:
            self.storage.storage_filesystem.delete_dir(self.folder)
        except FileNotFoundError:
            pass  # the run ended before Ray Train wrote anything


def data_parallel_trainable(function: Callable[[dict[str, Any]], None]) -> type[Trainable]:
    """Tune's trainable for a trial function that runs :func:`run_data_parallel`: its clean-up
    (Tune's ``stop``, run before the trial's process ends) first aborts the trial's Train run."""

    class DataParallelTrial(wrap_function(function)):
        def cleanup(self) -> None:
            run = _TrainRun.current
            if run is not None:
                run.abort()
            try:
                # Ends the trial function even where it waits in a report Tune no longer takes.
                super().cleanup()
            finally:
                if run is not None:
                    run.remove_folder()

    return DataParallelTrial


class _TrainChannel:
    """A worker's reports: every worker reports (Ray Train's rule), rank 0's checkpoint is kept."""

    reports_alone = False

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def report(self, result: dict[str, Any], checkpoint: str | None = None) -> None:
        keep = checkpoint is not None and self.rank == 0
        ray.train.report(result, checkpoint=Checkpoint.from_directory(checkpoint) if keep else None)


def _worker(loop: dict[str, Any]) -> None:
    """One worker of the trial (Ray Train's ``train_loop_per_worker``)."""
    parallel = DataParallel.current()
    train(
        loop["sampled"],
        config=loop["config"],
        plans=loop["plans"],
        channel=_TrainChannel(ray.train.get_context().get_world_rank()),
        checkpoint=loop["checkpoint"],
        parallel=parallel,
        started_at=loop["started_at"],
    )


def run_data_parallel(sampled: dict[str, Any], *, config: BenchmarkConfig, plans: dict[str, MethodPlan]) -> None:
    """The Tune trial of a trial on ``resources.workers_per_trial`` workers: run them, forward
    their reports (and checkpoints) to Tune; a worker's error ends the trial with that error."""
    started_at = time.time()
    resources = config.resources
    per_worker = {"CPU": resources.cpus_per_trial}
    if resources.gpus_per_trial > 0:
        per_worker["GPU"] = resources.gpus_per_trial
    previous = tune.get_checkpoint()  # handed to every worker: each loads the same state
    storage = tune.get_context().get_storage()
    queue = Queue(actor_options={"num_cpus": 0})  # placed in the trial's bundle, which holds no whole CPU
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "sampled": sampled,
            "config": config,
            "plans": plans,
            "checkpoint": previous,
            "started_at": started_at,
        },
        scaling_config=ScalingConfig(
            num_workers=resources.workers_per_trial,
            use_gpu=resources.gpus_per_trial > 0,
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=TRAIN_FOLDER,
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            callbacks=[_Forward(queue), _Announce(queue)],
            # Tune retries the trial (search.max_failures) from its last checkpoint.
            failure_config=FailureConfig(max_failures=0),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # noqa: BLE001 - re-raised in the trial function below
            outcome["error"] = error

    runner = threading.Thread(target=fit, name="train-run", daemon=True)
    run = _TrainRun(runner, storage)
    runner.start()
    _TrainRun.current = run
    try:
        while runner.is_alive() or not queue.empty():
            try:
                message = queue.get(timeout=POLL_S)
            except Empty:
                continue
            if isinstance(message, _Started):
                run.controller = message.controller
                run.started.set()
            elif not run.aborted:
                checkpoint = None
                if message.folder is not None:
                    checkpoint = Checkpoint(message.folder, filesystem=storage.storage_filesystem)
                tune.report(message.metrics, checkpoint=checkpoint)
        runner.join()
        error = outcome.get("error")
        if error is not None and not run.aborted:  # an aborted run's error is the abort's, not the trial's
            # Ray Train's WorkerGroupError says only "Training failed due to worker errors:" on its
            # first line; the trial records the first failing worker's own error (its class decides
            # oom/error).
            failures = getattr(error, "worker_failures", None)
            if failures:
                raise failures[min(failures)] from error
            raise error
        if not run.aborted:  # an aborted run's folder goes in the trial's clean-up (Tune may still copy from it)
            storage.storage_filesystem.delete_dir(run.folder)
    finally:
        _TrainRun.current = None
        run.started.set()
        run.ended.set()
