"""Equal-budget searches with Ray Tune + Optuna: the only module that imports ray and optuna.

For each regularizer of a config: a Tune run of ``trials_per_method`` trials whose configs come
from a seeded TPE sampler over the method's own space plus the opened training hyperparameters,
with ASHA early stopping; then, if the config asks, the best completed config re-run with several
training seeds. A driver-side callback is the single writer of both sinks (Parquet and MLflow),
so trials on other nodes need no access to the results folder or the tracking store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import ray
import torch
from ray import tune
from ray.train.constants import CHECKPOINT_DIR_NAME
from ray.tune import Callback, Checkpoint, CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from bench import metrics, selection
from bench.config import BenchmarkConfig, SearchConfig, startup_trials
from bench.console import RunProgress, TrialLine
from bench.data import load_dataset_cached
from bench.preflight import NodeResources
from bench.plan import SEED_KEY, SELECTED_KEY, MethodPlan, SearchParam, SelectedConfig, plan_methods, trial_spec
from bench.provenance import hardware
from bench.results import summary
from bench.results.mlflow_mirror import mirror_for
from bench.results.mlflow_sync import parent_params
from bench.results.mlflow_sink import TAG_DEVICE, TAG_HARDWARE, TAG_PRECISION, MlflowSink
from bench.results.parquet import ParquetSink, read_rows
from bench.results.rows import TrialOutcome, build_row
from bench.results.schema import Phase, TrialStatus
from bench.training import Trainer
from regularizers.space import Choice, Float, Int

_R = TypeVar("_R")
_STATE_FILE = "trainer.pt"
#: A trial waits for the driver's callbacks after each report: its epochs go to MLflow at most
#: once per this many seconds (bench.results.mlflow_sink.MlflowSink), not one write each.
_EPOCH_FLUSH_SECONDS = 2.0
_ELAPSED_FILE = "elapsed.json"
#: Tune deletes a trial's oldest checkpoint as soon as a newer one beyond ``num_to_keep`` is
#: registered, but copies its experiment state (which names the checkpoint to resume from) to
#: the storage folder in the background. Checkpoints milliseconds apart (tiny epochs) outran that
#: copy: after kill -9 the saved state named a deleted checkpoint and the resumed trial failed
#: (seen in tests/test_run_identity.py once trials stopped waiting on per-epoch MLflow writes).
#: Seconds apart they cannot, and a retried trial redoes at most these seconds more.
_MIN_CHECKPOINT_SECONDS = 2.0



@dataclass
class _LiveRun:
    """What the current ``run_benchmark`` call registered for its callbacks to bind to.

    Tune's restore brings back the callbacks pickled by an earlier run and ignores new ones, so a
    callback must take nothing from its pickled state but its own bookkeeping: at ``setup()`` it
    binds to this call's config, results folder, tracking URI, run instance and console. A moved
    results folder, another tracking URI or a resumed search then work like a fresh run.
    """

    config: BenchmarkConfig | None = None
    results_dir: str = ""
    tracking_uri: str = ""
    instance: str = ""  # bench.run_record's run instance: MLflow parent runs are keyed by it
    progress: RunProgress | None = None


_LIVE = _LiveRun()


# --- Optuna ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefineByRun:
    """An Optuna define-by-run space for ``params`` (keys ``namespace/name``; Tune unflattens them).

    A class rather than a closure: the searcher, and so its space, is pickled with the
    experiment state that a resumed search reloads.
    """

    params: tuple[SearchParam, ...]

    def __call__(self, trial: optuna.Trial) -> None:
        for param in self.params:
            domain = param.domain
            if isinstance(domain, Float):
                trial.suggest_float(param.key, domain.low, domain.high, log=domain.log)
            elif isinstance(domain, Int):
                trial.suggest_int(param.key, domain.low, domain.high, log=domain.log)
            elif isinstance(domain, Choice):
                trial.suggest_categorical(param.key, list(domain.options))
            else:  # pragma: no cover - Domain is a closed union
                raise TypeError(f"unsupported domain {domain!r} for {param.key}")


def sampler_settings(search: SearchConfig, trials: int) -> dict[str, Any]:
    """The sampler ``search.sampler`` names, with every setting it is built with (recorded in rows).

    Model-based samplers (TPE, GP, CMA-ES) draw ``n_startup_trials`` at random first; by default
    :func:`bench.config.startup_trials` of the method's ``trials``, so that the model is used
    within the budget. TPE is Optuna's multivariate TPE with grouped conditional parameters;
    QMC is scrambled Sobol; CMA-ES learns from pruned trials too.
    """
    name = search.sampler.name
    startup = search.sampler.n_startup_trials
    startup = startup_trials(trials) if startup is None else startup
    settings: dict[str, Any] = {"name": name, "seed": search.seed}
    if name == "tpe":
        settings.update(n_startup_trials=startup, multivariate=True, group=True)
    elif name == "gp":
        settings.update(n_startup_trials=startup)
    elif name == "cmaes":
        settings.update(n_startup_trials=startup, consider_pruned_trials=True)
    elif name == "qmc":
        settings.update(qmc_type="sobol", scramble=True)
    return settings


_SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


def make_sampler(settings: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of :func:`sampler_settings` (its keys are the constructor's arguments)."""
    arguments = {key: value for key, value in settings.items() if key != "name"}
    return _SAMPLERS[settings["name"]](**arguments)


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not finish.

    Ray's adapter reports an ASHA-stopped trial as COMPLETE with its early value, so TPE would mix
    two-epoch results with full runs, and an errored trial that had reported as COMPLETE too.
    The adapter already reports every epoch as an intermediate value; here a trial stopped before
    its last epoch is told PRUNED (TPE then ranks it by its last intermediate value, as Optuna's
    own pruners do), and an errored one FAIL.
    """

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if error or not result or result.get(self.metric) is None:
            state = optuna.trial.TrialState.FAIL
        elif metrics.ran_all_epochs(result):
            return super().on_trial_complete(trial_id, result, error)
        else:
            state = optuna.trial.TrialState.PRUNED
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


# --- the trial, as Ray runs it --------------------------------------------------------------------


def _trainable(sampled: dict[str, Any], *, config: BenchmarkConfig, plan: MethodPlan) -> None:
    """One Tune trial: train epoch by epoch, report, checkpoint; the test split only at the end.

    Actors are reused (``TuneConfig(reuse_actors=True)``): one worker process runs trial after
    trial, so nothing may carry over from one trial to the next but the dataset, which is cached
    per process by its config (:func:`bench.data.load_dataset_cached`) and never written to.
    Every per-trial setting (threads, GPU memory share, seeds inside ``Trainer``) is set here.
    """
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(config.resources.cpus_per_trial)))
    gpus = config.resources.gpus_per_trial
    if 0 < gpus < 1 and torch.cuda.is_available():
        # Fractional GPUs pack trials on one device; nothing else isolates their memory.
        torch.cuda.set_per_process_memory_fraction(gpus)
    elapsed_before = 0.0
    checkpoint = tune.get_checkpoint()
    trainer: Trainer | None = None
    # The last report (a failure report repeats its epoch, so ASHA sees no new rung), or the
    # epochs a retried trial restored from its checkpoint.
    last: dict[str, Any] = {metrics.EPOCH: 0}
    try:
        spec = trial_spec(config, plan, sampled)
        trainer = Trainer(spec, dataset=load_dataset_cached(spec.dataset))
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                trainer.load_state_dict(torch.load(Path(folder, _STATE_FILE), map_location=trainer.device, weights_only=False))
                elapsed_before = json.loads(Path(folder, _ELAPSED_FILE).read_text())["seconds"]
            last[metrics.EPOCH] = trainer.epochs_done
        _train(trainer, config, started, elapsed_before, last)
    except Exception:
        # Honest cost: a failed trial spent passes and time that no per-epoch report carried.
        # One more report (the last epoch's figures, the counters as they stand) becomes the
        # trial's last_result, which the sink callback records with the failure; then re-raise.
        spent = {metrics.WALL_SECONDS: elapsed_before + time.perf_counter() - started}
        if trainer is not None:
            spent |= {metrics.FORWARD_PASSES: trainer.forward_passes, metrics.BACKWARD_PASSES: trainer.backward_passes}
        # Tune requires the search metric in every result; NaN is "no value" to the row builder.
        tune.report({config.search.metric: math.nan, **last, **spent})
        raise


def _train(trainer: Trainer, config: BenchmarkConfig, started: float, elapsed_before: float, last: dict[str, Any]) -> None:
    """Train to the end, reporting each epoch; ``last`` holds the latest report.

    A checkpoint every ``search.checkpoint_every`` epochs, but never sooner than
    ``_MIN_CHECKPOINT_SECONDS`` after the trial's start or its last checkpoint (see there)."""
    text = {metrics.DEVICE: str(trainer.device), metrics.HARDWARE: hardware(trainer.device), metrics.PRECISION: trainer.precision}
    checkpointed = time.perf_counter()
    while not trainer.finished:
        epoch = trainer.train_epoch()
        elapsed = elapsed_before + time.perf_counter() - started
        report = {**epoch.to_metrics(), **text, metrics.EPOCHS_PLANNED: trainer.epochs_planned, metrics.WALL_SECONDS: elapsed}
        if trainer.finished:
            test = trainer.test()
            report[metrics.TEST_ACCURACY] = test.test_accuracy
            report[metrics.TEST_LOSS] = test.test_loss
            tune.report(report)
        elif trainer.epochs_done % config.search.checkpoint_every == 0 and time.perf_counter() - checkpointed >= _MIN_CHECKPOINT_SECONDS:
            checkpointed = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                torch.save(trainer.state_dict(), Path(folder, _STATE_FILE))
                Path(folder, _ELAPSED_FILE).write_text(json.dumps({"seconds": elapsed}))
                tune.report(report, checkpoint=Checkpoint.from_directory(folder))
        else:
            tune.report(report)
        last.clear()
        last.update(report)


# --- the single writer ----------------------------------------------------------------------------


def _error_reason(trial: Any) -> str:
    """The last line of the trial's traceback, e.g. ``FloatingPointError: training loss became nan``.

    Read from the trial's local error file: when ``on_trial_error`` runs, Tune has written it on
    the driver but not yet synced it to the storage path that ``Trial.get_error`` reads.
    """
    text = None
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        elif (error := trial.get_error()) is not None:
            text = str(error)
    except Exception as lookup_error:  # the reason itself could not be read: say so
        return f"error text unavailable ({type(lookup_error).__name__}: {lookup_error})"
    if text is None:
        return "failed without an error message"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "empty error message")[:2000]


def _selected_from(trial: Any) -> str | None:
    """A final trial's source: the run_id of the search trial whose config it re-runs."""
    return (trial.config or {}).get(SELECTED_KEY, {}).get("run_id")


class SinkCallback(Callback):
    """Writes every finished trial to Parquet and MLflow, from the driver.

    Keeps its own trial-id → MLflow-run-id map in ``get_state``/``set_state`` so a retried or
    resumed trial logs into its existing run instead of opening a second one.
    """

    def __init__(
        self,
        *,
        config: BenchmarkConfig,
        plan: MethodPlan,
        phase: Phase,
        results_dir: str,
        tracking_uri: str,
    ) -> None:
        self.config = config
        self.plan = plan
        self.phase = phase
        self.search_name = plan.search_name(phase.value)
        self.results_dir = results_dir
        self.tracking_uri = tracking_uri
        self.progress: RunProgress | None = None  # bound at setup() to the live run's
        self.instance = ""
        self._state_tracking_uri: str | None = None  # the store a restored state's run ids live in
        self.run_ids: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.sink_state: dict[str, Any] = {}
        self.finished: dict[str, str] = {}  # trial id -> status, written once
        self._mlflow: MlflowSink | None = None
        self._parquet: ParquetSink | None = None
        self.parent_run_id: str | None = None

    # Sinks hold clients and connections: build them lazily and never pickle them.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_mlflow=None, _parquet=None, progress=None)
        return state

    @property
    def mlflow(self) -> MlflowSink:
        if self._mlflow is None:
            self._mlflow = MlflowSink(self.tracking_uri, experiment_name=self.config.benchmark, epoch_flush_seconds=_EPOCH_FLUSH_SECONDS)
            if self.sink_state:
                self._mlflow.load_state(self.sink_state)
        return self._mlflow

    def _to_mlflow(self, what: str, call: Callable[[MlflowSink], _R]) -> _R | None:
        """``call(sink)`` through this URI's mirror: ``None`` once MLflow failed (said once),
        never an exception, so Parquet rows and trial outcomes never depend on MLflow."""
        return mirror_for(self.tracking_uri).call(what, lambda: call(self.mlflow))

    @property
    def parquet(self) -> ParquetSink:
        if self._parquet is None:
            self._parquet = ParquetSink(self.results_dir)
        return self._parquet

    def setup(self, **info: Any) -> None:
        live = _LIVE
        if live.config is not None:  # bind to this call, whatever an earlier run pickled
            self.config, self.results_dir, self.tracking_uri = live.config, live.results_dir, live.tracking_uri
            self.instance, self.progress = live.instance, live.progress
            self._mlflow = self._parquet = None
        if self._state_tracking_uri not in (None, self.tracking_uri):
            # The restored MLflow run ids belong to another store: find or create runs here.
            self.run_ids, self.sink_state, self.parent_run_id = {}, {}, None
        self.parent_run_id = self._to_mlflow("parent run", lambda sink: sink.parent_run(
            search_name=self.plan.parent_key(self.phase.value, self.instance),
            benchmark=self.config.benchmark,
            regularizer=self.plan.regularizer,
            phase=self.phase.value,
            params=self._parent_params(),
            config=self.config.model_dump(mode="json"),
        ))

    def _parent_params(self) -> dict[str, str]:
        return parent_params(self.config, self.plan)

    def _trial_key(self, trial: Any) -> str:
        return f"{self.search_name}/{trial.trial_id}"

    def _run_id(self, trial: Any) -> str | None:
        """The trial's MLflow run id; ``None`` while MLflow is down (sync-mlflow back-fills it)."""
        if trial.trial_id not in self.run_ids:
            spec = trial_spec(self.config, self.plan, trial.config or {})
            params: dict[str, object] = {f"regularizer.{k}": v for k, v in spec.regularizer_hparams.items()}
            params.update({f"training.{k}": v for k, v in spec.training.model_dump().items()})
            params["seed"] = spec.seed
            tags = {"sharpbench.phase": self.phase.value, "sharpbench.regularizer": self.plan.regularizer}
            selected = _selected_from(trial)
            if selected is not None:
                tags["sharpbench.selected_from_run_id"] = selected
            run_id = self._to_mlflow("trial run", lambda sink: sink.trial_run(
                self.parent_run_id or "",
                self._trial_key(trial),
                run_name=f"{self.plan.regularizer}-{trial.trial_id}",
                params=params,
                tags=tags,
                config=spec.to_dict(),
            ))
            if run_id is None:
                return None
            self.run_ids[trial.trial_id] = run_id
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.finished.get(trial.trial_id) == TrialStatus.FAILED.value:
            # A failed trial started again (``--retry-failed``): record its new outcome, in the
            # same MLflow run; the Parquet reader keeps the latest row of a run id.
            del self.finished[trial.trial_id]
        self._run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        numeric = {
            key: float(value)
            for key, value in result.items()
            if key not in metrics.TEXT_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
            and metrics.is_reported(key)
        }
        used = {tag: str(result[key]) for key, tag in _USED_TAGS.items() if result.get(key) is not None}
        run_id = self._run_id(trial)
        if run_id is not None:
            self._to_mlflow("log epoch", lambda sink: sink.log_epoch(run_id, int(result.get(metrics.EPOCH, 0)), numeric, tags=used))
            if result.get(CHECKPOINT_DIR_NAME):  # Tune's key: the checkpoint's folder, None without one
                # A trial resumes from a checkpoint and re-runs (and re-logs) the epochs after it:
                # the epochs up to one are sent with it, so a driver killed later loses none.
                # (A flush in get_state, inside Tune's experiment snapshot, was tried first: kill -9
                # resumes then failed more often in tests/test_run_identity.py.)
                self._to_mlflow("log epochs", lambda sink: sink.flush(run_id))
        if self.progress is not None:
            self.progress.heartbeat(*self._running_and_best(trials), self.config.search.metric)

    def _running_and_best(self, trials: list) -> tuple[list[tuple[str, int, int]], dict[str, float]]:
        """For the heartbeat: each running trial's epoch, and the best search metric so far."""
        method = self.plan.regularizer
        running = [
            (method, int(t.last_result.get(metrics.EPOCH, 0)), int(t.last_result.get(metrics.EPOCHS_PLANNED, 0)))
            for t in trials
            if t.trial_id not in self.finished and t.last_result and metrics.EPOCH in t.last_result
        ]
        values = [t.last_result.get(self.config.search.metric) for t in trials if t.last_result]
        values = [float(v) for v in values if v is not None]
        best = {}
        if values:
            best[method] = max(values) if metrics.OBJECTIVES[self.config.search.metric] == "max" else min(values)
        return running, best

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        status = TrialStatus.COMPLETED if metrics.ran_all_epochs(result) else TrialStatus.STOPPED
        self._finish(trial, status, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, TrialStatus.FAILED, _error_reason(trial))

    def _finish(self, trial: Any, status: TrialStatus, error: str | None) -> None:
        if trial.trial_id in self.finished:
            return
        run_id = self._run_id(trial)
        outcome = TrialOutcome(
            search_name=self.search_name,
            trial_id=trial.trial_id,
            phase=self.phase.value,
            status=status,
            spec=trial_spec(self.config, self.plan, trial.config or {}),
            search_seed=self.config.search.seed,
            search_metric=self.config.search.metric,
            sampler=json.dumps(sampler_settings(self.config.search, self.plan.budget.trials), sort_keys=True) if self.plan.params else None,
            budget=self.plan.budget.to_json(),
            selected_from_run_id=_selected_from(trial),
            last_result=dict(trial.last_result or {}),
            error=error,
            mlflow_run_id=run_id,
        )
        row = build_row(outcome)
        self.parquet.write([row])
        if run_id is not None:
            final = {metrics.TEST_ACCURACY: row.test_accuracy, metrics.TEST_LOSS: row.test_loss, metrics.WALL_SECONDS: row.wall_seconds}
            self._to_mlflow("finish trial", lambda sink: sink.finish_trial(run_id, status, final, error))
        self.finished[trial.trial_id] = status.value
        if self.progress is not None:
            self.progress.trial_finished(
                TrialLine(
                    method=self.plan.regularizer,
                    phase=self.phase.value,
                    status=status.value,
                    epochs_run=row.epochs_run,
                    epochs_planned=row.epochs_planned,
                    sampled=self._sampled(trial.config or {}),
                    val_accuracy=row.val_accuracy,
                    test_accuracy=row.test_accuracy,
                    wall_seconds=row.wall_seconds,
                    error=error,
                )
            )

    def _sampled(self, config: dict[str, Any]) -> dict[str, Any]:
        """The values this trial was given for the searched hyperparameters (a final run: its seed)."""
        if self.phase is Phase.FINAL:
            source = config.get(SELECTED_KEY, {}).get("run_id", "")
            return {SEED_KEY: config.get(SEED_KEY), "from": source.rsplit("/", 1)[-1]}
        values = {}
        for param in self.plan.params:
            value = config.get(param.namespace, {}).get(param.name)
            if value is not None:
                values[param.name] = value
        return values

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """End the parent run with this phase's trial counts and the method's standing so far:
        the leaderboard's numbers from the rows just written (:mod:`bench.results.summary`)."""
        if self._mlflow is not None:
            self._to_mlflow("log epochs", lambda sink: sink.flush())
        if self.parent_run_id is None:
            return
        counts = {s.value: sum(v == s.value for v in self.finished.values()) for s in TrialStatus}
        values: dict[str, float | None] = {f"trials_{k}": float(v) for k, v in counts.items()}
        board = summary.method_board(self.results_dir, self.config.benchmark, self.plan.regularizer)
        parent_run_id = self.parent_run_id
        if board is None:  # nothing recorded (every trial interrupted before it ended)
            self._to_mlflow("finish parent", lambda sink: sink.finish_parent(parent_run_id, values))
            return
        parent = summary.summarize(board, self.phase)
        self._to_mlflow("finish parent", lambda sink: sink.finish_parent(
            parent_run_id, {**values, **parent.metrics}, tags=parent.tags, standing=parent.board_json
        ))

    def get_state(self) -> dict[str, Any]:
        return {
            "run_ids": dict(self.run_ids),
            "finished": dict(self.finished),
            "parent_run_id": self.parent_run_id,
            "sink": self._mlflow.state() if self._mlflow is not None else self.sink_state,
            "tracking_uri": self.tracking_uri,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids.update(state.get("run_ids", {}))
        self.finished.update(state.get("finished", {}))
        self.parent_run_id = state.get("parent_run_id", self.parent_run_id)
        self.sink_state = state.get("sink") or {}
        self._state_tracking_uri = state.get("tracking_uri")
        if self._mlflow is not None and self.sink_state:
            self._mlflow.load_state(self.sink_state)


#: Text a trial reports → the MLflow tag that records it as used (params keep the request, "auto").
_USED_TAGS = {metrics.DEVICE: TAG_DEVICE, metrics.PRECISION: TAG_PRECISION, metrics.HARDWARE: TAG_HARDWARE}


# --- driving the searches -------------------------------------------------------------------------


class SearchInterrupted(RuntimeError):
    """A search stopped before all its trials ended (Ctrl-C); its state is saved for resuming."""


def _check_finished(planned: int, search_name: str, results_dir: Path) -> None:
    """Ray Tune returns normally from an interrupted ``fit`` (and marks the stopped trials
    terminated), so count what the sink callback recorded: every trial that really ended has its
    row. Fewer rows than the trials planned means Ctrl-C (even one so early that Tune had made no
    trial yet): stop here instead of going on to the next method."""
    prefix = f"{search_name}/"
    recorded = sum(run_id.startswith(prefix) for run_id in read_rows(results_dir).column("run_id").to_pylist())
    unfinished = planned - recorded
    if unfinished > 0:
        raise SearchInterrupted(f"search {search_name} was interrupted with {unfinished} trial(s) unfinished; its state is saved")


def _concurrency(config: BenchmarkConfig, trials: int) -> int:
    if config.search.max_concurrent_trials is not None:
        return config.search.max_concurrent_trials
    available = ray.cluster_resources()
    slots = int(available.get("CPU", 1) // config.resources.cpus_per_trial)
    if config.resources.gpus_per_trial > 0:
        slots = min(slots, int(available.get("GPU", 0) // config.resources.gpus_per_trial))
    return max(1, min(slots, trials))


def _scheduler(config: BenchmarkConfig, plan: MethodPlan) -> ASHAScheduler | FIFOScheduler:
    """ASHA over epochs, with ``max_t`` the most epochs any trial of the plan can run: a trial
    planned for more epochs than ``max_t`` would be cut there and look stopped."""
    asha = config.search.asha
    if not asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=metrics.EPOCH,
        max_t=plan.max_epochs,
        grace_period=min(asha.grace_period, plan.max_epochs),
        reduction_factor=asha.reduction_factor,
    )


def _has_trials(experiment: Path) -> bool:
    """Whether a Tune experiment folder's latest state lists any trial."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return False
    try:
        return bool(json.loads(states[-1].read_text()).get("trial_data"))
    except (OSError, ValueError):
        return True  # unreadable: let Tune's own restore decide and report


def _tuner(
    trainable: Any,
    *,
    name: str,
    storage: Path,
    param_space: dict[str, Any],
    tune_config: TuneConfig,
    callback: SinkCallback,
    config: BenchmarkConfig,
    retry_failed: bool,
) -> Tuner:
    path = storage / name
    if Tuner.can_restore(str(path)) and not _has_trials(path):
        # Interrupted before Tune made a single trial: nothing to resume, and Tune's restore of
        # such a state fails part-way and then runs fewer trials than planned (seen). Start afresh.
        shutil.rmtree(path)
    if Tuner.can_restore(str(path)):
        # An interrupted search continues where it stopped: finished trials are not re-run, and
        # failed ones (their retries, max_failures, already spent) stay failed unless asked.
        return Tuner.restore(str(path), trainable=trainable, resume_errored=retry_failed)
    return Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            callbacks=[callback],
            failure_config=FailureConfig(max_failures=config.search.max_failures),
            # Two, not one: after kill -9 the last experiment snapshot may name the checkpoint
            # before the newest, and with one kept that one is already deleted (seen in a test).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def select_for_final(plan: MethodPlan, results_dir: Path, metric: str, k: int) -> list[SelectedConfig]:
    """The top-``k`` search trials of ``plan``'s method by the one selection rule
    (:mod:`bench.selection`), read back from the Parquet record: the leaderboard applies the same
    rule to the same rows, so both always name the same configs."""
    rows = [
        row for row in read_rows(results_dir).to_pylist()
        if row["benchmark"] == plan.benchmark and row["regularizer"] == plan.regularizer and row["phase"] == Phase.SEARCH.value
    ]
    by_id = {row["run_id"]: row for row in rows}
    chosen = selection.top_k([selection.candidate_from_row(row) for row in rows], k, metric)
    return [SelectedConfig.from_row(plan, by_id[candidate.run_id]) for candidate in chosen]


@dataclass
class _Context:
    """What every search of one benchmark run shares."""

    config: BenchmarkConfig
    results_dir: Path
    tracking_uri: str
    #: Restart the failed trials of a search that is restored (``sharpbench run --retry-failed``).
    retry_failed: bool = False

    @property
    def storage(self) -> Path:
        return self.results_dir / "ray"

    @property
    def metric(self) -> str:
        return self.config.search.metric

    @property
    def mode(self) -> str:
        return metrics.OBJECTIVES[self.config.search.metric]

    def trainable(self, plan: MethodPlan) -> Any:
        resources = {"cpu": self.config.resources.cpus_per_trial, "gpu": self.config.resources.gpus_per_trial}
        return tune.with_resources(tune.with_parameters(_trainable, config=self.config, plan=plan), resources)

    def callback(self, plan: MethodPlan, phase: Phase) -> SinkCallback:
        return SinkCallback(
            config=self.config, plan=plan, phase=phase, results_dir=str(self.results_dir), tracking_uri=self.tracking_uri,
        )


def _search(plan: MethodPlan, context: _Context) -> Any:
    """The equal-budget TPE search of one method; returns Tune's result grid."""
    config = context.config
    searcher = None
    if plan.params:
        searcher = PruningAwareOptunaSearch(
            space=DefineByRun(plan.params),
            metric=context.metric,
            mode=context.mode,
            # OptunaSearch ignores its own seed once a sampler is given: the settings seed it.
            sampler=make_sampler(sampler_settings(config.search, plan.budget.trials)),
            points_to_evaluate=[plan.default_point()],
        )
    name = plan.search_name(Phase.SEARCH.value)
    if _LIVE.progress is not None:
        _LIVE.progress.phase_started(plan.regularizer, Phase.SEARCH.value, plan.budget.trials)
    grid = _tuner(
        context.trainable(plan),
        name=name,
        storage=context.storage,
        param_space={SEED_KEY: config.seed},
        tune_config=TuneConfig(
            metric=context.metric,
            mode=context.mode,
            search_alg=searcher,
            scheduler=_scheduler(config, plan),
            num_samples=plan.budget.trials,
            max_concurrent_trials=_concurrency(config, plan.budget.trials),
            reuse_actors=True,  # one worker process per slot, not one per trial (see _trainable)
        ),
        callback=context.callback(plan, Phase.SEARCH),
        config=config,
        retry_failed=context.retry_failed,
    ).fit()
    _check_finished(plan.budget.trials, name, context.results_dir)
    return grid


def _final(plan: MethodPlan, selected: list[SelectedConfig], context: _Context) -> None:
    """Each selected search config re-run once per final seed (one Tune run: configs × seeds)."""
    name = plan.search_name(Phase.FINAL.value)
    runs = len(selected) * len(context.config.final.seeds)
    if _LIVE.progress is not None:
        _LIVE.progress.phase_started(plan.regularizer, Phase.FINAL.value, runs)
    _tuner(
        context.trainable(plan),
        name=name,
        storage=context.storage,
        param_space={
            SELECTED_KEY: tune.grid_search([choice.to_tune() for choice in selected]),
            SEED_KEY: tune.grid_search(list(context.config.final.seeds)),
        },
        tune_config=TuneConfig(
            metric=context.metric, mode=context.mode, max_concurrent_trials=_concurrency(context.config, runs), reuse_actors=True,
        ),
        callback=context.callback(plan, Phase.FINAL),
        config=context.config,
        retry_failed=context.retry_failed,
    ).fit()
    _check_finished(runs, name, context.results_dir)


def run_final(plan: MethodPlan, context: _Context) -> None:
    """The final phase of one method: its top-k search configs × the final seeds."""
    selected = select_for_final(plan, context.results_dir, context.metric, context.config.final.top_k)
    if selected:
        _final(plan, selected, context)


def run_benchmark(
    config: BenchmarkConfig,
    *,
    results_dir: str | Path,
    tracking_uri: str,
    progress: RunProgress | None = None,
    phases: tuple[Phase, ...] = (Phase.SEARCH, Phase.FINAL),
    instance: str = "",
    retry_failed: bool = False,
) -> None:
    """Run every method's search, then its final seeds, on the connected Ray runtime.

    The caller owns ``ray.init``/``ray.shutdown`` (local or ``address=``). Results go to the
    sinks; read them back with :func:`bench.results.parquet.read_rows`. ``progress`` receives
    each finished trial (resumed searches included). ``phases=(Phase.FINAL,)`` runs only the
    final phase, from the search rows already recorded under ``results_dir``. ``instance`` is the
    run instance of :mod:`bench.run_record` (MLflow parent runs are found by it). A search
    already in ``results_dir`` is restored, not re-run; its failed trials run again only with
    ``retry_failed``. Raises :class:`SearchInterrupted` when a search was stopped before its
    trials ended.
    """
    context = _Context(config, Path(results_dir).resolve(), tracking_uri, retry_failed)
    context.storage.mkdir(parents=True, exist_ok=True)
    _LIVE.config, _LIVE.results_dir, _LIVE.tracking_uri = config, str(context.results_dir), tracking_uri
    _LIVE.instance, _LIVE.progress = instance, progress
    try:
        for plan in plan_methods(config):
            if Phase.SEARCH in phases:
                _search(plan, context)
            if Phase.FINAL in phases and config.final.seeds:
                run_final(plan, context)
    finally:
        _LIVE.config, _LIVE.progress = None, None


def node_resources() -> list[NodeResources]:
    """CPUs and GPUs of every live node of the connected Ray runtime, for
    :func:`bench.preflight.check_placeable` (a trial must fit on one node: the cluster's totals
    in ``ray.cluster_resources()`` do not say whether it does)."""
    return [
        NodeResources(cpus=float(node["Resources"].get("CPU", 0.0)), gpus=float(node["Resources"].get("GPU", 0.0)))
        for node in ray.nodes()
        if node.get("Alive")
    ]


def init_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join ``address`` (a running cluster) or start a local runtime.

    ``ray.init`` resets the level of the ``ray`` logger: pass it here, so that Ray's INFO lines
    (instance started, results written) show only with ``verbose``; its warnings always do.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        # "local": always a fresh runtime, never a cluster that another process on this machine
        # started (Ray would otherwise join it, and refuse num_cpus).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=level)
