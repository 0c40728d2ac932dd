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
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray.train
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback
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


class _Forward(UserCallback):
    """Runs in the Train controller: rank 0's metrics and checkpoint folder, report by report,
    to the trial function's queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        self.queue.put((metrics[0], None if checkpoint is None else checkpoint.path))


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
            callbacks=[_Forward(queue)],
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
    runner.start()
    while runner.is_alive() or not queue.empty():
        try:
            result, folder = queue.get(timeout=POLL_S)
        except Empty:
            continue
        checkpoint = None if folder is None else Checkpoint(folder, filesystem=storage.storage_filesystem)
        tune.report(result, checkpoint=checkpoint)
    runner.join()
    if "error" in outcome:
        error = outcome["error"]
        # Ray Train's WorkerGroupError says only "Training failed due to worker errors:" on its first
        # line; the trial records the first failing worker's own error (its class decides oom/error).
        failures = getattr(error, "worker_failures", None)
        if failures:
            raise failures[min(failures)] from error
        raise error
    storage.storage_filesystem.delete_dir(f"{storage.trial_fs_path}/{TRAIN_FOLDER}")
