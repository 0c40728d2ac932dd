"""One searcher for the whole benchmark: every method's equal-budget search and its final seeds,
scheduled together in one Tune experiment.

Tune asks :meth:`BenchmarkSearcher.suggest` whenever a slot is free. The searcher routes the ask
to the method whose remaining *chain* is longest: a method's final seeds can only start once its
search has ended, so a method that still has search trials to issue has a search trial and then
a final run ahead of it, one after the other. Ties (equal chains) go to the method with the most
work not yet started (trials not issued × seconds per trial), then to config order: critical
path first, then longest work first, the classic list-scheduling rules for a short makespan.
Seconds per trial are the method's measured seconds per epoch × its epochs; before a method's
first trial ends, other methods' measured seconds per pass (or, before any ends, one unit per
pass) × its declared passes per step. So a costlier method (SAM's two passes per step) issues its
search first, its final seeds start early, and the run's tail is made of cheap trials:

* **search** trials come from the method's own Optuna study (:mod:`bench.search.studies`),
  exactly ``plan.budget.trials`` of them: the equal budget;
* **final** trials start as soon as the method's own search has ended (every search trial
  ended, its rows written by the sink callback): its top-k configs × the final seeds, minus
  those already recorded (:mod:`bench.search.finals`).

**Model-based search at any concurrency.** A model-based sampler (TPE, GP, CMA-ES) draws at
random while fewer than ``n_startup_trials`` of its study's trials have *ended* in a state it
counts (Optuna counts ended trials, not asked ones: with many slots, every ask would otherwise be
a random draw). The rule: a method is *startup-blocked* while its next ask would be such a
random draw and its running trials would, once ended, already bring its study to
``n_startup_trials``; a free slot then goes to another method that has work, and stays empty
(``suggest`` returns ``None``) only when none has. So at every concurrency a method's startup
trials, the default point included (it counts like any ended trial), number at most
``n_startup_trials`` plus one per trial that ended during startup without counting (FAIL, or
PRUNED under GP), and every later trial is a model draw; TPE's constant liar spreads those asked
while others run. Tune asks only when a slot can really start a trial: the driver sets the
concurrency to min(``search.max_concurrent_trials``, the slots the cluster's resources allow
now), re-read while the run goes (:meth:`BenchmarkSearcher.follow_cluster`: nodes that join
get trials within seconds), and :meth:`BenchmarkSearcher.suggest` keeps it. Each search
trial's config says how it was drawn (``suggestion_kind``: default, startup or model), and so
does its row.

When every method has issued all of its trials the searcher says ``FINISHED``; Tune ends the
experiment once the running ones end. Its state (tickets, samplers) is saved with Tune's
experiment state, so a resumed run continues the same studies.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher

from bench import metrics
from bench.config import BenchmarkConfig, ResourcesConfig
from bench.failures import InfrastructureBroken, trial_failure
from bench.plan import METHOD_KEY, ORDINAL_KEY, PHASE_KEY, SEED_KEY, SELECTED_KEY, SUGGESTION_KEY, MethodPlan
from bench.results.schema import FailureClass, Phase
from bench.search import finals
from bench.search.live import LIVE, LiveRun
from bench.search.runtime import trial_slots
from bench.search.space import make_sampler, sampler_settings
from bench.search.studies import MethodStudy, study_name
from bench.search.tickets import Ticket, TicketBook

#: Trials of one method lost to infrastructure faults (each replaced) before the run stops instead.
MAX_LOST_PER_METHOD = 3
#: Seconds between two reads of the cluster's resources (:meth:`BenchmarkSearcher.follow_cluster`).
RESIZE_S = 1.0


class BenchmarkSearcher(Searcher):
    """Routes Tune's asks to one Optuna study per method, then to its final runs.

    ``plans``: every method of the benchmark (config order). ``final_only``: no search this time
    (``sharpbench final``); the recorded search rows are the searches. ``sequential``: one method
    at a time, its search then its final runs, the next method only when all its trials ended
    (how sharpbench scheduled before; kept as the orchestration benchmark's baseline). ``max_concurrent`` is
    handled here (not by Ray's ``ConcurrencyLimiter``) so that a trial retried after a restore
    is still reported to this searcher and its study.
    """

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        plans: list[MethodPlan],
        config: BenchmarkConfig,
        storage: str,
        instance: str,
        final_only: bool,
        sequential: bool = False,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.order = [plan.regularizer for plan in plans]
        self.final_only = final_only
        self.sequential = sequential
        self.run_finals = bool(config.final.seeds)
        self.max_concurrent = 0  # 0: no limit of our own
        direction = "maximize" if mode == "max" else "minimize"
        self.studies: dict[str, MethodStudy] = {}
        if not final_only:
            for plan in plans:
                if plan.params:
                    settings = sampler_settings(config.search, plan.budget.trials)
                    self.studies[plan.regularizer] = MethodStudy(
                        plan,
                        storage=storage,
                        name=study_name(plan.benchmark, plan.regularizer, instance),
                        direction=direction,
                        sampler=make_sampler(settings),
                        attrs={
                            "benchmark": plan.benchmark,
                            "regularizer": plan.regularizer,
                            "instance": instance,
                            "metric": metric,
                            "sampler": settings,
                            "trials_planned": plan.budget.trials,
                        },
                    )
        #: Every Tune trial issued: its ticket, whether it ended or was lost to an infrastructure
        #: fault (ended, but no ticket of its method's budget; a replacement is issued in its place).
        self.book = TicketBook()
        #: Per method, once its search has ended: the final runs still to issue.
        self.final_queue: dict[str, list[finals.FinalRun]] = {}
        #: Per running search trial: its per-epoch values, written to its study when it ends.
        self.epoch_values: dict[str, dict[int, float]] = {}
        #: Per method: seconds per epoch of its ended trials (the cost the routing weighs).
        self.epoch_seconds: dict[str, list[float]] = {}
        #: Per method: forward + backward passes per step (the cost before any trial ends).
        self.passes = {plan.regularizer: plan.passes_per_step for plan in plans}
        #: False until the first ask has squared this state with the recorded rows (again after a restore).
        self.reconciled = False
        #: Final tickets' runs, by Tune trial id: a final run lost to a fault is queued again.
        self.final_runs: dict[str, finals.FinalRun] = {}

    # --- Tune's interface ------------------------------------------------------------------------

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def follow_cluster(self, resources: ResourcesConfig, cap: int | None) -> None:
        """Size the concurrency from the connected cluster while the run goes, not once at its
        start: the slots its resources hold now (re-read at most every :data:`RESIZE_S` seconds,
        so the slots of a node that joins fill within seconds), at most ``cap``
        (``search.max_concurrent_trials``). At least one trial is asked even when no node can
        run one yet: on an autoscaling cluster started with no workers, that pending trial is
        what makes the autoscaler add a node."""
        self.resources, self.cap = resources, cap or 0
        self.slots_read_at, self.slots = -math.inf, 1

    def _limit(self) -> int:
        """Trials in flight at once now (0: no limit of our own)."""
        resources = getattr(self, "resources", None)  # None: a fixed limit (set_max_concurrency)
        if resources is None:
            return self.max_concurrent
        now = time.monotonic()
        if not 0 <= now - self.slots_read_at < RESIZE_S:  # also after a restore in another process
            self.slots_read_at, self.slots = now, trial_slots(resources)
        return min(self.cap or self.slots, self.slots)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        live = LIVE.run
        for study in self.studies.values():
            study.rebind(live.optuna_storage)
        if not self.reconciled:
            self._count_recorded(live)
        limit = self._limit()
        if limit and len(self._running()) >= limit:
            return None
        ready = [method for method in self._open_methods() if self._has_work(method, live)]
        if not ready:
            # Not FINISHED while a trial runs: Tune never asks a finished searcher again, and a
            # trial lost to an infrastructure fault still needs its replacement.
            return Searcher.FINISHED if self._all_issued() and not self._running() else None
        method = max(ready, key=lambda m: (*self._priority(m, live), -self.order.index(m)))
        plan = live.plans[method]
        if self._issued(method, Phase.SEARCH) < self._search_budget(plan):
            return self._search_trial(trial_id, plan, live)
        return self._final_trial(trial_id, plan)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        ticket = self.book.tickets.get(trial_id)
        if ticket is None:
            return
        self.book.reopen(trial_id)  # a failed trial restarted by --retry-failed runs again
        if ticket.number is not None:
            self._hold_epochs(trial_id, result)

    def _hold_epochs(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep the search metric of every epoch ``result`` carries, for the trial's study.

        Held here and written with the trial's outcome: a storage write per epoch would sit on
        Tune's event loop, which every trial waits for after each report. A report may carry
        several epochs; a failure report's NaN is no value."""
        values = self.epoch_values.setdefault(trial_id, {})
        for epoch in metrics.epochs_of(result):
            value = epoch.get(self.metric)
            if value is not None and math.isfinite(float(value)):
                values[int(epoch.get(metrics.EPOCH, 0))] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        ticket = self.book.tickets.get(trial_id)
        if ticket is None:
            return
        self.book.end(trial_id)
        failure, text = self._failure(trial_id) if error else (None, "")
        if failure is FailureClass.INFRA:
            lost = self.book.lost_count(ticket.method)
            if lost >= MAX_LOST_PER_METHOD:
                # The environment is broken (a full disk, a node that keeps dying): replacing trials
                # would loop for ever. Stop the run; the same command resumes it once mended.
                raise InfrastructureBroken(
                    f"{lost + 1} trials of {ticket.method} were lost to infrastructure faults "
                    f"(the last: {text}); the run stops"
                )
            self._lose(trial_id, ticket)
            return
        # A trial that diverged ended itself (not an error to Tune) and said so in its last report.
        error = error or bool((result or {}).get(metrics.FAILURE_CLASS))
        seconds, epochs = (result or {}).get(metrics.WALL_SECONDS), (result or {}).get(metrics.EPOCH)
        if not error and seconds and epochs:
            self.epoch_seconds.setdefault(ticket.method, []).append(float(seconds) / float(epochs))
        if ticket.number is None:
            return
        # Tune hands a report that stops the trial (an ASHA rung, or max_t) to on_trial_complete
        # only, never to on_trial_result: its epochs are held here.
        self._hold_epochs(trial_id, result or {})
        value = (result or {}).get(self.metric)
        value = None if value is None or not math.isfinite(float(value)) else float(value)
        if error or value is None:
            state = TrialState.FAIL
        elif metrics.ran_all_epochs(result or {}):
            state = TrialState.COMPLETE
        else:
            state = TrialState.PRUNED
        study = self.studies[ticket.method]
        # The epochs now (they change no state); the outcome once the trial's row is written: Tune
        # tells the searcher before the sink callback writes it (bench.search.live.LiveRun.after_row).
        study.report(ticket.number, self.epoch_values.pop(trial_id, {}))

        def tell() -> None:
            number = study.tell(ticket.number, state, value)
            if number != ticket.number:
                self.book.issue(trial_id, Ticket(ticket.method, ticket.phase, number))

        LIVE.run.after_row(trial_id, tell)

    @staticmethod
    def _failure(trial_id: str) -> tuple[FailureClass, str]:
        """How a trial Tune reports as errored failed, and why. Tune tells the searcher before the
        callbacks, by id only; the trial (from Tune's list, which the sink callback shares through
        the live run) holds the exception Tune already saved in its folder."""
        trial = next((t for t in LIVE.run.trials if t.trial_id == trial_id), None) if LIVE.bound else None
        return trial_failure(trial) if trial is not None else (FailureClass.ERROR, "unknown")

    def _lose(self, trial_id: str, ticket: Ticket) -> None:
        """A trial lost to an infrastructure fault: not the method's result, so not one of its
        budget's trials. Its ticket stops counting (:meth:`_issued`), so the method's next ask
        is its replacement: for a search trial the same study trial, left RUNNING and untold,
        which :meth:`MethodStudy.ask` takes up again as an orphan; a final run is queued again."""
        self.book.lose(trial_id)
        if LIVE.bound:
            LIVE.run.lost_to_infra.add(trial_id)
        self.epoch_values.pop(trial_id, None)
        run = self.final_runs.pop(trial_id, None)
        if run is not None and ticket.method in self.final_queue:
            self.final_queue[ticket.method].insert(0, run)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        if "book" not in state:  # saved before the ticket book: tickets, ended and lost kept apart
            state["book"] = TicketBook.of(state.pop("tickets"), state.pop("ended"), state.pop("lost", set()))
        self.__dict__.update(state)
        self.__dict__.setdefault("final_runs", {})
        self.reconciled = False

    def _count_recorded(self, live: LiveRun) -> None:
        """Square this state with the rows (``live.recorded``), once per process.

        Tune saves its state every few seconds; trials that started after the last save and
        ended before the driver died have rows, and Tune will never run them again (nor any
        trial, when the driver died before Tune saved one: the experiment then starts afresh).
        They count against their method's budget as ended tickets (else the method would get
        more trials than the others), and a final run recorded that way leaves its method's
        queue. A trial Tune does restore keeps its ticket: it runs again and ends as its row
        says (:class:`bench.search.scheduler.PerMethodScheduler`)."""
        self.reconciled = True
        for trial_id, row in live.recorded.items():
            if trial_id in self.book.tickets or row.method not in self.passes:
                continue
            self.book.issue(
                trial_id,
                Ticket(
                    row.method,
                    row.phase,
                    selected_run_id=row.selected_run_id,
                    seed=row.seed if row.phase == Phase.FINAL.value else None,
                ),
            )
            self.book.end(trial_id)
            if row.failure_class == FailureClass.INFRA.value:
                self.book.lose(trial_id)
                live.lost_to_infra.add(trial_id)
        for method, queue in self.final_queue.items():
            done = self._final_runs_issued(method)
            self.final_queue[method] = [run for run in queue if (run.selected.run_id, run.seed) not in done]

    # --- bookkeeping -----------------------------------------------------------------------------

    def _priority(self, method: str, live: LiveRun) -> tuple[float, float]:
        """(remaining chain, work not yet started) of ``method``, in estimated seconds: the chain
        is a search trial then a final run while search trials are left to issue (the finals wait
        for the search), a final run once only finals are left; the work is every trial not yet
        issued. Both × the method's estimated seconds per trial."""
        plan = live.plans[method]
        searching = max(0, self._search_budget(plan) - self._issued(method, Phase.SEARCH))
        finals_left = 0
        if self.run_finals:
            queued = self.final_queue.get(method)
            finals_left = len(queued) if queued is not None else live.config.final.top_k * len(live.config.final.seeds)
        chain = (1 if searching else 0) + (1 if finals_left else 0)
        trial = self._seconds_per_epoch(method) * plan.budget.epochs
        return chain * trial, (searching + finals_left) * trial

    def _seconds_per_epoch(self, method: str) -> float:
        """The median of the method's ended trials; before one ends, the median seconds per pass
        of every ended trial (1 before any) × the method's passes per step."""
        own = self.epoch_seconds.get(method)
        if own:
            return statistics.median(own)
        per_pass = [s / self.passes[m] for m, values in self.epoch_seconds.items() for s in values]
        return (statistics.median(per_pass) if per_pass else 1.0) * self.passes[method]

    def _search_budget(self, plan: MethodPlan) -> int:
        return 0 if self.final_only else plan.budget.trials

    def _issued(self, method: str, phase: Phase) -> int:
        """Tickets of the method's budget: a trial lost to an infrastructure fault is none."""
        return self.book.issued(method, phase)

    def _next_ordinal(self, method: str, phase: Phase) -> int:
        """The next trial's place among the method × phase's trials (lost ones count: each
        trial's number stays its own); its MLflow run is named by it."""
        return self.book.ordinal(method, phase)

    def _running(self) -> list[str]:
        return self.book.running()

    def _final_runs_issued(self, method: str) -> set[tuple[str | None, int | None]]:
        """(selected run, seed) of the method's final tickets that count (lost ones do not)."""
        return {
            (t.selected_run_id, t.seed)
            for trial_id, t in self.book.tickets.items()
            if t.method == method and t.phase == Phase.FINAL.value and trial_id not in self.book.lost
        }

    def _open_methods(self) -> list[str]:
        """Methods that may start trials now: all of them, or (sequential) the first not done."""
        if not self.sequential:
            return self.order
        for method in self.order:
            mine = [trial_id for trial_id, t in self.book.tickets.items() if t.method == method]
            queued = self.final_queue.get(method)
            finals_left = self.run_finals and (queued is None or bool(queued))
            searching = self._issued(method, Phase.SEARCH) < self._search_budget(LIVE.run.plans[method])
            if searching or finals_left or any(trial_id not in self.book.ended for trial_id in mine):
                return [method]
        return []

    def _search_ended(self, method: str) -> bool:
        return self.book.search_ended(method)

    def _taken(self, method: str) -> set[int]:
        """The study trial numbers that this searcher's tickets hold. A trial lost to an
        infrastructure fault holds none: its replacement takes its study trial up again (an orphan)."""
        return self.book.taken(method)

    def _has_work(self, method: str, live: LiveRun) -> bool:
        plan = live.plans[method]
        if self._issued(method, Phase.SEARCH) < self._search_budget(plan):
            study = self.studies.get(method)
            # Startup-blocked: another random draw would exceed the bound (MethodStudy.startup_blocked).
            return study is None or not study.startup_blocked(self._taken(method))
        if not self.run_finals or not self._search_ended(method):
            return False
        if method not in self.final_queue:
            self._plan_finals(plan, live)
        return bool(self.final_queue[method])

    def _plan_finals(self, plan: MethodPlan, live: LiveRun) -> None:
        """The method's search has ended (its rows are written): queue its final runs."""
        rows = finals.results_rows(live.results_dir, live.config.benchmark)
        issued = self._final_runs_issued(plan.regularizer)
        queue = [
            run
            for run in finals.missing_finals(plan, rows, live.config)
            if (run.selected.run_id, run.seed) not in issued
        ]
        self.final_queue[plan.regularizer] = queue
        if live.progress is not None:
            live.progress.phase_started(
                plan.regularizer, Phase.FINAL.value, len(finals.planned_finals(plan, rows, live.config))
            )

    def _all_issued(self) -> bool:
        return all(
            self._issued(method, Phase.SEARCH) >= self._search_budget(LIVE.run.plans[method])
            and (not self.run_finals or (method in self.final_queue and not self.final_queue[method]))
            for method in self.order
        )

    def _search_trial(self, trial_id: str, plan: MethodPlan, live: LiveRun) -> dict[str, Any]:
        method = plan.regularizer
        if self._issued(method, Phase.SEARCH) == 0 and live.progress is not None:
            live.progress.phase_started(method, Phase.SEARCH.value, plan.budget.trials)
        config: dict[str, Any] = {
            METHOD_KEY: method,
            PHASE_KEY: Phase.SEARCH.value,
            ORDINAL_KEY: self._next_ordinal(method, Phase.SEARCH),
        }
        number = None
        study = self.studies.get(method)
        if study is not None:
            number, values, kind = study.ask(self._taken(method))
            study.label(number, trial_id, f"{plan.search_name(Phase.SEARCH.value)}/{trial_id}")
            config.update(values)
            config[SUGGESTION_KEY] = kind
        self.book.issue(trial_id, Ticket(method, Phase.SEARCH.value, number))
        return config

    def _final_trial(self, trial_id: str, plan: MethodPlan) -> dict[str, Any]:
        run = self.final_queue[plan.regularizer].pop(0)
        ordinal = self._next_ordinal(plan.regularizer, Phase.FINAL)
        self.final_runs[trial_id] = run
        self.book.issue(
            trial_id, Ticket(plan.regularizer, Phase.FINAL.value, selected_run_id=run.selected.run_id, seed=run.seed)
        )
        return {
            METHOD_KEY: plan.regularizer,
            PHASE_KEY: Phase.FINAL.value,
            ORDINAL_KEY: ordinal,
            SELECTED_KEY: run.selected.to_tune(),
            SEED_KEY: run.seed,
        }
