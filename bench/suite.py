"""A suite as one workload: every benchmark's run at once on one Ray runtime, no barrier between them.

Each benchmark of the suite is an ordinary run (:class:`bench.session.Session`, its own run
identity, rows, studies, Tune experiment and resume), started as its own driver process
(``sharpbench run SUITE --benchmark NAME --address RAY``) on the Ray runtime this process starts
or joins. Ray runs the trials of all of them on the same slots: a slot freed by one benchmark
goes to whichever benchmark asks next, and a benchmark's final seeds start as soon as its own
search has ended, whatever the others are doing.

Why processes: Ray Tune runs one experiment per driver (its controller, signal handlers and
sink are process-wide), and several drivers on one runtime is how Ray shares a cluster.

The suite holds the results folder's lock and hands it to its benchmarks
(:data:`bench.run_record.HELD_LOCK_FD`); it checks every benchmark before any starts (exit 2 and
nothing written, as for one run), creates the MLflow store once (two processes creating one
SQLite store race), and then forwards Ctrl-C and SIGTERM to its benchmarks once each. The
benchmarks die with it on kill -9 (``PR_SET_PDEATHSIG``, :func:`bench.signals.die_with_parent`).
Each benchmark's output goes to ``<results>/logs/<suite>/<benchmark>.log``; the suite prints
progress from the rows it finds. Running the suite again resumes every benchmark that had not
ended; one that ended has nothing left to do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from bench import run_record
from bench.config import BenchmarkConfig, ConfigError
from bench.config.suite import SuiteConfig
from bench.console import Output, Verbosity
from bench.errors import BadInput, RunStopped, first_line
from bench.preflight import PreflightError
from bench.session import RunOptions, _shutdown_ray
from bench.signals import INTERRUPTED_EXIT_STATUS, SUITE_PARENT, SUITE_RESUME, TERMINATED_EXIT_STATUS

#: Sub-folder of the results folder with each benchmark's output, per suite.
LOGS_DIRNAME = "logs"
#: Seconds between looks at the benchmarks' processes and rows.
POLL_SECONDS = 1.0
#: Seconds between progress lines while rows come in (a benchmark that ends prints at once).
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class BenchmarkOutcome:
    """How one benchmark's run of a suite ended."""

    benchmark: str
    exit_status: int
    log: Path
    last_line: str  # the last line of its log: the reason when it did not end with 0


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    results: Path
    benchmarks: tuple[BenchmarkOutcome, ...]
    seconds: float  # from the command's checks to its report, as the user waited
    report: Path | None  # the HTML report of the folder, None when not written

    @property
    def names(self) -> list[str]:
        return [b.benchmark for b in self.benchmarks]


def planned_trials(config: BenchmarkConfig) -> int:
    """Rows a finished run of ``config`` has: each method's search budget and its final runs."""
    from bench.plan import plan_methods

    finals = len(config.final.seeds) * config.final.top_k
    return sum(plan.budget.trials + finals for plan in plan_methods(config))


def recorded_rows(results: Path, benchmark: str) -> int:
    """Rows of ``benchmark`` in ``results``, by counting its files (one file per row)."""
    from bench.results.parquet import benchmark_dir

    folder = benchmark_dir(results, benchmark)
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.is_dir() else 0


def log_path(results: Path, suite: str, benchmark: str) -> Path:
    return results / LOGS_DIRNAME / suite / f"{benchmark}.log"


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


class _Forwarder:
    """The suite's handler of SIGINT and SIGTERM: each signal goes once to every running benchmark
    (they run in sessions of their own, so a terminal's Ctrl-C reaches them only this way)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    @property
    def exit_status(self) -> int:
        return TERMINATED_EXIT_STATUS if signal.SIGTERM in self.received else INTERRUPTED_EXIT_STATUS


@dataclass
class SuiteRun:
    """One run of every benchmark of ``suite`` (read from ``path``) into ``options.results``."""

    suite: SuiteConfig
    path: Path
    options: RunOptions = field(default_factory=RunOptions)
    output: Output = field(default_factory=Output.standard)
    _started: float = field(default=0.0, init=False, repr=False)  # time.monotonic() when run() began

    @property
    def resume_command(self) -> str:
        """The command that resumes the suite: its own, with where it runs (cluster, CPUs)."""
        where = {"--address": self.options.address, "--num-cpus": self.options.num_cpus}
        given = [part for option, value in where.items() if value is not None for part in (option, str(value))]
        return shlex.join(["sharpbench", "run", str(self.path), *self._shared_arguments(), *given])

    def _shared_arguments(self) -> list[str]:
        options = self.options
        given = {
            "--results": str(options.results),
            "--tracking-uri": options.tracking_uri,
            "--optuna-storage": options.optuna_storage,
        }
        return [part for option, value in given.items() if value is not None for part in (option, value)]

    # -- before anything starts -------------------------------------------------------------------

    def check(self, results: Path) -> None:
        """Every benchmark checked as its own run would be, before any starts: BadInput naming it."""
        from bench.catalog import check_data_and_model
        from bench.data import DatasetError
        from bench.models import ModelError

        options = self.options
        try:
            records = run_record.load_records(results) if (results / run_record.RECORDS_DIRNAME).is_dir() else {}
        except ConfigError as error:  # a run record that cannot be read: each run would refuse it too
            raise BadInput(str(error)) from None
        loaded: set[str] = set()
        for config in self.suite.benchmarks:
            where = f"suite {self.suite.suite}, benchmark {config.benchmark}"
            try:
                options.check(config)
                key = config.dataset.model_dump_json() + config.model.model_dump_json()
                # A missing dataset or a checkpoint that does not fit fails here, not later.
                if options.address is None and key not in loaded:
                    check_data_and_model(config)
                    loaded.add(key)
            except (PreflightError, DatasetError, ModelError) as error:
                raise BadInput(f"{where}: {error}") from None
            old = records.get(config.benchmark)
            # As bench.run_record.resolve decides it for one run, but for every benchmark before any starts.
            changed = old is not None and run_record.config_hash(old.config) != run_record.config_hash(config)
            if changed and not options.restart and run_record.started(old, results):
                differ = ", ".join(run_record.differing_keys(old.config, config)[:8])
                raise BadInput(
                    f"{where}: {results} holds a run of it with another config (differs in {differ}); "
                    "use another --results folder, or --restart to set it aside"
                )

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> SuiteOutcome:
        """Check, lock, start every benchmark, follow them to the end; RunStopped when one did not end."""
        self._started = time.monotonic()
        results = self.options.results.resolve()
        if results.exists() and not results.is_dir():
            raise BadInput(f"results folder {results} is a file, not a folder")
        self.check(results)
        try:
            results.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInput(f"cannot create results folder {results}: {error.strerror}") from None
        try:
            with run_record.FolderLock(results) as lock:
                return self._run_locked(results, lock)
        except run_record.FolderBusy as busy:
            raise BadInput(str(busy)) from None

    def _run_locked(self, results: Path, lock: run_record.FolderLock) -> SuiteOutcome:
        import ray  # noqa: F401  (sets up its loggers on import: before they are quieted)

        from bench.console import quiet_third_party

        quiet_third_party(self.options.verbosity)
        # From here Ctrl-C and SIGTERM are recorded (and later forwarded), never a traceback.
        forwarder = _Forwarder()
        previous = {sig: signal.signal(sig, forwarder) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._open_mlflow(results)
            address = self._start_ray(forwarder)
            try:
                outcomes = self._follow(results, lock, address, forwarder)
            finally:
                # SIGTERM held while Ray stops (its teardown resets the handlers; see bench.session).
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                try:
                    _shutdown_ray()
                finally:
                    signal.signal(signal.SIGTERM, forwarder)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if forwarder.received:
            raise RunStopped(
                f"{'terminated (SIGTERM)' if signal.SIGTERM in forwarder.received else 'interrupted'}: "
                f"every benchmark's run is saved. Resume with: {self.resume_command}",
                forwarder.exit_status,
            )
        failed = [o for o in outcomes if o.exit_status != 0]
        if failed:
            worst = max(o.exit_status for o in failed)
            said = "; ".join(f"{o.benchmark} exit {o.exit_status}: {o.last_line} (log: {o.log})" for o in failed)
            raise RunStopped(f"error: {len(failed)} benchmark(s) of the suite did not end: {said}", worst)
        report = self._report(results)
        return SuiteOutcome(self.suite.suite, results, tuple(outcomes), time.monotonic() - self._started, report)

    def _report(self, results: Path) -> Path | None:
        """The folder's HTML report, once every benchmark has ended (a failure is said, not raised:
        the rows are safe, and `sharpbench report` can redo it)."""
        if not self.options.report:
            return None
        from bench.report.build import build_report

        try:
            return build_report([results]).html_path
        except Exception as error:  # the report only reads the rows: say why, carry on
            self.output.tell(f"warning: the report could not be written: {first_line(error)}")
            return None

    def _open_mlflow(self, results: Path) -> None:
        """Create the MLflow store and the benchmarks' experiments once, here, before the
        benchmarks' processes open it together."""
        from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, normalize_tracking_uri

        for config in self.suite.benchmarks:
            uri = normalize_tracking_uri(
                self.options.tracking_uri or config.tracking_uri or default_tracking_uri(results)
            )
            try:
                MlflowSink(uri, experiment_name=config.benchmark)
            except Exception as error:  # MLflow raises many types; each run would say the same
                raise BadInput(f"cannot use MLflow tracking URI {uri}: {first_line(error)}") from None

    def _start_ray(self, forwarder: _Forwarder) -> str:
        """The address the benchmarks join: the cluster given, or a local runtime started here
        (with SIGTERM held, so its processes leave SIGTERM to the drivers, as in a single run)."""
        from bench import search

        options = self.options
        if options.address is not None:
            return options.address
        import ray

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            search.init_ray(None, num_cpus=options.num_cpus, verbose=options.verbosity is Verbosity.verbose)
        finally:
            signal.signal(signal.SIGTERM, forwarder)  # ray.init installed its own: ours again
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return str(ray.get_runtime_context().gcs_address)

    def _command(self, config: BenchmarkConfig, address: str) -> list[str]:
        options = self.options
        command = [sys.executable, "-m", "bench.cli", "run", str(self.path), "--benchmark", config.benchmark]
        # One report for the whole suite, written here at the end: not one per benchmark, all
        # writing the same files of the folder as they end.
        command += [*self._shared_arguments(), "--address", address, "--no-report"]
        if options.restart:
            command.append("--restart")
        if options.retry_failed:
            command.append("--retry-failed")
        if options.verbosity is Verbosity.verbose:
            command.append("--verbose")
        return command

    def _follow(
        self, results: Path, lock: run_record.FolderLock, address: str, forwarder: _Forwarder
    ) -> list[BenchmarkOutcome]:
        suite, say = self.suite, self.output.say
        planned = {c.benchmark: planned_trials(c) for c in suite.benchmarks}
        logs = {c.benchmark: log_path(results, suite.suite, c.benchmark) for c in suite.benchmarks}
        if self.options.verbosity is not Verbosity.quiet:
            say(
                f"{suite.suite}: {len(suite.benchmarks)} benchmarks at once on one Ray runtime "
                f"({sum(planned.values())} trials in all); results → {results}"
            )
            for name, path in logs.items():
                say(f"  {name}: {planned[name]} trials, log → {path}")
        env = {
            **os.environ,
            run_record.HELD_LOCK_FD: str(lock.descriptor()),
            SUITE_PARENT: str(os.getpid()),
            SUITE_RESUME: self.resume_command,
        }
        env["PYTHONUNBUFFERED"] = "1"
        processes: dict[str, subprocess.Popen[bytes]] = {}
        files: list[IO[bytes]] = []
        try:
            for config in suite.benchmarks:
                if forwarder.received:  # stopped before every benchmark started: start no more
                    break
                log = logs[config.benchmark]
                log.parent.mkdir(parents=True, exist_ok=True)
                file = open(log, "ab")  # noqa: SIM115 - closed below, after its process ends
                files.append(file)
                command = self._command(config, address)
                stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                file.write(f"==> {stamp} {shlex.join(command)}\n".encode())
                file.flush()
                processes[config.benchmark] = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(lock.descriptor(),),
                    start_new_session=True,  # Ctrl-C reaches them once, from here
                )
                forwarder.children.append(processes[config.benchmark])
            return self._wait(results, processes, planned, logs, forwarder)
        finally:
            for process in processes.values():
                if process.poll() is None:  # an exception here: do not leave them running
                    process.kill()
                    process.wait()
            for file in files:
                file.close()

    def _wait(
        self,
        results: Path,
        processes: dict[str, subprocess.Popen[bytes]],
        planned: dict[str, int],
        logs: dict[str, Path],
        forwarder: _Forwarder,
    ) -> list[BenchmarkOutcome]:
        say, quiet = self.output.say, self.options.verbosity is Verbosity.quiet
        ended: dict[str, BenchmarkOutcome] = {}
        last_counts: dict[str, int] = {}
        last_line_at = 0.0
        start = time.monotonic()
        while len(ended) < len(processes):
            time.sleep(POLL_SECONDS)
            counts = {name: recorded_rows(results, name) for name in processes}
            for name, process in processes.items():
                status = process.poll()
                if status is not None and name not in ended:
                    status = 128 - status if status < 0 else status  # killed by a signal: the shell's number
                    ended[name] = BenchmarkOutcome(name, status, logs[name], _last_line(logs[name]))
                    if not quiet:
                        saved = forwarder.received and status in (INTERRUPTED_EXIT_STATUS, TERMINATED_EXIT_STATUS)
                        how = (
                            "done"
                            if status == 0
                            else f"saved (exit {status})"
                            if saved
                            else f"stopped, exit {status}: {ended[name].last_line}"
                        )
                        took = _clock(time.monotonic() - start)
                        say(f"{name}: {how} ({counts[name]}/{planned[name]} trials, {took})")
            now = time.monotonic()
            running = [n for n in processes if n not in ended]
            if not quiet and running and counts != last_counts and now - last_line_at >= PROGRESS_SECONDS:
                done = sum(min(counts[n], planned[n]) for n in processes)
                parts = " · ".join(f"{n} {counts[n]}/{planned[n]}" for n in running)
                say(f"[{_clock(now - start)}] {done}/{sum(planned.values())} trials: {parts}")
                last_counts, last_line_at = counts, now
        return [ended[name] for name in processes]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
