"""One Tune trial: train epoch by epoch, report (in batches: :mod:`bench.search.reporting`),
checkpoint; the test split only at the end.

The trial's method and phase come in its config (``method``/``phase`` keys, set by the
searcher), so one trainable serves every method of the experiment. A checkpoint is a folder with
the trainer's state (``trainer.pt``) and the wall seconds spent before it (``elapsed.json``).

A trial with ``resources.workers_per_trial`` above 1 runs :func:`train` on every worker of a Ray
Train run (:mod:`bench.search.distributed`); its reports reach Tune through that run, and every
decision to report is taken by all workers together.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import ray
import torch
from ray import tune
from ray.tune import Checkpoint

from bench import metrics
from bench.config import BenchmarkConfig
from bench.data import load_dataset_cached
from bench.plan import METHOD_KEY, PHASE_KEY, MethodPlan, trial_spec
from bench.provenance import hardware
from bench.results.schema import FailureClass, Phase
from bench.search.reporting import EpochBatch
from bench.search.scheduler import rung_epochs
from bench.training import Diverged, Trainer
from bench.training.parallel import DataParallel

STATE_FILE = "trainer.pt"
ELAPSED_FILE = "elapsed.json"
#: Tune deletes a trial's oldest checkpoint as soon as a newer one beyond ``num_to_keep`` is
#: registered, but copies its experiment state (which names the checkpoint to resume from) to
#: the storage folder in the background. Checkpoints milliseconds apart (tiny epochs) outran that
#: copy: after kill -9 the saved state named a deleted checkpoint and the resumed trial failed
#: (seen in tests/test_run_identity.py). Seconds apart they cannot, and a retried trial redoes at
#: most these seconds more.
MIN_CHECKPOINT_SECONDS = 2.0


#: Dataset configs this worker process has warmed up for (:func:`warm_up`).
_WARMED: set[str] = set()


def warm_up(config: BenchmarkConfig) -> float:
    """Once per worker process and dataset, before a trial's clock starts: the costs the first
    trial of a process would otherwise pay alone, so that a method's search time does not depend
    on which of its trials a reused worker happened to run first. PyTorch imports
    ``torch._dynamo`` when the first optimizer is built (0.9 s here), and the dataset is loaded
    into this process's cache (:func:`bench.data.load_dataset_cached`). Returns the seconds it
    took (0 when this process had warmed up already): the trial's ``compile_s``."""
    key = config.dataset.model_dump_json()
    if key in _WARMED:
        return 0.0
    started = time.perf_counter()
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    load_dataset_cached(config.dataset)
    _WARMED.add(key)
    return time.perf_counter() - started


class Channel(Protocol):
    """Where a trial's reports go: Tune itself, or a Ray Train run on several workers."""

    #: Whether one worker may report while the others do not: Ray Train's reports are collective,
    #: so a worker that fails alone raises without its failure report (the others wait in an
    #: all-reduce; Ray Train ends them when its error arrives).
    reports_alone: bool

    def report(self, result: dict[str, Any], checkpoint: str | None = None) -> None:
        """Send ``result`` (with the checkpoint folder ``checkpoint``, if any)."""


class TuneChannel:
    """Reports of a trial on one worker: straight to Tune."""

    reports_alone = True

    def report(self, result: dict[str, Any], checkpoint: str | None = None) -> None:
        tune.report(result, checkpoint=None if checkpoint is None else Checkpoint.from_directory(checkpoint))


def run_trial(sampled: dict[str, Any], *, config: BenchmarkConfig, plans: dict[str, MethodPlan]) -> None:
    """The function Tune runs for every trial (bound with ``tune.with_parameters``): :func:`train`
    here, or on several workers (:func:`bench.search.distributed.run_data_parallel`)."""
    if config.resources.workers_per_trial > 1:
        from bench.search.distributed import run_data_parallel  # Ray Train: only trials that use it

        run_data_parallel(sampled, config=config, plans=plans)
        return
    train(sampled, config=config, plans=plans, channel=TuneChannel(), checkpoint=tune.get_checkpoint())


def train(
    sampled: dict[str, Any],
    *,
    config: BenchmarkConfig,
    plans: dict[str, MethodPlan],
    channel: Channel,
    checkpoint: Checkpoint | None,
    parallel: DataParallel | None = None,
    started_at: float | None = None,
) -> None:
    """Train one trial to its end, reporting to ``channel``; resume from ``checkpoint`` if given.

    Actors are reused (``TuneConfig(reuse_actors=True)``): one worker process runs trial after
    trial, so nothing may carry over from one trial to the next but the dataset, which is cached
    per process by its config (:func:`bench.data.load_dataset_cached`) and never written to.
    Every per-trial setting (threads, GPU memory share, seeds inside ``Trainer``) is set here.
    The trial starts (``started_at``, wall-clock) when this is called, or at ``started_at`` when
    given (a trial on several workers: before its worker group started); its wall time (the cost
    the leaderboard sums) starts after :func:`warm_up`.
    """
    # On several workers the worker group's start (seconds) is paid before this call: warm-up too.
    compile_s = 0.0 if started_at is None else max(0.0, time.time() - started_at)
    started_at = time.time() if started_at is None else started_at
    compile_s += warm_up(config)
    plan = plans[sampled[METHOD_KEY]]
    torch.set_num_threads(max(1, int(config.resources.cpus_per_trial)))
    gpus = config.resources.gpus_per_trial
    if 0 < gpus < 1 and torch.cuda.is_available():
        # Fractional GPUs pack trials on one device; nothing else isolates their memory.
        torch.cuda.set_per_process_memory_fraction(gpus)
    elapsed_before = 0.0
    trainer: Trainer | None = None
    # The last epoch reported (a failure report repeats it, so ASHA sees no new rung), or the
    # epochs a retried trial restored from its checkpoint.
    last: dict[str, Any] = {metrics.EPOCH: 0}
    search = sampled.get(PHASE_KEY) == Phase.SEARCH.value
    batch = EpochBatch(rung_epochs(config.search.asha, plan) if search else ())
    started = time.perf_counter()
    try:
        spec = trial_spec(config, plan, sampled)
        trainer = Trainer(spec, dataset=load_dataset_cached(spec.dataset), parallel=parallel)
        if spec.training.compile:
            # torch.compile traces on the first step: minutes on a large model, paid by every
            # attempt's process once. Paid here, off the clock, so compile_s carries it.
            compile_s += trainer.warm_up_compiled()
            started = time.perf_counter()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                trainer.load_state_dict(
                    torch.load(Path(folder, STATE_FILE), map_location=trainer.device, weights_only=False)
                )
                spent = json.loads(Path(folder, ELAPSED_FILE).read_text())
                elapsed_before, started_at = spent["seconds"], spent.get("started_at", started_at)
                compile_s += spent.get(metrics.COMPILE_SECONDS, 0.0)  # earlier attempts' warm-ups
            last[metrics.EPOCH] = trainer.epochs_done
        _train(trainer, config, channel, started, elapsed_before, started_at, compile_s, last, batch)
    except Diverged as diverged:
        # The method's own result with this config: running it again gives the same NaN. Ended
        # here without raising, so Tune's max_failures does not retry it; the last report says
        # it failed, and why (the sink records it as failed, the searcher tells its study FAIL).
        _report_failure(
            config,
            channel,
            trainer,
            batch,
            last,
            elapsed_before,
            started,
            started_at,
            compile_s,
            {metrics.FAILURE: str(diverged), metrics.FAILURE_CLASS: FailureClass.DIVERGED.value},
        )
    except Exception:
        if channel.reports_alone:
            _report_failure(config, channel, trainer, batch, last, elapsed_before, started, started_at, compile_s, {})
        raise


def _report_failure(
    config: BenchmarkConfig,
    channel: Channel,
    trainer: Trainer | None,
    batch: EpochBatch,
    last: dict[str, Any],
    elapsed_before: float,
    started: float,
    started_at: float,
    compile_s: float,
    failure: dict[str, str],
) -> None:
    """The last report of a trial that failed.

    Honest cost: a failed trial spent passes and time that no per-epoch report carried. One more
    report (the last epoch's figures, the counters as they stand, and ``failure``) becomes the
    trial's last_result, which the sink callback records with the failure."""
    if batch.pending:  # epochs trained since the last report: reported as they would have been
        last = batch.pending[-1]
        channel.report(batch.take())
    spent: dict[str, Any] = {
        metrics.WALL_SECONDS: elapsed_before + time.perf_counter() - started,
        metrics.COMPILE_SECONDS: compile_s,
        **_where(started_at),
    }
    if trainer is not None:
        spent |= {metrics.FORWARD_PASSES: trainer.forward_passes, metrics.BACKWARD_PASSES: trainer.backward_passes}
    # Tune requires the search metric in every result; NaN is "no value" to the row builder.
    channel.report({config.search.metric: math.nan, **last, **spent, **failure})


def _where(started_at: float) -> dict[str, Any]:
    """Where and since when the trial runs: the Ray node id, the first attempt's start."""
    return {metrics.NODE: ray.get_runtime_context().get_node_id(), metrics.STARTED_AT: started_at}


def _train(
    trainer: Trainer,
    config: BenchmarkConfig,
    channel: Channel,
    started: float,
    elapsed_before: float,
    started_at: float,
    compile_s: float,
    last: dict[str, Any],
    batch: EpochBatch,
) -> None:
    """Train to the end; each epoch goes to ``batch``, which says when to report; ``last`` holds
    the latest epoch reported.

    A checkpoint (and a report with it) every ``search.checkpoint_every`` epochs, but never
    sooner than :data:`MIN_CHECKPOINT_SECONDS` after the trial's start or its last checkpoint.
    On several workers each decision to report or checkpoint is any worker's (clocks differ), so
    all report together, as Ray Train requires."""
    parallel = trainer.parallel
    workers = "" if parallel is None else f"{parallel.world_size} × "
    text = {
        metrics.DEVICE: str(trainer.device),
        metrics.HARDWARE: workers + hardware(trainer.device),
        metrics.PRECISION: trainer.precision,
        metrics.COMPILE_SECONDS: compile_s,
        **_where(started_at),
    }
    checkpointed = time.perf_counter()
    while not trainer.finished:
        epoch = trainer.train_epoch()
        elapsed = elapsed_before + time.perf_counter() - started
        report = {
            **epoch.to_metrics(),
            **text,
            metrics.EPOCHS_PLANNED: trainer.epochs_planned,
            metrics.WALL_SECONDS: elapsed,
            metrics.EVALUATED_WEIGHTS: epoch.evaluated_weights,
        }
        if trainer.finished:
            test = trainer.test()
            report[metrics.TEST_ACCURACY] = test.test_accuracy
            report[metrics.TEST_LOSS] = test.test_loss
        checkpoint = (
            not trainer.finished
            and trainer.epochs_done % config.search.checkpoint_every == 0
            and time.perf_counter() - checkpointed >= MIN_CHECKPOINT_SECONDS
        )
        due = batch.add(report, last=trainer.finished)
        if parallel is not None:
            due, checkpoint = parallel.any(due, checkpoint)
        if not (due or checkpoint):
            continue
        if checkpoint:
            checkpointed = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                torch.save(trainer.state_dict(), Path(folder, STATE_FILE))
                Path(folder, ELAPSED_FILE).write_text(
                    json.dumps({"seconds": elapsed, "started_at": started_at, metrics.COMPILE_SECONDS: compile_s})
                )
                channel.report(batch.take(), checkpoint=folder)
        else:
            channel.report(batch.take())
        last.clear()
        last.update(report)
