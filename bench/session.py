"""One benchmark run's lifecycle, owned in one place: checks, lock, run identity, stores, Ray,
the search and final phases, the board, the report, cleanup.

The command line (:mod:`bench.cli`) and the Python API (:mod:`bench.api`, ``sharpbench.run``)
are two doors into :class:`Session`. It prints through an :class:`~bench.console.Output` and
never exits the process: bad input raises :class:`~bench.errors.BadInput` before anything is
written, a run that stopped early but is saved raises :class:`~bench.errors.RunStopped` with the
line that says how to resume, and a run whose every trial failed returns an outcome that says
so. Resuming is running the same session again: the run record (:mod:`bench.run_record`) finds
the run, the studies and Tune's state continue it.

Order matters, and is kept here: everything checkable first (in seconds, before MLflow's or
Ray's import), then the folder's lock, the tracking store, the run identity, Ray; SIGTERM is
turned into Ctrl-C for the whole run, and Ray is shut down last (its teardown resets SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from bench import run_record
from bench.config import BenchmarkConfig, ConfigError, with_final
from bench.console import Output, Verbosity, quiet_third_party
from bench.errors import BadInput, RunStopped, first_line, unknown_name
from bench.preflight import PreflightError, check_before_start


@dataclass(frozen=True)
class RunOptions:
    """How and where to run a benchmark (the command line's options; the API's keywords)."""

    results: Path = Path("results")
    address: str | None = None  # a Ray cluster to join; None starts a local runtime
    tracking_uri: str | None = None  # MLflow; default: the config's, else sqlite under results
    optuna_storage: str | None = None  # default: the config's, else a journal file under results
    num_cpus: int | None = None  # of the local runtime
    verbosity: Verbosity = Verbosity.normal
    restart: bool = False  # set aside a run of this benchmark with another config
    retry_failed: bool = False  # re-run failed search trials
    report: bool = True  # write the HTML report at the end (a suite writes one for all its benchmarks)

    def check(self, config: BenchmarkConfig) -> None:
        """Everything checkable about running ``config`` so, in seconds, before Ray starts or
        anything is written (:func:`bench.preflight.check_before_start`); PreflightError."""
        check_before_start(
            config, self.results, address=self.address, tracking_uri=self.tracking_uri, num_cpus=self.num_cpus
        )


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run left: where its results are, and whether every trial failed."""

    benchmark: str
    results: Path
    tracking_uri: str
    optuna_storage: str
    report: Path | None  # the HTML report; None when it could not be written (said)
    all_failed: str | None = None  # every trial failed: the most frequent reason
    experiment_id: str | None = None  # the benchmark's MLflow experiment

    @property
    def commands(self) -> list[tuple[str, str]]:
        """(label, command) to look further: the leaderboard, MLflow's UI (a store: the command
        that serves it) and the address of the experiment's training runs in it, the studies,
        the report."""
        from bench.results.mlflow_ui import runs_view_url, served, ui_of

        commands = [("Leaderboard", f"sharpbench leaderboard {shlex.quote(str(self.results))}")]
        if not served(self.tracking_uri):
            commands.append(("MLflow UI  ", f"mlflow ui --backend-store-uri {shlex.quote(self.tracking_uri)}"))
        ui = ui_of(self.tracking_uri)
        if ui is not None and self.experiment_id is not None:
            commands.append(("MLflow runs", runs_view_url(ui, self.experiment_id)))  # a browser's, not a shell's
        commands.append(("Studies    ", f"optuna-dashboard {shlex.quote(self.optuna_storage)}"))
        if self.report is not None:
            commands.append(("Report     ", f"xdg-open {shlex.quote(str(self.report))}"))
        return commands


def _count(n: int, noun: str) -> str:
    """``1 method``, ``2 methods``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class Session:
    """One run of ``config`` into ``options.results``: :meth:`run` does all of it.

    ``final_only`` runs only the final phase of a finished search (:meth:`for_final`);
    ``resume_hint`` is the command that resumes this run, said when it stops early.
    """

    config: BenchmarkConfig
    options: RunOptions = field(default_factory=RunOptions)
    resume_hint: str = ""
    final_only: bool = False
    output: Output = field(default_factory=Output.standard)
    #: Training samples of the config's dataset, once :meth:`run` has loaded it (None on a cluster).
    _train_samples: int | None = field(default=None, init=False, repr=False)
    #: Lines about the data and model said once the run is under way (a fine-tuned head left out).
    _notes: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.options.optuna_storage is not None:
            self.config = self.config.model_copy(update={"optuna_storage": self.options.optuna_storage})
        if not self.resume_hint:
            self.resume_hint = f"the same run again (results in {self.options.results})"

    @classmethod
    def for_final(
        cls,
        results: Path,
        benchmark: str | None,
        seeds: list[int] | None,
        top_k: int | None,
        options: RunOptions,
        resume_hint: str,
        output: Output | None = None,
    ) -> Session:
        """The final phase of the run recorded in ``results``, with its final seeds and top-k
        optionally replaced; refused (BadInput) while its searches are unfinished."""
        from bench.plan import plan_methods
        from bench.results.parquet import no_results_folder, results_folder_hint
        from bench.search.finals import results_rows, search_rows

        if not results.is_dir():
            raise BadInput(no_results_folder(results))
        try:
            recorded = {name: record.config for name, record in run_record.load_records(results).items()}
        except ConfigError as error:
            raise BadInput(str(error)) from None
        if not recorded:
            raise BadInput(
                results_folder_hint(results)
                or f"no recorded run in {results}: run `sharpbench run CONFIG --results {results}` first"
            )
        if benchmark is None:
            if len(recorded) > 1:
                raise BadInput(
                    f"{results} holds several benchmarks; choose one with --benchmark: {', '.join(sorted(recorded))}"
                )
            benchmark = next(iter(recorded))
        if benchmark not in recorded:
            raise BadInput(unknown_name("benchmark", benchmark, recorded))
        config = recorded[benchmark]
        overrides = {key: value for key, value in (("seeds", seeds), ("top_k", top_k)) if value}
        if overrides:
            try:
                config = with_final(config, **overrides)
            except ConfigError as error:
                raise BadInput(str(error)) from None
        if not config.final.seeds:
            raise BadInput(
                "no final seeds: the run's config has final.seeds empty; give them with --seed 1 --seed 2 ..."
            )
        rows = results_rows(results, config.benchmark)
        short = [
            f"{p.regularizer} {search_rows(p, rows)}/{p.budget.trials}"
            for p in plan_methods(config)
            if search_rows(p, rows) < p.budget.trials
        ]
        if short:
            # The best config of a partial search may not be the search's best: its final rows would mislead.
            raise BadInput(
                f"the searches in {results} are unfinished (search trials recorded: {', '.join(short)}); "
                f"finish them first with: sharpbench run CONFIG --results {results}"
            )
        return cls(config, options, resume_hint=resume_hint, final_only=True, output=output or Output.standard())

    # -- the lifecycle ---------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        """Check, lock, run both phases (or the final one), print the board, write the report."""
        options, config = self.options, self.config
        try:
            # Everything checkable, in seconds, before Ray starts or anything is written; first,
            # before the imports below (MLflow alone takes seconds).
            options.check(config)
        except PreflightError as error:
            raise BadInput(str(error)) from None
        from bench.catalog import check_data_and_model
        from bench.data import DatasetError
        from bench.models import ModelError

        try:
            if options.address is None:
                # Fail fast on a missing dataset or a checkpoint that does not fit, before any
                # trial starts; the dataset's size tells which methods the recipe makes degenerate
                # (said once the run is under way).
                checked = check_data_and_model(config)
                self._train_samples, self._notes = checked.train_samples, checked.notes
        except (DatasetError, ModelError) as error:
            raise BadInput(str(error)) from None
        results = options.results.resolve()
        try:
            results.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInput(f"cannot create results folder {results}: {error.strerror}") from None
        try:
            with run_record.FolderLock(results):
                return self._run_locked(results)
        except run_record.FolderBusy as busy:
            raise BadInput(str(busy)) from None

    def _run_locked(self, results: Path) -> RunOutcome:
        from bench import search
        from bench.plan import plan_methods, recipe_warnings
        from bench.results.mlflow_mirror import open_mirror
        from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, normalize_tracking_uri
        from bench.results.parquet import tidy_dataset

        # The driver imports Ray, Optuna and MLflow, which set up their loggers on import: before
        # quiet_third_party quiets them (bench.search itself loads its modules lazily).
        from bench.search import driver  # noqa: F401

        config, options, output = self.config, self.options, self.output
        quiet_third_party(options.verbosity)
        uri = normalize_tracking_uri(options.tracking_uri or config.tracking_uri or default_tracking_uri(results))
        try:
            opened = MlflowSink(uri, experiment_name=config.benchmark)  # reachable and usable, before any trial runs
        except Exception as error:  # MLflow raises many types here; all mean "this URI does not work"
            # A store whose creation an older sharpbench was killed in (new ones appear whole).
            half_made = uri.startswith("sqlite:") and "OperationalError" in str(error)
            hint = (
                (
                    "; a store whose creation was interrupted stays unopenable: if it holds no runs you need, "
                    "delete it and run again"
                )
                if half_made
                else ""
            )
            raise BadInput(f"cannot use MLflow tracking URI {uri}: {first_line(error)}{hint}") from None

        def tell_outage(outage: Any) -> None:  # once per run: later MLflow calls are skipped
            output.tell(
                f"warning: {outage.describe()}: the run goes on; rows are in Parquet; back-fill later with: "
                f"sharpbench sync-mlflow {shlex.quote(str(results))} --tracking-uri {shlex.quote(uri)}"
            )

        mirror = open_mirror(uri, tell_outage)
        try:
            if self.final_only:
                # `final` may change the final section (seeds, top-k) of the run it extends, nothing else.
                record = run_record.load_record(run_record.record_path(results, config.benchmark)).with_config(config)
                record.save(results)
            else:
                record = run_record.resolve(config, results, restart=options.restart)
        except (run_record.IdentityMismatch, ConfigError) as error:
            raise BadInput(str(error)) from None
        try:
            # Unreadable files quarantined, old layouts rewritten, stale staging removed: in this benchmark's folder
            # (and the old layouts), the rows this run reads and writes.
            tidy = tidy_dataset(results, benchmarks=[config.benchmark])
        except OSError as error:
            raise BadInput(f"cannot tidy the results folder {results}: {error}") from None
        for line in tidy.lines():
            output.tell(f"warning: {line}")

        storage = (
            search.absolute_storage(config.optuna_storage) if config.optuna_storage else search.default_storage(results)
        )
        plans = plan_methods(config)
        if options.verbosity is not Verbosity.quiet:
            self._banner(results, uri, storage, plans)
        if self._train_samples is not None and not self.final_only:
            for line in recipe_warnings(plans, self._train_samples, config.training.batch_size):
                output.tell(f"warning: {line}")
        for line in self._notes:
            output.tell(f"note: {line}")
        from bench.signals import terminate_as_interrupt

        # From here on SIGTERM (Slurm, Kubernetes) stops the run as Ctrl-C does, replacing Ray's handlers.
        with terminate_as_interrupt() as termination:
            try:
                self._start_ray(termination)
                return self._phases(results, uri, storage, opened, mirror, record, plans, termination)
            except (KeyboardInterrupt, SystemExit) as stop:
                if isinstance(stop, SystemExit) and stop.code != signal.SIGTERM:  # Ray's handler: sys.exit(15)
                    raise
                termination.received = termination.received or isinstance(stop, SystemExit)
                raise RunStopped(
                    f"{termination.verb}: the run is saved. Resume with: {self.resume_hint}", termination.exit_status
                ) from None

    def _banner(self, results: Path, uri: str, storage: str, plans: list[Any]) -> None:
        config = self.config
        finals = len(config.final.seeds) * config.final.top_k
        trials = sorted({plan.budget.trials for plan in plans})
        what = "" if self.final_only else f"{'/'.join(map(str, trials))} search trial{'' if trials == [1] else 's'} + "
        self.output.out.print(
            f"[bold]{escape(config.benchmark)}[/]: {_count(len(plans), 'method')} × "
            f"({what}{_count(finals, 'final run')}), "
            f"{_count(config.training.epochs, 'epoch')} each; sampler {config.search.sampler.name}, "
            f"budget in {config.search.budget.kind}"
            f"\nresults → {escape(str(results))}\nMLflow  → {escape(uri)}\nOptuna  → {escape(storage)}",
            highlight=False,
            soft_wrap=True,
        )

    def _start_ray(self, termination: Any) -> None:
        """Start or join Ray, take SIGTERM back from Ray's handlers, check the trials fit on a node."""
        from bench import search

        options = self.options
        try:
            with termination.held():
                search.init_ray(
                    options.address, num_cpus=options.num_cpus, verbose=options.verbosity is Verbosity.verbose
                )
        except ConnectionError as error:
            raise BadInput(f"cannot join the Ray cluster at {options.address}: {first_line(error)}") from None
        if options.address is not None:
            # A trial must fit on one node: only the connected cluster can tell (bench/preflight.py).
            from bench.preflight import check_placeable

            try:
                check_placeable(self.config, search.node_resources())
            except PreflightError as error:
                with termination.held():
                    _shutdown_ray()
                raise BadInput(str(error)) from None

    def _phases(
        self,
        results: Path,
        uri: str,
        storage: str,
        opened: Any,
        mirror: Any,
        record: Any,
        plans: list[Any],
        termination: Any,
    ) -> RunOutcome:
        """The phases with a live console, then the board, the report and the commands to look further."""
        from bench import search
        from bench.console import RunProgress
        from bench.failures import InfrastructureBroken, disk_full, exception_chain
        from bench.outcome import failure_summary
        from bench.results.parquet import read_rows
        from bench.results.schema import Phase
        from bench.stores import is_locked_error, locked_message

        config, options = self.config, self.options
        searched = 0 if self.final_only else 1
        finals = len(config.final.seeds) * config.final.top_k
        recorded, failed = recorded_trials(results, config.benchmark, options.retry_failed)
        progress = RunProgress(
            self.output.out,
            [(plan.regularizer, plan.budget.trials * searched, finals) for plan in plans],
            verbosity=options.verbosity,
            already_done=recorded,
            warnings=self.output.err,
        )
        phases = (Phase.FINAL,) if self.final_only else (Phase.SEARCH, Phase.FINAL)
        if progress.nothing_to_do and not (options.retry_failed and failed):
            # Said before the seconds Ray and the searches take to find it so (they still run: they
            # close the MLflow parent runs a killed run may have left open).
            progress.say_nothing_to_do(str(results))
        resume = f"Resume with: {self.resume_hint}"
        try:
            with progress:
                search.run_benchmark(
                    config,
                    results_dir=results,
                    tracking_uri=uri,
                    progress=progress,
                    phases=phases,
                    instance=record.instance,
                    retry_failed=options.retry_failed,
                    mlflow_sink=opened,
                    optuna_storage=storage,
                )
        except search.SearchInterrupted as interrupted:
            raise RunStopped(f"{termination.verb}: {interrupted}. {resume}", termination.exit_status) from None
        except Exception as error:
            if disk_full(error):
                raise RunStopped(f"error: {self._disk_full(results)}. {resume}", 1) from None
            broken = next((e for e in exception_chain(error) if isinstance(e, InfrastructureBroken)), None)
            if broken is not None:
                raise RunStopped(f"error: {first_line(broken)}. {resume}", 1) from None
            if not is_locked_error(error):
                raise
            raise RunStopped(f"error: {locked_message(f'the Optuna store {storage}')}. {resume}", 1) from None
        except BaseException:
            _shutdown_ray()
            raise
        self._print_board(results)
        all_failed = failure_summary(read_rows(results, benchmarks=[config.benchmark]).to_pylist(), config.benchmark)
        report = (
            self._report(results, None if mirror.down else opened, plans, record.instance) if options.report else None
        )
        outcome = RunOutcome(config.benchmark, results, uri, storage, report, all_failed, opened.experiment_id)
        for label, command in outcome.commands:  # one per line, never wrapped, so each can be pasted
            self.output.say(f"{label}: {command}")
        # Last, after the board and the report: Ray's teardown resets SIGTERM to its default action in
        # every thread (a SIGTERM during its seconds killed the run silently, before the report).
        _shutdown_ray()
        return outcome

    def _print_board(self, results: Path) -> None:
        """The leaderboard of this benchmark, read back from the Parquet rows just written."""
        from bench.leaderboard import build_leaderboard, render, to_rich
        from bench.results.parquet import read_rows

        boards = build_leaderboard(read_rows(results, benchmarks=[self.config.benchmark]))
        out = self.output.out
        if out.is_terminal:
            out.print(to_rich(boards))
        else:
            # A pipe or a log file: the narrow board, at most 100 columns, nothing cut to a guessed width
            # (`sharpbench leaderboard --wide` has every column).
            out.file.write(render(boards, "table").rstrip("\n") + "\n")
            out.file.flush()

    def _disk_full(self, results: Path) -> str:
        """One line for a run stopped by a full disk: the folder, its free space, what was kept."""
        import shutil

        from bench.results.parquet import read_rows

        free = shutil.disk_usage(results).free / 2**20
        rows = read_rows(results, problems=[], benchmarks=[self.config.benchmark]).to_pylist()
        kept = sum(1 for row in rows if row["benchmark"] == self.config.benchmark)
        return (
            f"the disk holding {results} is full ({free:.1f} MiB free): the run stopped; the {kept} trial row(s), "
            "studies and search state written so far are kept; free space"
        )

    def _report(self, results: Path, sink: Any, plans: list[Any], instance: str) -> Path | None:
        """Write the HTML report and attach it, its figures and the leaderboard to each method's MLflow
        parent runs through ``sink``, the run's own (none when ``sink`` is None: MLflow went down
        during the run, already said; a second sink would say the store's warnings again). A
        failure is said in one line and the run still succeeds: Parquet, the record, holds every
        result, and `sharpbench report` can redo this."""
        from bench.report.build import build_report
        from bench.results.schema import Phase

        benchmark = self.config.benchmark
        try:
            artifacts = build_report([results])
        except Exception as error:  # the run's results are safe in Parquet: say why, carry on
            self.output.tell(f"warning: the report could not be written: {first_line(error)}")
            return None
        if sink is None:
            return artifacts.html_path
        try:
            with tempfile.TemporaryDirectory() as folder:
                board = Path(folder, "leaderboard.md")
                board.write_text(artifacts.leaderboard_markdown.get(benchmark, ""))
                for plan in plans:
                    files = {f"report/{png.name}": png for png in artifacts.png_paths_of(benchmark, plan.regularizer)}
                    files["report/leaderboard.md"] = board
                    files["report/report.html"] = artifacts.html_path  # the whole page, figures inlined
                    for phase in Phase:
                        parent = sink.find_parent_run(plan.parent_key(phase.value, instance))
                        if parent is not None:
                            sink.log_parent_artifacts(parent, files)
        except Exception as error:  # MLflow is a mirror of the Parquet record: say so, carry on
            self.output.tell(f"warning: report figures not attached to MLflow: {first_line(error)}")
        return artifacts.html_path


def _shutdown_ray() -> None:
    """Stop the Ray runtime this process started (a joined cluster is only left).

    Ray's processes start inside ``ray.init`` while SIGTERM is held (:meth:`Termination.held`),
    so they keep it blocked: a SIGTERM sent to the whole process group (Slurm's ``scancel``,
    ``timeout``) reaches only the driver, which stops as on Ctrl-C. ``ray.shutdown`` would send
    each of them a SIGTERM and wait 1 s before its SIGKILL (5 s a run, measured), and the
    raylet's agents outlive a GCS killed at once (they report the raylet's death to it first).
    So where ``/proc`` lists the process tree (Linux), ``ray.shutdown`` disconnects the driver as
    usual and then sends the whole tree SIGKILL at once, where it would have stopped them one by one."""
    import ray

    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    started = getattr(node, "all_processes", None) if node is not None and node.is_head() else None
    kill_all = getattr(node, "kill_all_processes", None)
    if started and kill_all is not None and Path("/proc/self/stat").exists():

        def kill_tree(check_alive: bool = True, allow_graceful: bool = False, wait: bool = False) -> None:
            roots = [info.process.pid for infos in started.values() for info in infos if info.process.poll() is None]
            for pid in _process_tree(roots):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kill_all(check_alive=False, allow_graceful=False, wait=wait)  # reaps them

        node.kill_all_processes = kill_tree
    ray.shutdown()


def _process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants, read from ``/proc/<pid>/stat`` (parent id: field 4)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def recorded_trials(
    results: Path, benchmark: str, retry_failed: bool = False
) -> tuple[dict[tuple[str, str], int], int]:
    """Trials an earlier run into ``results`` already recorded, per (method, phase), and how many
    of them failed; one read of the rows. With ``retry_failed``, trials that raised (error, oom)
    are not counted as done: Tune runs them again (a divergence is the trial's own end, kept)."""
    from bench.failures import FailureClass
    from bench.results.parquet import read_rows
    from bench.results.schema import TrialStatus

    columns = ["regularizer", "phase", "status", "failure_class"]
    mine = read_rows(results, benchmarks=[benchmark]).select(columns).to_pylist()
    failed = sum(row["status"] == TrialStatus.FAILED.value for row in mine)
    again = {FailureClass.ERROR.value, FailureClass.OOM.value} if retry_failed else set()
    done = Counter((row["regularizer"], row["phase"]) for row in mine if row["failure_class"] not in again)
    return dict(done), failed
