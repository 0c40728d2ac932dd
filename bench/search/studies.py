"""One persisted Optuna study per benchmark × method: ask, report, tell, with true states.

The studies live in an Optuna storage (a journal file under the results folder by default, any
SQLAlchemy URL such as PostgreSQL on a cluster), so optuna-dashboard and ``optuna.importance``
can read them, and a resumed run continues the same studies. Every Tune search trial is one
study trial, told COMPLETE (it ran every epoch), PRUNED (ASHA stopped it; Optuna then ranks it by
its last intermediate value, as its own pruners do) or FAIL (it errored, or gave no value).

Why our own ask-and-tell glue instead of Ray's ``OptunaSearch``: that adapter keeps one study,
tells an ASHA-stopped trial COMPLETE with its early value and a retried one never, and cannot
re-attach the trial an interrupted run had asked for; here a study is per method, states are
true, and the one routing searcher (:mod:`bench.search.searcher`) owns the budgets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench import metrics
from bench.plan import MethodPlan
from bench.results.schema import FailureClass, Phase, TrialStatus
from bench.search.space import DEFAULT, MODEL, STARTUP, DefineByRun, counted_trials, nested, startup_count
from bench.stores import journal_path, optuna_storage, sqlite_url

#: The default storage's file, under the results folder: an Optuna journal (:mod:`bench.stores`).
STORAGE_FILENAME = "optuna.journal"
#: The default storage of results folders begun before the journal: such a folder keeps it.
SQLITE_STORAGE_FILENAME = "optuna.db"
#: Study trial user attribute: the Tune trial id and the run id of its Parquet row.
ATTR_TUNE_TRIAL = "tune_trial_id"
ATTR_RUN_ID = "run_id"
#: Set on a study trial that records a ``--retry-failed`` re-run of a FAILed one (its number).
ATTR_RETRY_OF = "retry_of"
#: Study trial user attribute: how the trial's config was drawn (:data:`bench.search.space.SUGGESTION_KINDS`).
ATTR_SUGGESTION_KIND = "suggestion_kind"


def default_storage(results_dir: Path) -> str:
    """``<results>/optuna.journal`` (absolute: the driver may run elsewhere), or
    ``sqlite:///<results>/optuna.db`` for a folder whose runs began with that one (its studies
    are there, and a resumed run continues them)."""
    results = Path(results_dir).resolve()
    journal, sqlite = results / STORAGE_FILENAME, results / SQLITE_STORAGE_FILENAME
    return sqlite_url(sqlite) if sqlite.exists() and not journal.exists() else str(journal)


def absolute_storage(url: str) -> str:
    """``url`` with a relative SQLite or journal path made absolute (from the current folder,
    where it would be opened), so the printed ``optuna-dashboard`` command works from anywhere;
    any other URL unchanged."""
    from sqlalchemy.engine import make_url

    journal = journal_path(url)
    if journal is not None:
        return str(journal.resolve())
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(Path(database).resolve())).render_as_string(hide_password=False)


def study_name(benchmark: str, method: str, instance: str) -> str:
    """``<benchmark>/<method>@<instance>``: one study per run instance, so a ``--restart`` or a
    second results folder on a shared PostgreSQL never continues another run's study."""
    name = f"{benchmark}/{method}"
    return f"{name}@{instance}" if instance else name


def load_study(storage: str, name: str) -> optuna.Study:
    """Study ``name`` of ``storage`` (a SQLAlchemy URL or a journal file: :func:`bench.stores.optuna_storage`);
    raises ``KeyError`` when there is none."""
    return optuna.load_study(study_name=name, storage=optuna_storage(storage))


def ended_history(storage: str, name: str) -> list[tuple[str, dict[int, float]]]:
    """The COMPLETE and PRUNED trials of study ``name`` as ``(Tune trial id, {epoch: value})``,
    in trial order; empty when the study does not exist. Read-only: a resumed run rebuilds its
    ASHA rungs from it (:func:`bench.search.scheduler.PerMethodScheduler.replay`)."""
    try:
        study = load_study(storage, name)
    except KeyError:  # no such study: nothing ended
        return []
    return [
        (str(t.user_attrs[ATTR_TUNE_TRIAL]), {int(e): float(v) for e, v in t.intermediate_values.items()})
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if ATTR_TUNE_TRIAL in t.user_attrs
    ]


#: The study state of a search row's status.
STATE_OF_STATUS = {
    TrialStatus.COMPLETED.value: TrialState.COMPLETE,
    TrialStatus.STOPPED.value: TrialState.PRUNED,
    TrialStatus.FAILED.value: TrialState.FAIL,
}


def tell_recorded(storage: str, name: str, rows: list[dict[str, Any]], metric: str) -> int:
    """Tell each trial of study ``name`` still running whose search row is recorded, as its row
    says (state from ``status``, value from the ``metric`` column); returns how many were told.

    A trial's study learns its outcome only after its row is written
    (:meth:`bench.search.live.LiveRun.after_row`); a run killed between the two left such a
    trial. A row of a trial lost to an infrastructure fault is no outcome: its study trial stays
    running, for the replacement to take up (:meth:`MethodStudy.ask`)."""
    try:
        study = load_study(storage, name)
    except KeyError:  # no such study: nothing to tell
        return 0
    outcomes = {
        row["run_id"]: row
        for row in rows
        if row["phase"] == Phase.SEARCH.value and row.get("failure_class") != FailureClass.INFRA.value
    }
    column = metrics.METRICS[metric].column
    told = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        row = outcomes.get(trial.user_attrs.get(ATTR_RUN_ID))
        if row is None:
            continue
        state, value = STATE_OF_STATUS[row["status"]], row.get(column)
        if state is TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        study.tell(trial.number, value if state is TrialState.COMPLETE else None, state=state)
        told += 1
    return told


class MethodStudy:
    """One method's study. Pickled with the searcher's state: the sampler (its RNG continues
    where it was) and names; the ``optuna.Study`` (a database connection) is reopened lazily.

    The study's trials as last read are kept (:meth:`_all_trials`) until this object writes to
    the study again: this process is the study's only writer (its name carries the run instance,
    and one run holds its results folder's lock), so the list read after the last write is the
    storage's. The searcher asks every method whether it is startup-blocked on every free slot;
    with a storage round trip each, that was most of the driver's time between trials."""

    def __init__(
        self,
        plan: MethodPlan,
        *,
        storage: str,
        name: str,
        direction: str,
        sampler: optuna.samplers.BaseSampler,
        attrs: dict[str, Any],
    ) -> None:
        self.plan = plan
        self.storage = storage
        self.name = name
        self.direction = direction
        self.sampler = sampler
        self.attrs = attrs
        self._study: optuna.Study | None = None
        self._trials: dict[int, optuna.Trial] = {}
        self._frozen: list[optuna.trial.FrozenTrial] | None = None  # the trials as last read

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "_trials": {}, "_frozen": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_frozen", None)  # pickled before the trials were kept

    def rebind(self, storage: str) -> None:
        """Use ``storage`` from now on (a resumed run may name another URL for the same studies)."""
        if storage != self.storage:
            self.storage, self._study, self._trials, self._frozen = storage, None, {}, None

    def _all_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The study's trials, read again only after this object wrote to the study (:meth:`_wrote`)."""
        if self._frozen is None:
            self._frozen = self.study.get_trials(deepcopy=False)
        return self._frozen

    def _wrote(self) -> None:
        """Forget the trials read: this object changed the study (asked, labelled, reported, told)."""
        self._frozen = None

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            study = optuna.create_study(
                storage=optuna_storage(self.storage),
                study_name=self.name,
                sampler=self.sampler,
                direction=self.direction,
                load_if_exists=True,
            )
            if not study.get_trials(deepcopy=False):
                for key, value in self.attrs.items():
                    study.set_user_attr(key, value)
                # The papers' defaults (and the config's recipe) are the first trial.
                default = self.plan.default_point()
                if default:
                    study.enqueue_trial(default)
            self._study, self._frozen = study, None
        return self._study

    @property
    def settings(self) -> dict[str, Any]:
        """The sampler's settings (:func:`bench.search.space.sampler_settings`)."""
        return dict(self.attrs.get("sampler") or {"name": "random"})

    def _orphans(self, trials: list[optuna.trial.FrozenTrial], taken: set[int]) -> list[optuna.trial.FrozenTrial]:
        return [t for t in trials if t.state is TrialState.RUNNING and t.number not in taken]

    def _next_kind(self, trials: list[optuna.trial.FrozenTrial]) -> str:
        """What the next fresh ask will be, decided the way the sampler decides it: the enqueued
        default point while one waits, else a startup draw while fewer than ``n_startup_trials``
        trials are counted (:func:`bench.search.space.counted_trials`), else a model draw."""
        if any(t.state is TrialState.WAITING for t in trials):
            return DEFAULT
        startup = startup_count(self.settings)
        if startup is None or counted_trials(self.settings, trials) < startup:
            return STARTUP
        return MODEL

    def startup_blocked(self, taken: set[int]) -> bool:
        """Whether a new ask must wait: it would be a startup draw, and the trials running now
        (held in ``taken`` or not) would already bring the counted trials to ``n_startup_trials``
        if they end counted. This bounds the startup draws of a model-based sampler at any
        concurrency: ``n_startup_trials`` (less one for the default point, which counts too)
        plus one per trial that ended during startup without counting (FAIL; PRUNED for GP).
        Never for samplers without a model, the default point, or a trial to take up again."""
        startup = startup_count(self.settings)
        if startup is None:
            return False
        trials = self._all_trials()
        if self._orphans(trials, taken) or self._next_kind(trials) != STARTUP:
            return False
        running = sum(t.state is TrialState.RUNNING for t in trials)
        return counted_trials(self.settings, trials) + running >= startup

    def ask(self, taken: set[int]) -> tuple[int, dict[str, dict[str, Any]], str | None]:
        """A new trial's number, its config and its suggestion kind; a trial left RUNNING by an
        interrupted run that no Tune trial holds (numbers in ``taken`` are held) is taken up again
        first, so every trial is asked once (its kind is the one recorded when it was asked;
        ``None`` if the run died before recording it)."""
        study = self.study
        trials = self._all_trials()
        orphans = self._orphans(trials, taken)
        try:
            if orphans:
                # Re-attaching needs the storage's trial id, which Optuna exposes only as FrozenTrial._trial_id.
                trial = optuna.Trial(study, orphans[0]._trial_id)
                kind = orphans[0].user_attrs.get(ATTR_SUGGESTION_KIND)
            else:
                # Decided before the ask, on the trials the sampler sees when it samples (this
                # process is the study's only writer, and nothing ends between the two calls).
                kind = self._next_kind(trials)
                trial = study.ask()
                trial.set_user_attr(ATTR_SUGGESTION_KIND, kind)
            DefineByRun(self.plan.params)(trial)
        finally:
            self._wrote()
        self._trials[trial.number] = trial
        return trial.number, nested(trial.params), kind

    def _trial(self, number: int) -> optuna.Trial:
        if number not in self._trials:
            frozen = self._all_trials()[number]
            self._trials[number] = optuna.Trial(self.study, frozen._trial_id)
        return self._trials[number]

    def label(self, number: int, tune_trial_id: str, run_id: str) -> None:
        trial = self._trial(number)
        try:
            trial.set_user_attr(ATTR_TUNE_TRIAL, tune_trial_id)
            trial.set_user_attr(ATTR_RUN_ID, run_id)
        finally:
            self._wrote()

    def report(self, number: int, values: dict[int, float]) -> None:
        """Per-epoch values of the search metric (epoch → value; missing or NaN ones skipped),
        those the study does not hold yet."""
        frozen = self._all_trials()[number]
        if frozen.state is not TrialState.RUNNING:
            return
        try:
            for epoch, value in sorted(values.items()):
                if math.isfinite(value) and epoch not in frozen.intermediate_values:
                    self._trial(number).report(float(value), epoch)
        finally:
            self._wrote()

    def tell(self, number: int, state: TrialState, value: float | None) -> int:
        """Record the trial's outcome; returns the number that now holds it.

        Told twice (a trial Tune re-ran after a crash of the driver between telling Optuna and
        saving its own state) is a no-op. A FAILed trial that a ``--retry-failed`` run finished is
        added as a new trial marked ``retry_of``: Optuna never changes a finished state.
        """
        study = self.study
        frozen = self._all_trials()[number]
        if state is TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state, value = TrialState.FAIL, None
        if frozen.state is TrialState.RUNNING:
            try:
                study.tell(number, value if state is TrialState.COMPLETE else None, state=state)
            finally:
                self._wrote()
            return number
        if frozen.state is TrialState.FAIL and state is not TrialState.FAIL:
            self._wrote()
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    value=value if state is TrialState.COMPLETE else None,
                    params=frozen.params,
                    distributions=frozen.distributions,
                    intermediate_values=dict(frozen.intermediate_values) if state is TrialState.PRUNED else None,
                    user_attrs={**frozen.user_attrs, ATTR_RETRY_OF: number},
                )
            )
            return study.get_trials(deepcopy=False)[-1].number
        return number
