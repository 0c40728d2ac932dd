"""What a benchmark run prints: third-party noise filtered, progress per method, an ETA.

No Ray, Optuna or MLflow imports here: :func:`quiet_third_party` configures them through the
standard ``logging``/``warnings`` machinery and the environment variables they read at run time,
and :class:`RunProgress` only formats what the search tells it.

Verbosity levels (``sharpbench run --quiet / --verbose``):

* ``quiet``: nothing while trials run; the leaderboard and the commands to open the results.
* ``normal``: a banner, one header per phase in order (the methods and their trials), one line
  per finished trial (method k/M, trials done/planned, sampled hyperparameters, result, overall
  ETA), a live table of per-method bars on a terminal and a heartbeat line every 30 s when
  output goes to a pipe or a file. A run with nothing left to do says so.
* ``verbose``: as normal, and third-party output is left as the libraries print it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Verbosity(str, Enum):
    quiet = "quiet"
    normal = "normal"
    verbose = "verbose"


@dataclass(frozen=True)
class Output:
    """Where a command's lines go: results to ``out``, warnings and errors to ``err``.

    Text is printed as it is: a path or a config value with [brackets] is no markup, "host:1234:"
    no emoji, and a line is never wrapped, so a printed command can be pasted.
    """

    out: Console
    err: Console

    @classmethod
    def standard(cls) -> Output:
        """stdout and stderr; piped output (CI logs, files) gets wide tables, not rich's 80 columns."""

        def console(stderr: bool) -> Console:
            tty = (sys.stderr if stderr else sys.stdout).isatty()
            return Console(stderr=stderr, emoji=False) if tty else Console(stderr=stderr, width=160, emoji=False)

        return cls(out=console(False), err=console(True))

    def say(self, line: str) -> None:
        self.out.print(line, highlight=False, markup=False, soft_wrap=True)

    def tell(self, line: str) -> None:
        """A line on stderr: a warning, a note or an error, prefix included."""
        self.err.print(line, highlight=False, markup=False, soft_wrap=True)


#: Seconds between heartbeat lines when no progress bar can be drawn (pipes, CI logs).
HEARTBEAT_SECONDS = 30.0

# Ray warns once per local start that it enabled token authentication by default: true, and
# nothing for the user to act on. Its opposite ("... is disabled ...") is a real warning and stays.
_RAY_NOISE_PREFIXES = ("Token authentication is enabled",)
#: Tune's Ctrl-C lines: sharpbench says once that the run was interrupted and how to resume it
#: (with `sharpbench run`, not Tune's `Tuner.restore`).
_TUNE_INTERRUPT_PREFIXES = ("Stop signal received", "Experiment has been interrupted", "Training has been interrupted")
#: Tune's end-of-fit analysis reads every trial's result.json into a DataFrame that sharpbench never
#: uses (its rows come from the sink); after a kill -9 the last line of one is cut short, and Tune
#: warns about that file. The trial's epochs are in Parquet and MLflow.
_TUNE_ANALYSIS_PREFIXES = ("Failed to fetch metrics for",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party(verbosity: Verbosity) -> None:
    """Silence library output that tells a user nothing; keep their real warnings and errors.

    What goes, and why it is noise here:

    * Ray Tune's experiment boxes, TensorBoard hints and trial tables (the new output engine):
      sharpbench prints its own progress. ``RAY_AIR_NEW_OUTPUT=0`` selects the legacy reporter,
      which honours ``verbose=0``.
    * Ray Tune's "Experiment state snapshotting has been triggered multiple times" warning: it
      fires because each trial keeps only its last checkpoints (``num_to_keep``) by design; the threshold
      variable Tune names in the message set to 0 disables exactly this warning.
    * INFO lines of Ray, Tune and MLflow (instance started, state written, database created).
    * Tune's warning that it could not read a trial's result.json after a kill -9: see
      :data:`_TUNE_ANALYSIS_PREFIXES`.
    * MLflow's logged tracebacks of database errors (a full disk): the mirror says them in one line.
    * Optuna's per-study INFO lines and its ExperimentalWarnings (TPE's ``group``, CMA-ES's
      ``consider_pruned_trials``, ``QMCSampler``): the features are the ones sharpbench chose.

    Call after Ray, Optuna and MLflow are imported (each sets its logger's level on import) and
    before they run (Tune reads its environment variables when a run starts). Nothing changes
    with ``verbose``.
    """
    if verbosity is Verbosity.verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow's store logs a database error with its traceback before raising it; the MLflow mirror
    # says each outage once, in one warning line (bench.results.mlflow_mirror).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _DropMessages(_RAY_NOISE_PREFIXES)
    )
    logging.getLogger("ray.tune.tune").addFilter(_DropMessages(_TUNE_INTERRUPT_PREFIXES))
    logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_DropMessages(_TUNE_ANALYSIS_PREFIXES))
    logging.getLogger("optuna").setLevel(logging.WARNING)
    # Optuna's ExperimentalWarning (for group=, consider_pruned_trials=, QMCSampler), matched by
    # its wording so that this module need not import optuna.
    warnings.filterwarnings("ignore", message=r"Argument ``\w+`` is an experimental feature")
    warnings.filterwarnings("ignore", message=r"\w+ is experimental \(supported from v")


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m``; ``9.4`` → ``9s``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_trial_seconds(seconds: float) -> str:
    """A trial's own time: ``2.34`` → ``2.3s``; under a tenth of a second in milliseconds
    (``0.034`` → ``34ms``), where one decimal of seconds would read ``0.0s``."""
    return f"{seconds:.1f}s" if seconds >= 0.095 else f"{max(0.0, seconds) * 1000:.0f}ms"


def format_value(value: Any) -> str:
    """Hyperparameter values compactly: floats to 4 significant digits, others as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class MethodCounts:
    """Trials of one method: planned and finished, per phase."""

    index: int  # 1-based position in the config's list
    search_planned: int
    final_planned: int
    search_done: int = 0
    final_done: int = 0

    @property
    def planned(self) -> int:
        return self.search_planned + self.final_planned

    @property
    def done(self) -> int:
        return self.search_done + self.final_done


@dataclass(frozen=True)
class TrialLine:
    """What one finished trial contributes to the console."""

    method: str
    phase: str  # "search" or "final"
    status: str  # completed / stopped / failed
    epochs_run: int
    epochs_planned: int
    sampled: Mapping[str, Any]  # the searched hyperparameters' values (or the final seed)
    val_accuracy: float | None
    test_accuracy: float | None
    wall_seconds: float
    error: str | None = None
    #: It had ended (and was recorded) before an interruption that Tune's last saved state did
    #: not see, so it ran again: its row is replaced, and it is not counted twice.
    again: bool = False
    #: Its row was lost and written again from Tune's saved state: nothing ran. It counts as done,
    #: without a line of its own (the sink says so) and without weighing in the ETA.
    rewritten: bool = False


@dataclass
class EtaClock:
    """Remaining time from the throughput of the trials finished so far in this process:
    remaining × elapsed / finished, the elapsed time counted from the start of the earliest
    finished trial's own clock (its end minus its wall time).

    Wall-clock elapsed (not summed trial time), so concurrency is accounted for; start-up (Ray,
    worker processes importing torch, the first compile) is not, because no trial's clock runs
    then: a run's first ETA no longer extrapolates its start-up over every trial. ``None`` until a
    trial has finished: there is nothing to extrapolate from before that.
    """

    started: float | None = None  # the earliest start of a finished trial's own clock
    finished: int = 0

    def record(self, wall_seconds: float, now: float | None = None) -> None:
        """A trial finished ``now`` after running ``wall_seconds`` of its own."""
        end = time.monotonic() if now is None else now
        start = end - max(0.0, wall_seconds)
        self.started = start if self.started is None else min(self.started, start)
        self.finished += 1

    def eta_seconds(self, remaining: int, now: float | None = None) -> float | None:
        if self.finished == 0 or self.started is None:
            return None
        elapsed = max((time.monotonic() if now is None else now) - self.started, 1e-9)
        return elapsed / self.finished * remaining


class RunProgress:
    """The console of one ``sharpbench run``: plan, per-trial lines, bar or heartbeat, ETA.

    ``plan`` maps each method, in config order, to (search trials planned, final trials planned).
    ``already_done`` holds the trials recorded by an earlier, interrupted run into the same results
    folder, as ``{(method, phase): count}``, so a resumed run counts from where it stopped.
    ``warnings``: where :meth:`warn` writes (stderr for ``sharpbench run``); default ``console``.
    """

    def __init__(
        self,
        console: Console,
        plan: Sequence[tuple[str, int, int]],
        *,
        verbosity: Verbosity = Verbosity.normal,
        already_done: Mapping[tuple[str, str], int] | None = None,
        warnings: Console | None = None,
    ) -> None:
        self.console = console
        self.warnings = warnings or console
        self.verbosity = verbosity
        self.methods = {
            name: MethodCounts(index=i + 1, search_planned=search, final_planned=final)
            for i, (name, search, final) in enumerate(plan)
        }
        for (method, phase), count in (already_done or {}).items():
            counts = self.methods.get(method)
            if counts is not None:
                if phase == "final":
                    counts.final_done = min(count, counts.final_planned)
                else:
                    counts.search_done = min(count, counts.search_planned)
        # what the header of each phase says was recorded: before this run, not by the time it prints
        self._recorded = {name: (counts.search_done, counts.final_done) for name, counts in self.methods.items()}
        self.clock = EtaClock()
        self._headed: set[str] = set()  # phases whose header is printed
        self._last_heartbeat = time.monotonic()
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    # --- totals -----------------------------------------------------------------------------

    @property
    def planned(self) -> int:
        return sum(c.planned for c in self.methods.values())

    @property
    def done(self) -> int:
        return sum(c.done for c in self.methods.values())

    @property
    def nothing_to_do(self) -> bool:
        """Every planned trial was recorded by an earlier run into the same folder."""
        return self.planned > 0 and self.done >= self.planned

    def say_nothing_to_do(self, where: str) -> None:
        """One line for a run that finds its work done (shown unless quiet)."""
        if self.verbosity is not Verbosity.quiet:
            self._print(
                f"nothing to do: {self.done} trial{'' if self.done == 1 else 's'} already recorded in {where} "
                "(another --results folder runs it afresh); the leaderboard:"
            )

    def eta_text(self) -> str:
        eta = self.clock.eta_seconds(self.planned - self.done)
        return "ETA -" if eta is None else f"ETA {format_duration(eta)}"

    # --- live bar (terminals only) ------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        if self.verbosity is not Verbosity.quiet and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._tasks["*"] = self._bar.add_task("all methods", total=self.planned, completed=self.done, eta="ETA -")
            for name, counts in self.methods.items():
                self._tasks[name] = self._bar.add_task(
                    f"  {counts.index}/{len(self.methods)} {name}", total=counts.planned, completed=counts.done, eta=""
                )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _print(self, text: str) -> None:
        # soft_wrap: a long line (paths, commands) is never broken into two when piped.
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        """A one-line warning about the run, shown at every verbosity (quiet hides progress, not problems)."""
        self.warnings.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)

    # --- events from the search ----------------------------------------------------------------

    def phase_started(self, method: str, phase: str, trials: int) -> None:
        """A method's phase starts: the first event of a phase prints its header."""
        self._header(phase)

    def _header(self, phase: str) -> None:
        """The phase's header, once, for every method at once in config order, on the phase's first
        event (a method starting it, or a trial of it ending: a resumed run's restored trials end
        without any phase starting). Methods start in whatever order the scheduler gives them slots:
        a header per method would come out of order."""
        if self.verbosity is Verbosity.quiet or phase in self._headed:
            return
        self._headed.add(phase)
        final = phase == "final"
        parts = []
        for name, counts in self.methods.items():
            planned = counts.final_planned if final else counts.search_planned
            done = self._recorded[name][1 if final else 0]
            parts.append(f"{name} {planned}" + (f" ({done} recorded before)" if done else ""))
        what = "seeds per method (the best config)" if final else "trials per method"
        n = len(self.methods)
        self._print(f"── {phase} · {n} method{'' if n == 1 else 's'} · {what}: {', '.join(parts)}")

    def trial_finished(self, line: TrialLine) -> None:
        if not line.rewritten:
            self._header(line.phase)
        counts = self.methods[line.method]
        if line.again:
            if self.verbosity is not Verbosity.quiet:
                self._print(
                    f"[{counts.index}/{len(self.methods)} {line.method} {line.phase}] {line.status} again: "
                    "this trial had ended before the interruption, after Tune last saved its state; "
                    "its row is replaced, not counted twice"
                )
            return
        if line.phase == "final":
            counts.final_done += 1
            position = f"final {counts.final_done}/{counts.final_planned}"
        else:
            counts.search_done += 1
            position = f"search {counts.search_done}/{counts.search_planned}"
        if not line.rewritten:
            self.clock.record(line.wall_seconds)
        eta = self.eta_text()
        if self._bar is not None:
            self._bar.update(self._tasks[line.method], completed=counts.done)
            self._bar.update(self._tasks["*"], completed=self.done, eta=eta)
        if self.verbosity is Verbosity.quiet or line.rewritten:
            return
        sampled = " ".join(f"{k}={format_value(v)}" for k, v in line.sampled.items()) or "(nothing searched)"
        figures = "no result" if line.val_accuracy is None else f"val_acc={line.val_accuracy:.4f}"
        if line.test_accuracy is not None:
            figures += f" test_acc={line.test_accuracy:.4f}"
        error = f" — {line.error}" if line.error else ""
        self._print(
            f"[{counts.index}/{len(self.methods)} {line.method} {position}] {line.status} "
            f"{line.epochs_run}/{line.epochs_planned} ep | {sampled} | {figures} | "
            f"{format_trial_seconds(line.wall_seconds)}"
            f" | all {self.done}/{self.planned}, {eta}{error}"
        )

    def heartbeat(
        self, status: Callable[[], tuple[Sequence[tuple[str, int, int]], Mapping[str, float]]], metric: str
    ) -> None:
        """Every :data:`HEARTBEAT_SECONDS` while trials run, when no bar is drawn.

        ``status()`` gives (method, epoch, epochs planned) of each running trial and the best value
        so far of the search ``metric`` per method; called only when a line is printed (it looks
        at every trial: once per line, not once per report, keeps the driver's cost per report
        flat as a benchmark grows to thousands of trials).
        """
        now = time.monotonic()
        if self._bar is not None or self.verbosity is Verbosity.quiet or now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        running, best = status()
        text = f"… {self.done}/{self.planned} trials done, {self.eta_text()}"
        if running:
            text += "; running: " + ", ".join(f"{m} ep {e}/{p}" for m, e, p in running)
        leaders = ", ".join(f"{m} {v:.4f}" for m, v in best.items() if math.isfinite(v))
        if leaders:
            text += f"; best {metric} reported so far: {leaders}"
        self._print(text)
