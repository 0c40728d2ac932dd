"""The MLflow vocabulary of sharpbench: every param, tag, metric name and run state it writes.

The live writer (the Tune callback, through :class:`bench.results.sinks.MlflowTrialSink`) and the
back-fill (``sharpbench sync-mlflow``, :mod:`bench.sync`) both take their names and values from
here, so a run written live and one back-filled from Parquet read alike in MLflow's UI, and a
resumed run finds the runs an earlier one created (lookups go by the tags named here).

What is written, by run kind:

* a **parent run** per method × phase, named by :func:`parent_run_name`: :func:`parent_params`,
  :func:`parent_tags`; as each of its trials ends, :func:`phase_counters` (trial counts per
  status, passes and wall time summed over the phase: chartable metrics, at step = trials
  ended); at the end of the phase :func:`parent_finish` (those counters, plus the method's
  leaderboard standing: the metric and tag names below, computed by :mod:`bench.standing`),
  state FINISHED;
* a **trial run** per trial, nested under its parent: :func:`trial_params`, :func:`trial_tags`
  (and :func:`used_tags`, what it ran on, as it reports), :func:`trial_run_name`; per epoch the
  reported metrics under their own names (:mod:`bench.metrics`); at its end :func:`final_metrics`
  (live: the epoch history is already there) or :func:`backfill_metrics` (back-fill: only the row
  is), its status tag and :data:`RUN_STATUS`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mlflow.entities import RunStatus

from bench import metrics
from bench.config import BenchmarkConfig
from bench.results.schema import Phase, TrialRow, TrialStatus

# --- tags ------------------------------------------------------------------------------------------
TAG_ROLE: Final = "sharpbench.role"  # ROLE_SEARCH (parent) or ROLE_TRIAL
TAG_SEARCH_NAME: Final = "sharpbench.search_name"
TAG_SEARCH_ID: Final = "sharpbench.search_id"  # sha256 of the search name: the lookup key
TAG_TRIAL_KEY: Final = "sharpbench.trial_key"
TAG_TRIAL_ID: Final = "sharpbench.trial_id"  # sha256 of the trial key: the lookup key
TAG_BENCHMARK: Final = "sharpbench.benchmark"
TAG_REGULARIZER: Final = "sharpbench.regularizer"
TAG_PHASE: Final = "sharpbench.phase"
TAG_STATUS: Final = "sharpbench.status"  # a TrialStatus value; "stopped" runs are FINISHED in MLflow
TAG_ERROR: Final = "sharpbench.error"
#: A final trial's source: the ``run_id`` (row key) of the search trial whose config it re-runs.
TAG_SELECTED_FROM: Final = "sharpbench.selected_from_run_id"
#: What a trial actually ran on: ``training.precision``/``device`` params are as requested ("auto").
TAG_DEVICE: Final = "sharpbench.device"
TAG_PRECISION: Final = "sharpbench.precision"
TAG_EVALUATED_WEIGHTS: Final = "sharpbench.evaluated_weights"
TAG_HARDWARE: Final = "sharpbench.hardware"
#: One tag per tracked package: ``sharpbench.package.torch`` = ``2.14.1``.
TAG_PACKAGE_PREFIX: Final = "sharpbench.package."
#: Parent-run tags: the search trial the selection rule chose, and its hyperparameters (JSON).
TAG_BEST_RUN_ID: Final = "sharpbench.best_run_id"
TAG_BEST_HPARAMS: Final = "sharpbench.best_hparams"

ROLE_SEARCH: Final = "search"
ROLE_TRIAL: Final = "trial"
#: ``sharpbench.status`` of a trial run no resumed trial continued (ended KILLED, then deleted).
STATUS_ABANDONED: Final = "abandoned"

#: Text a trial reports → the tag that records it as used (params keep the request, "auto").
USED_TAGS: Final[Mapping[str, str]] = {
    metrics.DEVICE: TAG_DEVICE,
    metrics.PRECISION: TAG_PRECISION,
    metrics.EVALUATED_WEIGHTS: TAG_EVALUATED_WEIGHTS,
    metrics.HARDWARE: TAG_HARDWARE,
}

# --- run states ------------------------------------------------------------------------------------
#: MLflow run status for each trial status. An ASHA-stopped trial ended normally (it was not
#: killed by a user or a crash), so it is FINISHED; the ``sharpbench.status`` tag says "stopped".
RUN_STATUS: Final[Mapping[TrialStatus, str]] = {
    TrialStatus.COMPLETED: RunStatus.to_string(RunStatus.FINISHED),
    TrialStatus.STOPPED: RunStatus.to_string(RunStatus.FINISHED),
    TrialStatus.FAILED: RunStatus.to_string(RunStatus.FAILED),
}
RUNNING: Final = RunStatus.to_string(RunStatus.RUNNING)
#: A parent run ends FINISHED whatever its trials did (their counts say how they ended).
PARENT_FINISHED: Final = RunStatus.to_string(RunStatus.FINISHED)
#: An abandoned trial run (see STATUS_ABANDONED).
ABANDONED_RUN_STATUS: Final = RunStatus.to_string(RunStatus.KILLED)

# --- parent-run metrics (accuracies are fractions) -------------------------------------------------
BEST_VAL_ACCURACY: Final = "best_val_accuracy"  # of the config bench.selection chose
BEST_VAL_LOSS: Final = "best_val_loss"
BEST_TEST_ACCURACY: Final = "best_test_accuracy"  # that search trial's own test accuracy
FINAL_TEST_ACCURACY_MEAN: Final = "final_test_accuracy_mean"  # over the final seeds of that config
FINAL_TEST_ACCURACY_STD: Final = "final_test_accuracy_std"
FINAL_TEST_ACCURACY_CI_LOW: Final = "final_test_accuracy_ci_low"  # the leaderboard's t-interval
FINAL_TEST_ACCURACY_CI_HIGH: Final = "final_test_accuracy_ci_high"
N_SEEDS: Final = "n_seeds"
SEARCH_TRIALS: Final = "search_trials"  # all statuses
SEARCH_WALL_SECONDS: Final = "search_wall_seconds"
PASSES_PER_TRIAL: Final = "passes_per_trial"  # forward + backward, mean over search trials


#: A parent run's costs, summed over the trials of its phase that ended (the trial runs log
#: their own as :data:`bench.metrics.FORWARD_PASSES`, ``BACKWARD_PASSES`` and ``WALL_SECONDS``).
PHASE_FORWARD_PASSES: Final = "phase_forward_passes"
PHASE_BACKWARD_PASSES: Final = "phase_backward_passes"
PHASE_WALL_SECONDS: Final = "phase_wall_seconds"  # summed trial wall time, not elapsed


def trials_metric(status: TrialStatus) -> str:
    """A parent run's count of trials that ended ``status`` (``trials_completed``, ...)."""
    return f"trials_{status.value}"


class EndedTrial(Protocol):
    """What the counters take from an ended trial (a :class:`~bench.results.schema.TrialRow`)."""

    status: str
    forward_passes: int
    backward_passes: int
    wall_seconds: float


def phase_counters(trials: Iterable[EndedTrial]) -> dict[str, float]:
    """A parent run's counters over the ended trials of its method × phase: trials per status
    (``trials_completed``, ``trials_stopped``, ``trials_failed``, zeros included) and the passes
    and wall seconds they spent. Metrics, not tags, so MLflow charts and compares them."""
    tally = PhaseTally()
    for index, trial in enumerate(trials):
        tally.put(str(index), trial)
    return tally.counters()


class PhaseTally:
    """:func:`phase_counters` kept as a phase's trials end, each trial by its key (a trial
    recorded again replaces its earlier row): one more trial costs the same however many ended
    before it (recounting every ended trial at each end made a run's cost grow with its square)."""

    def __init__(self) -> None:
        self._ended: dict[str, EndedTrial] = {}
        self._totals: dict[str, float] = dict.fromkeys(
            [*(trials_metric(s) for s in TrialStatus), PHASE_FORWARD_PASSES, PHASE_BACKWARD_PASSES, PHASE_WALL_SECONDS],
            0,
        )

    def put(self, key: str, trial: EndedTrial) -> None:
        earlier = self._ended.get(key)
        if earlier is not None:
            self._add(earlier, -1)
        self._ended[key] = trial
        self._add(trial, 1)

    def _add(self, trial: EndedTrial, sign: int) -> None:
        self._totals[trials_metric(TrialStatus(trial.status))] += sign
        self._totals[PHASE_FORWARD_PASSES] += sign * (trial.forward_passes or 0)
        self._totals[PHASE_BACKWARD_PASSES] += sign * (trial.backward_passes or 0)
        self._totals[PHASE_WALL_SECONDS] += sign * (trial.wall_seconds or 0.0)

    def __len__(self) -> int:
        return len(self._ended)

    def counters(self) -> dict[str, float]:
        return {key: float(value) for key, value in self._totals.items()}


# --- run names -------------------------------------------------------------------------------------
#: A run name's part is cut to this many characters: a whole name stays readable in the runs table.
_NAME_PART_CHARS: Final = 60


def _name_part(text: str) -> str:
    """One part of a run name, harmless: "/" (the parts' separator), control, format and
    separator characters other than a plain space (newlines, bidi overrides) become "_"; at
    most :data:`_NAME_PART_CHARS` characters; never empty. Markup needs no escaping: MLflow's
    UI shows a run name as text (checked in headless chromium by the tests)."""
    kept = "".join(c if c == " " or (c != "/" and unicodedata.category(c)[0] not in "CZ") else "_" for c in text)
    kept = kept.strip() or "_"
    return kept if len(kept) <= _NAME_PART_CHARS else kept[: _NAME_PART_CHARS - 1] + "…"


def run_name(*parts: str) -> str:
    """``benchmark/method/phase[/trial]``: what MLflow's runs table shows, sorted by it."""
    return "/".join(_name_part(str(part)) for part in parts)


# --- parent runs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParentRun:
    """One method × phase parent run: its lookup key and what it is created with."""

    key: str  # the search name within one run instance (bench.plan.MethodPlan.parent_key)
    benchmark: str
    regularizer: str
    phase: Phase
    params: Mapping[str, str]
    config: Mapping[str, Any] | None  # the resolved benchmark config: artifact of a new parent run


def parent_params(config: BenchmarkConfig, search_space: Mapping[str, str], fixed: Mapping[str, Any]) -> dict[str, str]:
    """The params of a method's parent run: dataset, model, budget, search seed, the searched
    space (``{param key: domain description}``) and the method's fixed values."""
    return {
        "dataset": config.dataset.name,
        "model": config.model.name,
        "trials_per_method": str(config.search.trials_per_method),
        "search_seed": str(config.search.seed),
        "search_space": json.dumps(dict(search_space)),
        "fixed": json.dumps(dict(fixed), sort_keys=True),
    }


def parent_run_name(parent: ParentRun) -> str:
    """``digits/sam/search``: the parent run's name (its key, with the run instance, is a tag)."""
    return run_name(parent.benchmark, parent.regularizer, Phase(parent.phase).value)


def parent_tags(parent: ParentRun) -> dict[str, str]:
    return {
        TAG_ROLE: ROLE_SEARCH,
        TAG_SEARCH_NAME: parent.key,
        TAG_BENCHMARK: parent.benchmark,
        TAG_REGULARIZER: parent.regularizer,
        TAG_PHASE: Phase(parent.phase).value,
    }


class Standing(Protocol):
    """A method's leaderboard standing as parent-run values (:class:`bench.standing.ParentSummary`)."""

    metrics: dict[str, float | None]
    tags: dict[str, str]
    board_json: dict[str, Any]


@dataclass(frozen=True)
class ParentFinish:
    """What a parent run is ended with (then FINISHED): metrics (None: skipped) logged at
    ``step`` (the trials ended: the step of the live counters), tags, and the method's
    leaderboard JSON as its ``standing.json`` (None: none yet)."""

    metrics: dict[str, float | None]
    tags: dict[str, str]
    standing: dict[str, Any] | None
    step: int = 0


def parent_finish(trials: Iterable[EndedTrial], standing: Standing | None) -> ParentFinish:
    """The parent-finish rule, one for the live run and the back-fill: the phase's counters
    (:func:`phase_counters`), plus the method's standing once it has rows (``None``: nothing
    recorded)."""
    ended = list(trials)
    counters: dict[str, float | None] = {**phase_counters(ended)}
    if standing is None:
        return ParentFinish(counters, {}, None, len(ended))
    return ParentFinish({**counters, **standing.metrics}, dict(standing.tags), standing.board_json, len(ended))


# --- trial runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRun:
    """What names a trial's MLflow run, known when the trial starts (and kept in its row)."""

    key: str  # the row's run_id: "<search name>/<Tune trial id>"
    benchmark: str
    regularizer: str
    phase: Phase
    seed: int
    regularizer_hparams: str  # JSON object, sorted keys: the row's column
    training_hparams: str  # JSON object: the row's column
    selected_from_run_id: str | None = None
    #: The trial's place among its method × phase's trials as the searcher issued them (0, 1,
    #: ...); None when unknown (a run back-filled from its row): the run name then ends in the
    #: trial id.
    ordinal: int | None = None

    @classmethod
    def of_row(cls, row: TrialRow) -> TrialRun:
        return cls(
            key=row.run_id,
            benchmark=row.benchmark,
            regularizer=row.regularizer,
            phase=Phase(row.phase),
            seed=row.seed,
            regularizer_hparams=row.regularizer_hparams,
            training_hparams=row.training_hparams,
            selected_from_run_id=row.selected_from_run_id,
        )

    @property
    def trial_id(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def trial_run_name(trial: TrialRun) -> str:
    """``digits/sam/search/t007`` (the searcher's eighth search trial of sam), or the Tune trial
    id in place of ``t007`` when its ordinal is unknown: sorted by name, MLflow's runs table
    groups a benchmark's runs by method and phase, each parent first."""
    which = f"t{trial.ordinal:03d}" if trial.ordinal is not None else trial.trial_id
    return run_name(trial.benchmark, trial.regularizer, trial.phase.value, which)


def trial_params(trial: TrialRun) -> dict[str, object]:
    """``regularizer.<name>``, ``training.<name>`` (as requested: ``precision: auto`` stays
    ``auto``) and ``seed``."""
    params: dict[str, object] = {f"regularizer.{k}": v for k, v in json.loads(trial.regularizer_hparams).items()}
    params.update({f"training.{k}": v for k, v in json.loads(trial.training_hparams).items()})
    params["seed"] = trial.seed
    return params


def trial_tags(trial: TrialRun) -> dict[str, str]:
    """The tags a trial run is created with (the sink adds its role, key and parent)."""
    tags = {TAG_PHASE: trial.phase.value, TAG_REGULARIZER: trial.regularizer}
    if trial.selected_from_run_id:
        tags[TAG_SELECTED_FROM] = trial.selected_from_run_id
    return tags


def used_tags(values: Mapping[str, Any]) -> dict[str, str]:
    """What a trial ran on (device, precision, hardware), from a report or a row's columns."""
    return {tag: str(values[key]) for key, tag in USED_TAGS.items() if values.get(key) is not None}


def final_metrics(row: TrialRow) -> dict[str, float | None]:
    """A live trial run's last values, logged as it ends: its epochs are already in MLflow, and
    these are the row metrics no epoch reports."""
    return {
        metrics.TEST_ACCURACY: row.test_accuracy,
        metrics.TEST_LOSS: row.test_loss,
        metrics.WALL_SECONDS: row.wall_seconds,
    }


def backfill_metrics(row: TrialRow) -> dict[str, float | None]:
    """Every row metric under its MLflow (Tune) key, for a run back-filled from Parquet (which
    holds no per-epoch history); bools as 0/1, nulls skipped by the sink."""
    values = {}
    for m in metrics.ROW_METRICS:
        value = getattr(row, str(m.column))
        values[m.name] = None if value is None else float(value)
    return values


def trial_end_tags(status: TrialStatus, error: str | None) -> dict[str, str]:
    """The status tag, and the error of a failed trial ("unknown error" when it has none)."""
    tags = {TAG_STATUS: status.value}
    if status is TrialStatus.FAILED:
        tags[TAG_ERROR] = error or "unknown error"
    elif error:
        tags[TAG_ERROR] = error
    return tags
