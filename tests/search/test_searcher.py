"""The routing searcher and its persisted Optuna studies, driven the way Tune drives them
(suggest, per-epoch results, completion, save/restore), without a Ray runtime: every figure is
read back from the study storage (a real sqlite file) by a fresh Optuna client."""

from __future__ import annotations

import collections
import dataclasses
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from bench import metrics
from bench.config import parse_config
from bench.plan import METHOD_KEY, ORDINAL_KEY, PHASE_KEY, SUGGESTION_KEY, plan_methods
from bench.search.live import LIVE, LiveRun
from bench.search.searcher import BenchmarkSearcher
from bench.search.studies import ATTR_RETRY_OF, ATTR_RUN_ID, ATTR_TUNE_TRIAL, default_storage, load_study, study_name

EPOCHS = 4


def _config(trials: int = 3, sampler: str = "tpe", **overrides):
    raw = {
        "benchmark": "unit",
        "model": {"name": "mlp"},
        "training": {"epochs": EPOCHS, "learning_rate": 0.05},
        "search": {
            "trials_per_method": trials,
            "sampler": sampler,
            "space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}},
        },
        # Two methods of equal cost per step (routing by cost: test_a_costlier_method_issues_its_search_first).
        "regularizers": [
            "erm",
            {"name": "weight_decay", "space": {"penalty_weight": {"low": 1e-5, "high": 1e-2, "log": True}}},
        ],
        "final": {"seeds": []},
    }
    raw.update(overrides)
    return parse_config(raw)


@pytest.fixture
def live(tmp_path):
    config = _config()
    run = LiveRun(
        config=config,
        plans={p.regularizer: p for p in plan_methods(config)},
        results_dir=tmp_path,
        tracking_uri="",
        optuna_storage=default_storage(tmp_path),
        instance="i1",
    )
    LIVE.bind(run)
    yield run
    LIVE.bind(None)


def _searcher(run: LiveRun) -> BenchmarkSearcher:
    return BenchmarkSearcher(
        metric=metrics.VAL_ACCURACY,
        mode="max",
        plans=list(run.plans.values()),
        config=run.config,
        storage=run.optuna_storage,
        instance=run.instance,
        final_only=False,
    )


def _study(run: LiveRun, method: str) -> optuna.Study:
    """The study as any other reader (optuna-dashboard) sees it: a fresh client on the storage."""
    return load_study(run.optuna_storage, study_name(run.config.benchmark, method, run.instance))


def _end(searcher: BenchmarkSearcher, trial_id: str, **outcome) -> None:
    """Tune's end of a trial: the searcher hears of it, then the sink writes its row."""
    searcher.on_trial_complete(trial_id, **outcome)
    LIVE.run.row_written(trial_id)


def _report(searcher: BenchmarkSearcher, trial_id: str, epochs: int, value=lambda e: 0.5 + 0.1 * e) -> dict:
    result = {}
    for epoch in range(1, epochs + 1):
        result = {metrics.EPOCH: epoch, metrics.EPOCHS_PLANNED: EPOCHS, metrics.VAL_ACCURACY: value(epoch)}
        searcher.on_trial_result(trial_id, result)
    return result


@pytest.mark.parametrize(
    ("last_epoch", "error", "expected"),
    [(EPOCHS, False, TrialState.COMPLETE), (2, False, TrialState.PRUNED), (1, True, TrialState.FAIL)],
)
def test_each_trial_reaches_its_study_with_its_true_state(live, last_epoch, error, expected):
    searcher = _searcher(live)
    config = searcher.suggest("t1")
    assert config[METHOD_KEY] == "erm" and config[PHASE_KEY] == "search"
    result = _report(searcher, "t1", last_epoch)
    _end(searcher, "t1", result=result, error=error)
    (trial,) = _study(live, "erm").trials
    assert trial.state == expected
    # Values are stored as given (sqlite REAL is a float64): exact.
    assert trial.intermediate_values == {e: 0.5 + 0.1 * e for e in range(1, last_epoch + 1)}
    assert trial.user_attrs[ATTR_TUNE_TRIAL] == "t1" and trial.user_attrs[ATTR_RUN_ID] == "unit-erm-search/t1"
    if expected is TrialState.COMPLETE:
        assert trial.value == 0.5 + 0.1 * EPOCHS
    if expected is TrialState.PRUNED:  # Optuna ranks a pruned trial by its last intermediate value
        assert trial.value == 0.5 + 0.1 * last_epoch


def test_a_nan_result_is_a_failed_trial_not_a_value(live):
    searcher = _searcher(live)
    searcher.suggest("t1")
    result = _report(searcher, "t1", EPOCHS, value=lambda e: float("nan"))
    _end(searcher, "t1", result=result)
    assert _study(live, "erm").trials[0].state is TrialState.FAIL


def test_methods_are_interleaved_and_budgets_are_exact(live):
    searcher = _searcher(live)
    issued = [searcher.suggest(f"t{i}") for i in range(4)]
    # 3 trials, 2 startup trials (default point + 1 draw) each: both methods are startup-blocked
    # while those run, and the free slot waits.
    assert searcher.suggest("t4") is None
    for i in range(len(issued)):
        _end(searcher, f"t{i}", result=_report(searcher, f"t{i}", EPOCHS))
    issued += [searcher.suggest(f"t{i}") for i in range(4, 6)]
    # Equal chains and costs: the method with the most work not yet issued goes next, so they alternate.
    assert [c[METHOD_KEY] for c in issued] == ["erm", "weight_decay"] * 3
    assert [c[SUGGESTION_KEY] for c in issued] == ["default"] * 2 + ["startup"] * 2 + ["model"] * 2
    assert [c[ORDINAL_KEY] for c in issued] == [0, 0, 1, 1, 2, 2]  # each method's own count: its runs' t000, ...
    # Budgets spent and no final seeds configured: no more trials. FINISHED only once the running
    # ones ended (one lost to an infrastructure fault would still need its replacement).
    assert searcher.suggest("t6") is None
    for i in (4, 5):
        _end(searcher, f"t{i}", result=_report(searcher, f"t{i}", EPOCHS))
    assert searcher.suggest("t6") == Searcher.FINISHED
    for i in range(4, len(issued)):
        _end(searcher, f"t{i}", result=_report(searcher, f"t{i}", EPOCHS))
    for method, plan in live.plans.items():
        trials = _study(live, method).trials
        assert len(trials) == plan.budget.trials == 3
        assert all(t.state is TrialState.COMPLETE for t in trials)


def test_the_default_point_is_each_studys_first_trial(live):
    searcher = _searcher(live)
    first = {c[METHOD_KEY]: c for c in (searcher.suggest("a"), searcher.suggest("b"))}
    for method, config in first.items():
        flat = {
            f"{namespace}/{name}": value
            for namespace, values in config.items()
            if isinstance(values, dict)
            for name, value in values.items()
        }
        assert flat == live.plans[method].default_point()


def test_concurrency_limit_is_kept_by_the_searcher(live):
    searcher = _searcher(live)
    assert searcher.set_max_concurrency(2) is True  # Ray's ConcurrencyLimiter then passes through
    assert searcher.suggest("a") is not None and searcher.suggest("b") is not None
    assert searcher.suggest("c") is None
    _end(searcher, "a", result=_report(searcher, "a", EPOCHS))
    assert searcher.suggest("c") is not None


def test_same_sampler_seed_gives_the_same_configs(tmp_path, live):
    first = [_searcher(live).suggest(f"t{i}") for i in range(1)]
    other = dataclasses.replace(live, optuna_storage=default_storage(tmp_path / "other"), instance="i2")
    (tmp_path / "other").mkdir()
    LIVE.bind(other)
    second = [_searcher(other).suggest(f"t{i}") for i in range(1)]
    assert first == second


def _drive(searcher, ids, complete=True):
    configs = {}
    for trial_id in ids:
        configs[trial_id] = searcher.suggest(trial_id)
        if complete:
            _end(
                searcher,
                trial_id,
                result=_report(searcher, trial_id, EPOCHS, value=lambda e, t=trial_id: 0.1 * e + 0.01 * int(t[1:])),
            )
    return configs


def test_a_restored_searcher_continues_the_same_studies_and_sequence(tmp_path, live):
    ids = [f"t{i}" for i in range(6)]
    # Uninterrupted reference, in its own storage.
    reference_run = dataclasses.replace(live, optuna_storage=default_storage(tmp_path / "ref"))
    (tmp_path / "ref").mkdir()
    LIVE.bind(reference_run)
    reference = _drive(_searcher(reference_run), ids)

    LIVE.bind(live)
    searcher = _searcher(live)
    before = _drive(searcher, ids[:3])
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = _searcher(live)  # what Tune's restore builds: a pristine searcher, then its saved state
    restored.restore(str(tmp_path / "searcher.pkl"))
    after = _drive(restored, ids[3:])
    assert {**before, **after} == reference
    counts = collections.Counter(c[METHOD_KEY] for c in reference.values())
    for method in live.plans:
        trials = _study(live, method).trials
        assert len(trials) == counts[method] == 3  # every trial once
        assert [t.user_attrs[ATTR_TUNE_TRIAL] for t in trials] == [i for i in ids if reference[i][METHOD_KEY] == method]


def test_a_trial_asked_after_the_last_snapshot_is_taken_up_again_not_asked_twice(tmp_path, live):
    """kill -9 after the study recorded a new trial but before Tune saved the searcher: the
    restored searcher re-attaches that RUNNING trial (same values) instead of asking a new one."""
    searcher = _searcher(live)
    before = _drive(searcher, ["t0", "t1"])
    searcher.save(str(tmp_path / "searcher.pkl"))
    lost = searcher.suggest("t2")  # then the driver dies: no snapshot names t2
    restored = _searcher(live)
    restored.restore(str(tmp_path / "searcher.pkl"))
    again = restored.suggest("t2b")
    assert again == lost
    _end(restored, "t2b", result=_report(restored, "t2b", EPOCHS))
    trials = _study(live, lost[METHOD_KEY]).trials
    assert len(trials) == 1 + sum(c[METHOD_KEY] == lost[METHOD_KEY] for c in before.values())  # t2 once
    assert trials[-1].state is TrialState.COMPLETE and trials[-1].user_attrs[ATTR_TUNE_TRIAL] == "t2b"


def test_a_failed_trial_that_a_retry_finishes_is_added_not_rewritten(live):
    searcher = _searcher(live)
    searcher.suggest("t1")
    _end(searcher, "t1", result=_report(searcher, "t1", 1), error=True)
    # --retry-failed: Tune runs t1 again from its checkpoint; it reports and completes.
    _end(searcher, "t1", result=_report(searcher, "t1", EPOCHS))
    failed, retried = _study(live, "erm").trials
    assert failed.state is TrialState.FAIL
    assert retried.state is TrialState.COMPLETE and retried.value == 0.5 + 0.1 * EPOCHS
    assert retried.user_attrs[ATTR_RETRY_OF] == failed.number and retried.params == failed.params
    # Told twice (the driver died between telling Optuna and saving its state): nothing changes.
    _end(searcher, "t1", result=_report(searcher, "t1", EPOCHS))
    assert len(_study(live, "erm").trials) == 2


def _bound(tmp_path, config) -> LiveRun:
    run = LiveRun(
        config=config,
        plans={p.regularizer: p for p in plan_methods(config)},
        results_dir=tmp_path,
        tracking_uri="",
        optuna_storage=default_storage(tmp_path),
        instance="i1",
    )
    LIVE.bind(run)
    return run


def test_a_costlier_method_issues_its_search_first(tmp_path):
    """Before any trial has ended, cost is the declared passes per step: SAM's 4 against 2 for
    ERM and weight decay. SAM's chain (a search trial, then its final runs) is the longest, so
    all its search trials are issued first; then the two equal methods alternate. Once trials
    end, measured seconds per epoch replace the declared cost: weight decay measured 3× slower
    than ERM per epoch goes first."""
    sam = {"name": "sam", "space": {"perturbation_radius": {"low": 0.02, "high": 0.2, "log": True}}}
    # Random search: routing alone, no method is ever startup-blocked (test_startup_rule.py).
    config = _config(trials=4, sampler="random", regularizers=["erm", "weight_decay", sam])
    run = _bound(tmp_path, config)
    try:
        searcher = _searcher(run)
        first = [searcher.suggest(f"t{i}")[METHOD_KEY] for i in range(6)]
        assert first == ["sam"] * 4 + ["erm", "weight_decay"]
        for trial_id, per_epoch in (("t4", 1.0), ("t5", 3.0)):  # erm 1 s per epoch, weight decay 3 s
            result = _report(searcher, trial_id, EPOCHS)
            _end(searcher, trial_id, result={**result, metrics.WALL_SECONDS: per_epoch * EPOCHS})
        then = [searcher.suggest(f"n{i}")[METHOD_KEY] for i in range(6)]
        assert then == ["weight_decay"] * 3 + ["erm"] * 3
        assert searcher.suggest("n6") is None  # all issued; FINISHED once the running trials end
        for trial_id in [f"t{i}" for i in range(4)] + [f"n{i}" for i in range(6)]:
            _end(searcher, trial_id, result=_report(searcher, trial_id, EPOCHS))
        assert searcher.suggest("n6") == Searcher.FINISHED
    finally:
        LIVE.bind(None)


def test_an_unmeasured_method_is_costed_from_the_others_seconds_per_pass(tmp_path):
    """Before any trial ends, a step costs one unit per declared pass. Then a method not yet
    measured is priced at the median measured seconds per pass × its passes: ERM at 1 s and
    weight decay at 1.5 s per epoch (2 passes each) price an unmeasured SAM epoch (4 passes) at
    4 × median(0.5, 0.75) = 2.5 s."""
    sam = {"name": "sam", "space": {"perturbation_radius": {"low": 0.02, "high": 0.2, "log": True}}}
    run = _bound(tmp_path, _config(trials=3, sampler="random", regularizers=["erm", "weight_decay", sam]))
    try:
        searcher = _searcher(run)
        assert [searcher._seconds_per_epoch(m) for m in ("erm", "weight_decay", "sam")] == [2.0, 2.0, 4.0]
        issued = {searcher.suggest(f"t{i}")[METHOD_KEY]: f"t{i}" for i in range(5)}  # sam ×3, then erm, weight decay
        for method, per_epoch in (("erm", 1.0), ("weight_decay", 1.5)):
            result = _report(searcher, issued[method], EPOCHS)
            _end(searcher, issued[method], result={**result, metrics.WALL_SECONDS: per_epoch * EPOCHS})
        assert searcher._seconds_per_epoch("erm") == 1.0 and searcher._seconds_per_epoch("weight_decay") == 1.5
        assert searcher._seconds_per_epoch("sam") == pytest.approx(2.5, rel=1e-12)
    finally:
        LIVE.bind(None)


@pytest.mark.parametrize(("stopped_at", "expected"), [(EPOCHS, TrialState.COMPLETE), (3, TrialState.PRUNED)])
def test_a_report_that_carries_earlier_epochs_gives_the_study_every_epoch(live, stopped_at, expected):
    """A trial reports only at ASHA rungs, checkpoints and its end (bench.search.reporting): the
    epochs in between ride in the next report and still reach the study, one value each. As Tune
    does, the report that stops the trial (ASHA at a rung, or at max_t) goes to on_trial_complete
    only: its epochs count too, and a pruned trial's value is its last epoch's."""
    searcher = _searcher(live)
    method = searcher.suggest("t1")[METHOD_KEY]
    epochs = [
        {metrics.EPOCH: e, metrics.EPOCHS_PLANNED: EPOCHS, metrics.VAL_ACCURACY: 0.5 + 0.1 * e}
        for e in range(1, EPOCHS + 1)
    ]
    searcher.on_trial_result("t1", metrics.batched(epochs[:1]))  # epoch 1 alone (a rung)
    stopping = metrics.batched(epochs[1:stopped_at])  # epochs 2.. ride with the stopping epoch
    assert [e[metrics.EPOCH] for e in metrics.epochs_of(stopping)] == list(range(2, stopped_at + 1))
    _end(searcher, "t1", result=stopping)
    (trial,) = _study(live, method).trials
    assert trial.state is expected
    assert trial.intermediate_values == {e: 0.5 + 0.1 * e for e in range(1, stopped_at + 1)}
    assert trial.value == 0.5 + 0.1 * stopped_at  # stored as given (sqlite REAL is a float64): exact


def test_a_relative_sqlite_storage_is_made_absolute(tmp_path, monkeypatch):
    """SQLite opens a relative path from the current folder: the run stores and prints it absolute,
    so the optuna-dashboard command it prints works from anywhere. Other URLs pass unchanged."""
    from bench.search.studies import absolute_storage

    monkeypatch.chdir(tmp_path)
    assert absolute_storage("sqlite:///rel/o.db") == f"sqlite:///{tmp_path.resolve()}/rel/o.db"
    assert absolute_storage("rel/o.journal") == f"{tmp_path.resolve()}/rel/o.journal"
    for url in ("sqlite:////abs/o.db", "postgresql+psycopg://user:secret@host/db", "sqlite://", "/abs/o.journal"):
        assert absolute_storage(url) == url


def test_the_default_storage_is_a_journal_unless_the_folder_began_with_sqlite(tmp_path):
    """A new results folder gets an Optuna journal; one whose runs began with ``optuna.db`` keeps
    it (its studies are there, and a resumed run must continue them)."""
    from bench.search.studies import default_storage
    from bench.stores import journal_path, sqlite_path

    fresh, legacy, both = tmp_path / "fresh", tmp_path / "legacy", tmp_path / "both"
    assert journal_path(default_storage(fresh)) == fresh.resolve() / "optuna.journal"
    legacy.mkdir()
    sqlite3.connect(legacy / "optuna.db").close()
    assert sqlite_path(default_storage(legacy)) == legacy.resolve() / "optuna.db"
    both.mkdir()
    (both / "optuna.db").touch()
    (both / "optuna.journal").touch()
    assert journal_path(default_storage(both)) == both.resolve() / "optuna.journal"


def test_trials_that_ended_after_the_last_snapshot_count_against_the_budget(tmp_path, live):
    """kill -9 after two more trials ended (rows written, study told) but before Tune saved its
    state again: Tune never runs them again, so the restored searcher must count them from the
    rows, or their methods get more trials than the others (seen: 7 and 8 of a budget of 6)."""
    from bench.search.finals import RecordedTrial

    searcher = _searcher(live)
    _drive(searcher, ["t0", "t1"])
    searcher.save(str(tmp_path / "searcher.pkl"))
    after = _drive(searcher, ["t2", "t3"])  # ended after the snapshot
    live.recorded = {
        trial_id: RecordedTrial(config[METHOD_KEY], "search", "completed", EPOCHS, None, 0)
        for trial_id, config in after.items()
    }
    restored = _searcher(live)
    restored.restore(str(tmp_path / "searcher.pkl"))
    resumed = _drive(restored, [f"r{i}" for i in range(6)])
    issued = [config for config in resumed.values() if isinstance(config, dict)]
    assert len(issued) == 2 and list(resumed.values())[-1] == Searcher.FINISHED  # 6 planned − 4 already ended
    for method in live.plans:
        trials = _study(live, method).trials
        assert len(trials) == 3 and all(t.state is TrialState.COMPLETE for t in trials)  # the budget, each once


def test_a_studys_trials_are_read_once_between_its_writes(live, monkeypatch):
    """The searcher asks every method whether it is startup-blocked on every free slot: the
    study's trials are read from the storage once, and again only after the study changed here
    (asked, told), so what the searcher decides on is always the storage's state."""
    import pickle

    searcher = _searcher(live)
    study = searcher.studies["erm"]
    study.study  # noqa: B018 - created (and its default point enqueued) before counting
    reads = collections.Counter()
    get_trials = optuna.Study.get_trials

    def counted(self, *args, **kwargs):
        reads[self.study_name] += 1
        return get_trials(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "get_trials", counted)
    name = study.name

    def fresh() -> list:
        """The storage's trials, as a study object that kept nothing (unpickled) reads them."""
        return pickle.loads(pickle.dumps(study))._all_trials()

    for _ in range(5):
        study.startup_blocked(set())
    assert reads[name] == 1  # one read for five questions

    number, _, _ = study.ask(set())
    study.label(number, "t1", "unit/erm/search/t1")
    study.startup_blocked({number})
    assert reads[name] == 2  # read again after the ask: the new trial is seen running
    assert [t.state for t in study._all_trials()] == [t.state for t in fresh()] == [TrialState.RUNNING]

    study.report(number, {1: 0.5, 2: 0.6})
    study.tell(number, TrialState.COMPLETE, 0.6)
    study.startup_blocked(set())
    ours = study._all_trials()
    theirs = fresh()
    assert [t.state for t in ours] == [t.state for t in theirs] == [TrialState.COMPLETE]
    assert ours[0].intermediate_values == theirs[0].intermediate_values == {1: 0.5, 2: 0.6}
    assert ours[0].user_attrs[ATTR_TUNE_TRIAL] == "t1"


def test_a_study_hears_a_trials_outcome_only_once_its_row_is_written(live):
    """Tune tells the searcher of an ended trial before the sink writes its row; a kill -9 in
    between must not leave a study trial told with no row (the resumed run would run a
    replacement and the study would hold one trial more than the rows: seen in CI)."""
    searcher = _searcher(live)
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", result=_report(searcher, "t1", 2))
    (trial,) = _study(live, "erm").trials
    assert trial.state is TrialState.RUNNING
    assert trial.intermediate_values == {1: 0.6, 2: 0.7}  # the epochs are there already
    live.row_written("t1")
    (trial,) = _study(live, "erm").trials
    assert trial.state is TrialState.PRUNED and trial.value == 0.7
    live.row_written("t1")  # a row written again (a restored trial ended as its row says): nothing more
    assert len(_study(live, "erm").trials) == 1


def _row(run_id: str, status: str, value: float | None, failure_class: str | None = None) -> dict:
    return {
        "run_id": run_id,
        "phase": "search",
        "status": status,
        metrics.VAL_ACCURACY: value,
        "failure_class": failure_class,
    }


@pytest.fixture
def random_live(tmp_path):
    """A live run whose searches are random: no startup rule holds an ask back."""
    yield _bound(tmp_path, _config(sampler="random"))
    LIVE.bind(None)


def test_a_trial_killed_between_its_row_and_its_tell_is_told_from_its_row(random_live):
    """The resumed run squares each study with the rows before anything reads it: a running
    trial with a row ends as the row says; one lost to infrastructure, or without a row, stays
    running (the replacement takes it up again)."""
    from bench.search.studies import tell_recorded

    live = random_live
    searcher = _searcher(live)
    method = {f"t{i}": searcher.suggest(f"t{i}")[METHOD_KEY] for i in range(6)}
    for i in range(6):
        searcher.on_trial_complete(f"t{i}", result=_report(searcher, f"t{i}", EPOCHS if i in (0, 3) else 2))
    # ... and the driver dies before any row is written but these:
    rows = [
        _row(f"unit-{method['t0']}-search/t0", "completed", 0.9),
        _row(f"unit-{method['t2']}-search/t2", "stopped", 0.7),
        _row(f"unit-{method['t4']}-search/t4", "failed", None, "diverged"),
        _row(f"unit-{method['t1']}-search/t1", "failed", None, "infra"),
        _row(f"unit-{method['t3']}-search/t3", "completed", float("nan")),
    ]
    told = sum(
        tell_recorded(live.optuna_storage, study_name("unit", m, live.instance), rows, metrics.VAL_ACCURACY)
        for m in ("erm", "weight_decay")
    )
    assert told == 4
    assert tell_recorded(live.optuna_storage, study_name("unit", "erm", "i1"), rows, metrics.VAL_ACCURACY) == 0
    states = {
        t.user_attrs[ATTR_TUNE_TRIAL]: (t.state, t.value)
        for method in ("erm", "weight_decay")
        for t in _study(live, method).trials
    }
    assert states == {
        "t0": (TrialState.COMPLETE, 0.9),
        "t2": (TrialState.PRUNED, 0.5 + 0.1 * 2),  # Optuna ranks a pruned trial by its last epoch
        "t4": (TrialState.FAIL, None),
        "t1": (TrialState.RUNNING, None),  # lost to infrastructure: its replacement takes it up
        "t3": (TrialState.FAIL, None),  # a completed row without a finite value is no value
        "t5": (TrialState.RUNNING, None),  # no row: runs again
    }
    assert tell_recorded(live.optuna_storage, "no/such@study", rows, metrics.VAL_ACCURACY) == 0
