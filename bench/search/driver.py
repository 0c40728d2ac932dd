"""The whole benchmark as one Tune experiment: every method's search and final seeds at once.

One driver, one experiment, one searcher (:mod:`bench.search.searcher`) that routes each free
slot to a method with work left, one scheduler that gives each method its own ASHA
(:mod:`bench.search.scheduler`), and one sink callback that writes every finished trial
(:mod:`bench.search.sink`). An interrupted experiment is restored, not re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, ResultGrid, RunConfig, TuneConfig, Tuner
from ray.tune.logger import JsonLoggerCallback

from bench import metrics
from bench.config import BenchmarkConfig, with_final
from bench.console import RunProgress
from bench.plan import SEED_KEY, MethodPlan, plan_methods
from bench.results.mlflow_sink import MlflowSink
from bench.results.schema import Phase
from bench.run_record import TUNE_DIRNAME
from bench.search import finals
from bench.search.live import LIVE, LiveRun
from bench.search.runtime import trial_slots
from bench.search.scheduler import PerMethodScheduler
from bench.search.searcher import BenchmarkSearcher
from bench.search.sink import SinkCallback
from bench.search.snapshots import snapshots_following_cost
from bench.search.space import sampler_settings, startup_count
from bench.search.studies import default_storage, ended_history, study_name, tell_recorded
from bench.search.trainable import run_trial

_log = logging.getLogger(__name__)
#: Tune's cap on trials waiting for resources (``TUNE_MAX_PENDING_TRIALS_PG``); the searcher's
#: own limit, the cluster's slots, is the one that binds.
MAX_PENDING_TRIALS = 10_000

#: What Tune runs per trial: ``(sampled config, *, config=BenchmarkConfig, plans={name: MethodPlan})``.
TrialFunction = Callable[..., None]


class SearchInterrupted(RuntimeError):
    """The experiment stopped before all its trials ended (Ctrl-C); its state is saved for resuming."""


def experiment_name(config: BenchmarkConfig, final_only: bool, instance: str = "") -> str:
    """Stable across runs, so an interrupted experiment resumes under the same name (in the
    benchmark's own folder, ``<results>/ray/<benchmark>/``). A final-only call (``sharpbench
    final``) is its own experiment per final section (seeds, top-k): another ``--seed`` is a new
    experiment, the same one resumes.

    The name ends with the run instance: Ray Tune stages each driver's experiment state under
    ``<Ray session>/artifacts/<start second>/<experiment name>/`` before copying it to the
    experiment folder, so two drivers on one Ray runtime that start an experiment of the same
    name in the same second (the benchmarks of a suite, :mod:`bench.suite`) would write each
    other's state files (seen: a benchmark's folder held another's trials, and its resume hung)."""
    if not final_only:
        base = "run"
    else:
        digest = hashlib.sha256(json.dumps(config.final.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        base = f"final-{digest[:8]}"
    return f"{base}-{instance}" if instance else base


def unfinished(live: LiveRun) -> list[str]:
    """What the sink has not recorded yet, per method (empty when the experiment is complete).

    Ray Tune returns normally from an interrupted ``fit`` (and marks the stopped trials
    terminated), so count rows: every trial that really ended has its row."""
    rows = finals.results_rows(live.results_dir, live.config.benchmark)
    missing = []
    for plan in live.plans.values():
        if not live.final_only:
            left = plan.budget.trials - finals.search_rows(plan, rows)
            if left > 0:
                finals_too = ", then its final runs" if live.config.final.seeds else ""
                missing.append(f"{plan.regularizer}: {left} search trial(s){finals_too}")
                continue  # its finals are not chosen yet
        if live.config.final.seeds:
            left = len(finals.missing_finals(plan, rows, live.config))
            if left:
                missing.append(f"{plan.regularizer}: {left} final run(s)")
    return missing


def _has_trials(experiment: Path) -> bool:
    """Whether a Tune experiment folder's latest state lists any trial. A state that cannot be
    read (cut short when the disk filled up) lists none that could be resumed: Tune's restore
    fails on it part-way. The record (rows, studies) is what a resumed run trusts anyway
    (:func:`_read_record`), so such an experiment starts afresh and its trials run again."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return False
    try:
        return bool(json.loads(states[-1].read_text()).get("trial_data"))
    except (OSError, ValueError):
        _log.warning(
            "Ray Tune's saved state %s is unreadable (cut short?): the search state starts afresh from the "
            "record (rows and studies); trials that had not ended run again",
            states[-1],
        )
        return False


def _read_record(live: LiveRun) -> None:
    """Before the experiment (re)starts: what it must trust over Tune's saved state, which lags
    the record by up to ``TUNE_GLOBAL_CHECKPOINT_S`` (or is missing, when the driver died before
    Tune first saved a trial): the rows (``live.recorded``) and the ended trials of each
    method's study (``live.history``). Both are empty for a new run. A study trial whose row was
    written but whose tell was not (killed in between) is told from its row first."""
    rows = finals.results_rows(live.results_dir, live.config.benchmark)
    live.recorded = finals.recorded_trials(live.config.benchmark, rows)
    if live.final_only:
        return
    rows = [row for row in rows if row["benchmark"] == live.config.benchmark]
    for plan in live.plans.values():
        if not plan.params:
            continue
        name = study_name(plan.benchmark, plan.regularizer, live.instance)
        told = tell_recorded(live.optuna_storage, name, rows, live.config.search.metric)
        if told:
            _log.info("%d trial(s) of study %s told from their rows (the run stopped before telling them)", told, name)
        live.history[plan.regularizer] = ended_history(live.optuna_storage, name)


def concurrency_slots(config: BenchmarkConfig) -> int:
    """Trials in flight at once: ``search.max_concurrent_trials``, but never more than the
    connected cluster's resources can run. A trial asked beyond that waits for resources while
    the trials that could teach its sampler run, and is drawn without their results."""
    slots = trial_slots(config.resources)
    return min(config.search.max_concurrent_trials or slots, slots)


def mostly_random(config: BenchmarkConfig, plans: list[MethodPlan], slots: int) -> str | None:
    """One line saying why ``config``'s search is mostly random at ``slots`` concurrent trials,
    and what to change; ``None`` when it is not (or the sampler has no model: random search by
    choice). Two causes, on the smallest per-method budget T with S startup trials:

    * S ≥ T / 2: at most half of each method's trials are drawn from the model;
    * slots ≥ T: all of a method's trials fit in flight at once, so its model trials are asked
      together as soon as its startup trials end, each learning from the startup trials alone
      (the startup rule keeps them model draws; without it they would all be random).
    """
    searched = [plan for plan in plans if plan.params]
    if not searched:
        return None
    trials = min(plan.budget.trials for plan in searched)
    startup = startup_count(sampler_settings(config.search, trials))
    if startup is None:
        return None
    name = config.search.sampler.name
    if 2 * startup >= trials:
        return (
            f"search of {config.benchmark} is mostly random: {startup} of {trials} trials per method are "
            f"{name}'s random startup trials; lower search.sampler.n_startup_trials or raise "
            "search.trials_per_method"
        )
    if slots >= trials:
        return (
            f"search of {config.benchmark} is mostly random: {slots} concurrent trials ≥ {trials} trials per "
            f"method, so {name} models only its {startup} startup trials; set search.max_concurrent_trials "
            f"below {trials} or raise search.trials_per_method"
        )
    return None


def _tuner(live: LiveRun, name: str, storage: Path, trial_function: TrialFunction, sequential: bool) -> Tuner:
    config = live.config
    plans = list(live.plans.values())
    several = config.resources.workers_per_trial > 1
    trainable = tune.with_parameters(trial_function, config=config, plans=live.plans)
    if several:
        from bench.search.distributed import TRIAL_RESOURCES, data_parallel_trainable  # Ray Train: only here

        trainable = data_parallel_trainable(trainable)  # places the workers itself, aborts them on a stop
        resources = TRIAL_RESOURCES
    else:
        resources = {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial}
    trainable = tune.with_resources(trainable, resources)
    path = storage / name
    if Tuner.can_restore(str(path)) and not _has_trials(path):
        # Interrupted before Tune made a single trial: nothing to resume, and Tune's restore of
        # such a state fails part-way and then runs fewer trials than planned (seen). Start afresh.
        shutil.rmtree(path)
    _read_record(live)
    if Tuner.can_restore(str(path)):
        # An interrupted experiment continues where it stopped: finished trials are not re-run,
        # and failed ones (their retries, max_failures, already spent) stay failed unless asked.
        return Tuner.restore(str(path), trainable=trainable, resume_errored=live.retry_failed)
    metric = config.search.metric
    mode = metrics.OBJECTIVES[metric]
    searcher = BenchmarkSearcher(
        metric=metric,
        mode=mode,
        plans=plans,
        config=config,
        storage=live.optuna_storage,
        instance=live.instance,
        final_only=live.final_only,
        sequential=sequential,
    )
    # The concurrency follows the cluster's resources as they change (nodes added or lost), so no
    # fixed max_concurrent_trials goes to Tune.
    searcher.follow_cluster(config.resources, config.search.max_concurrent_trials)
    return Tuner(
        trainable,
        param_space={SEED_KEY: config.seed},
        tune_config=TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=PerMethodScheduler(config.search.asha, plans),
            num_samples=-1,  # the searcher says when it is done: budgets, then final runs
            # One worker process per slot, not one per trial: a new actor re-imports torch and
            # bench (seconds per trial, measured by bench.benchmarks.orchestration). Not for trials
            # on several workers: Tune resets a reused actor instead of stopping it, and the stop
            # is what aborts the trial's Ray Train run (bench.search.distributed).
            reuse_actors=not several,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            # Tune's CSV and TensorBoard loggers are not added (see run_benchmark); its JSON result
            # log only when asked (TUNE_RESULT_LOG_VARIABLE).
            callbacks=[SinkCallback(), *([JsonLoggerCallback()] if tune_result_log_asked(os.environ) else [])],
            failure_config=FailureConfig(max_failures=config.search.max_failures),
            # Two, not one: after kill -9 the last experiment snapshot may name the checkpoint
            # before the newest, and with one kept that one is already deleted (seen in a test).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


#: Tune's checkpoint folders in a trial's folder: ``checkpoint_000003``.
CHECKPOINT_PREFIX = "checkpoint_"


def _remove_spent_checkpoints(grid: ResultGrid, experiment: Path) -> None:
    """Once the whole run has ended (Tune saved its last state), a trial that ended without an
    error needs its checkpoints no more: nothing resumes it, and the final runs start afresh. They
    were most of a results folder (two per trial: 90 MB each for a ResNet-18). A trial that raised
    keeps its own, which ``--retry-failed`` resumes from. (While the run goes on they stay: a
    kill -9 may leave Tune a saved state older than a trial's end, which resumes it from them.)

    Only inside ``experiment``, this run's Tune folder: a trial restored from a moved or copied
    results folder may still name its old place (seen), which is not this run's to change."""
    for result in grid:
        if result.error is not None or result.path is None:
            continue
        folder = experiment / PurePosixPath(result.path).name
        try:
            for checkpoint in folder.glob(f"{CHECKPOINT_PREFIX}*"):
                if checkpoint.is_dir():
                    shutil.rmtree(checkpoint)
        except OSError as error:  # the rows are saved: a folder left behind costs disk, not results
            _log.warning("could not remove the checkpoints of the ended trial in %s: %s", folder, error)


#: Set to 1 (or true, yes, on), Tune's JSON result log is written too: a ``result.json`` per
#: trial with every report (the worker's pid and host among them), for debugging. Off by default:
#: Parquet, the curves and MLflow are the record, and Tune copies its driver folder, every trial's
#: log included, to the results folder at each save of its state (30,000 files at 10,000 trials).
TUNE_RESULT_LOG_VARIABLE = "SHARPBENCH_TUNE_RESULT_LOG"


def tune_result_log_asked(environ: Mapping[str, str]) -> bool:
    """Whether :data:`TUNE_RESULT_LOG_VARIABLE` asks for Tune's JSON result log (0, false, no,
    off and empty do not)."""
    return environ.get(TUNE_RESULT_LOG_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def run_benchmark(
    config: BenchmarkConfig,
    *,
    results_dir: str | Path,
    tracking_uri: str,
    progress: RunProgress | None = None,
    phases: tuple[Phase, ...] = (Phase.SEARCH, Phase.FINAL),
    instance: str = "",
    retry_failed: bool = False,
    optuna_storage: str | None = None,
    trial_function: TrialFunction = run_trial,
    sequential: bool = False,
    mlflow_sink: MlflowSink | None = None,
) -> None:
    """Run every method's search and final seeds, all at once, on the connected Ray runtime.

    The caller owns ``ray.init``/``ray.shutdown`` (local or ``address=``). Results go to the
    sinks; read them back with :func:`bench.results.parquet.read_rows`. ``progress`` receives
    each finished trial (resumed experiments included). ``phases=(Phase.FINAL,)`` runs only the
    final phase, from the search rows already recorded under ``results_dir``. ``instance`` is the
    run instance of :mod:`bench.run_record` (MLflow parent runs and Optuna studies are keyed by
    it). ``optuna_storage``: SQLAlchemy URL or journal file of the Optuna studies; default
    :func:`bench.search.studies.default_storage`. ``mlflow_sink``: one the caller opened on
    ``tracking_uri`` for this benchmark, taken over by the sink callback (:class:`LiveRun`).
    An experiment already in ``results_dir`` is restored,
    not re-run; its failed trials run again only with ``retry_failed``. Raises
    :class:`SearchInterrupted` when the experiment stopped before its trials ended.

    For :mod:`bench.benchmarks.orchestration` only: ``trial_function`` replaces the trial Tune runs
    (same signature as :func:`bench.search.trainable.run_trial`), ``sequential`` schedules one
    method at a time (the scheduling sharpbench had before this package).
    """
    results = Path(results_dir).resolve()
    storage = results / TUNE_DIRNAME / config.benchmark
    storage.mkdir(parents=True, exist_ok=True)
    final_only = Phase.SEARCH not in phases
    if final_only and not config.final.seeds:
        return
    if not final_only and Phase.FINAL not in phases:
        config = with_final(config, seeds=[]) if config.final.seeds else config
    live = LiveRun(
        config=config,
        plans={plan.regularizer: plan for plan in plan_methods(config)},
        results_dir=results,
        tracking_uri=tracking_uri,
        optuna_storage=optuna_storage or config.optuna_storage or default_storage(results),
        instance=instance,
        progress=progress,
        final_only=final_only,
        retry_failed=retry_failed,
        mlflow_sink=mlflow_sink,
    )
    name = experiment_name(config, final_only, instance)
    if (storage / experiment_name(config, final_only)).is_dir() and not (storage / name).is_dir():
        name = experiment_name(config, final_only)  # started by a sharpbench that did not add the instance
    # Tune adds CSV and TensorBoard loggers unless told not to: both write on the event loop that
    # every trial waits for after a report, and neither takes a report that carries several
    # epochs (bench.search.reporting). Parquet and MLflow are the record.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune keeps at most one trial waiting for resources when the searcher limits concurrency
    # itself: a trial then starts only after the one before it got its actor, and 3 slots ran 2
    # trials at a time (measured on a loopback cluster). The searcher's limit (the cluster's
    # slots) caps waiting and running trials together, so Tune's own cap can stay out of its way.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(MAX_PENDING_TRIALS))
    if not final_only:
        # Once per benchmark, before any trial: the config, not the run, makes a search random.
        warning = mostly_random(config, list(live.plans.values()), concurrency_slots(config))
        if warning is not None:
            if progress is not None:
                progress.warn(warning)
            else:
                print(f"warning: {warning}", file=sys.stderr)
    LIVE.bind(live)
    try:
        # Tune saves its experiment state at most every 10 s by default: a kill -9 then loses up to
        # 10 s of it. Every 2 s keeps the window small while the state is small; as it grows with
        # the trials run, less often (bench.search.snapshots).
        with snapshots_following_cost():
            grid = _tuner(live, name, storage, trial_function, sequential).fit()
    finally:
        for close in live.closers:
            close()
        LIVE.bind(None)
    missing = unfinished(live)
    if missing:
        raise SearchInterrupted(
            f"benchmark {config.benchmark} was interrupted with trials unfinished ({'; '.join(missing)}); "
            "its state is saved"
        )
    _remove_spent_checkpoints(grid, storage / name)
