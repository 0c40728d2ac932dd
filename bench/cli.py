"""``sharpbench``: thin command line over config → search → sinks → leaderboard.

Bad input (config, dataset, names, paths) exits with status 2 and one line on stderr, never a
traceback; a crash inside a trial is recorded as a failed trial, not raised here.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    help="Benchmark flat-minima regularizers under an equal tuning budget (Ray Tune + Optuna), "
    "recording every trial to MLflow and a Parquet leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click errors: a usage line and one "Error: ..." line, not a multi-line box.
    rich_markup_mode=None,
)
# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default. No emoji
# codes: rich would turn "host:1234:" in a message into 🔢.
console = Console(emoji=False) if sys.stdout.isatty() else Console(width=160, emoji=False)
errors = Console(stderr=True, emoji=False) if sys.stderr.isatty() else Console(stderr=True, width=160, emoji=False)

DEFAULT_RESULTS = Path("results")


def _count(n: int, noun: str) -> str:
    """``1 method``, ``2 methods``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    # The message as plain text: a path or a config value with [brackets] is no markup.
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class TableFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


# Options shared by `run` and `final`.
_ADDRESS = typer.Option(None, "--address", metavar="ADDRESS", help="Join a running Ray cluster (e.g. 'auto' or 'ray://head:10001'); default: start a local one.")
_TRACKING_URI = typer.Option(None, "--tracking-uri", metavar="URI", help="MLflow tracking URI; default: the config's, else sqlite under the results folder.")
_OPTUNA_STORAGE = typer.Option(
    None, "--optuna-storage", metavar="URL",
    help="SQLAlchemy URL of the Optuna studies (one per method; optuna-dashboard reads them); default: the config's, else sqlite under the results folder.",
)
_NUM_CPUS = typer.Option(None, "--num-cpus", metavar="N", min=1, help="CPUs of the local Ray runtime (default: all).")
_QUIET = typer.Option(False, "--quiet", "-q", help="Print only the final leaderboard, the commands to open the results, and errors.")
_VERBOSE = typer.Option(False, "--verbose", "-v", help="Also show Ray's, Tune's, Optuna's and MLflow's own log lines (filtered out by default).")


@app.command()
def run(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="Benchmark YAML, e.g. configs/digits.yaml."),
    # A str, not a Path: Path("") is "." and an empty --results would fill the working folder.
    results: str = typer.Option(
        str(DEFAULT_RESULTS), "--results", metavar="FOLDER", help="Folder for the Parquet leaderboard, the default MLflow store and Ray's search state."
    ),
    address: Optional[str] = _ADDRESS,
    tracking_uri: Optional[str] = _TRACKING_URI,
    optuna_storage: Optional[str] = _OPTUNA_STORAGE,
    num_cpus: Optional[int] = _NUM_CPUS,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
    restart: bool = typer.Option(
        False, "--restart",
        help="The results folder holds a run of this benchmark with another config: set that run aside "
        "(rows and state moved under RESULTS/superseded/) and start afresh. Without it, such a run stops with exit 2.",
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run the failed trials of searches already in --results (by default they stay failed)."),
) -> None:
    """Tune every regularizer in CONFIG with the same budget, then print the leaderboard.

    Search: search.sampler (tpe, random, gp, cmaes, qmc) proposes each method's trials; TPE, GP
    and CMA-ES draw n_startup_trials at random first, by default a third of the method's trials
    (at least 2). search.budget counts the equal budget in trials (default) or in
    forward+backward passes. The final phase re-runs each method's final.top_k best search
    configs with every seed of final.seeds. Best: the completed (not stopped, not failed) search
    trial with the best search.metric, ties to the other validation metric, then the run id.

    While it runs: one line per finished trial (method k/M, trials done/planned, the sampled
    hyperparameters, the result, and an ETA for the whole run from the trials finished so far),
    with a progress bar on a terminal or a heartbeat line every 30 s in a pipe.

    All methods search at once, in one Ray Tune experiment: each keeps its own Optuna study
    (persisted, see --optuna-storage), its own ASHA early stopping and its own budget, and its
    final seeds start as soon as its own search has ended.

    Re-running the same CONFIG with the same --results resumes an interrupted run (Ctrl-C
    saves it) and continues the same Optuna studies; finished trials are not re-run, and failed trials stay failed unless
    --retry-failed is given. A changed CONFIG (anything that changes results) stops with exit 2
    naming the keys that differ: use another --results folder or benchmark name, or --restart.
    One run at a time per results folder.

    Exit status: 0 when the run ended (failed trials are recorded and counted on the board); 1
    when every trial failed (the most frequent reason is printed); 2 for bad input, refused
    before anything starts; 130 when interrupted (Ctrl-C), 143 on SIGTERM (the run is saved: re-run to
    resume); 1 also when the disk fills up or a store stays locked (saved likewise).
    """
    from bench.catalog import load_benchmark
    from bench.config import ConfigError

    verbosity = _verbosity(quiet, verbose)
    if not results.strip():
        _fail("--results is empty: name a folder (default: results)")
    folder = Path(results)
    try:
        config = load_benchmark(config_path)
    except ConfigError as error:
        _fail(str(error))
    if optuna_storage is not None:
        config = config.model_copy(update={"optuna_storage": optuna_storage})
    _execute(
        config, folder, address, tracking_uri, num_cpus, verbosity, restart=restart, retry_failed=retry_failed,
        resume_hint=f"sharpbench run {config_path} --results {folder}",
    )


def _no_results_folder(folder: Path) -> str:
    if folder.exists():
        return f"{folder} is not a folder: give the --results folder of `sharpbench run`"
    return f"results folder not found: {folder} (run `sharpbench run CONFIG --results {folder}` first)"


@app.command()
def final(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="The --results folder of an earlier `sharpbench run`."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", metavar="NAME", help="Which benchmark of the folder (needed when it holds several)."),
    seeds: Optional[list[int]] = typer.Option(None, "--seed", metavar="SEED", help="Final training seed (repeatable); default: the run's final.seeds."),
    top_k: Optional[int] = typer.Option(None, "--top-k", metavar="K", min=1, help="Re-run each method's K best search configs; default: the run's final.top_k."),
    address: Optional[str] = _ADDRESS,
    tracking_uri: Optional[str] = _TRACKING_URI,
    optuna_storage: Optional[str] = _OPTUNA_STORAGE,
    num_cpus: Optional[int] = _NUM_CPUS,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
) -> None:
    """Run only the final phase from an existing results folder: each method's top-k search
    configs (the same rule as `run` and the leaderboard) × the final seeds.

    Uses the config the run recorded in RESULTS_DIR; --seed and --top-k override its final
    section (and are recorded for the next call). Final runs already recorded are not re-run.
    Exit status as for `run`.
    """
    from bench.config import ConfigError, with_final
    from bench.errors import unknown_name
    from bench.run_record import load_records

    verbosity = _verbosity(quiet, verbose)
    if not results_dir.is_dir():
        _fail(_no_results_folder(results_dir))
    try:
        recorded = {name: record.config for name, record in load_records(results_dir).items()}
    except ConfigError as error:
        _fail(str(error))
    if not recorded:
        from bench.results.parquet import results_folder_hint

        _fail(results_folder_hint(results_dir) or f"no recorded run in {results_dir}: run `sharpbench run CONFIG --results {results_dir}` first")
    if benchmark is None:
        if len(recorded) > 1:
            _fail(f"{results_dir} holds several benchmarks; choose one with --benchmark: {', '.join(sorted(recorded))}")
        benchmark = next(iter(recorded))
    if benchmark not in recorded:
        _fail(unknown_name("benchmark", benchmark, sorted(recorded)))
    config = recorded[benchmark]
    overrides = {key: value for key, value in (("seeds", seeds), ("top_k", top_k)) if value}
    if overrides:
        try:
            config = with_final(config, **overrides)
        except ConfigError as error:
            _fail(str(error))
    if not config.final.seeds:
        _fail("no final seeds: the run's config has final.seeds empty; give them with --seed 1 --seed 2 ...")
    from bench.plan import plan_methods
    from bench.search.finals import results_rows, search_rows

    rows = results_rows(results_dir)
    short = [f"{p.regularizer} {search_rows(p, rows)}/{p.budget.trials}" for p in plan_methods(config) if search_rows(p, rows) < p.budget.trials]
    if short:
        # The best config of a partial search may not be the search's best: its final rows would mislead.
        _fail(
            f"the searches in {results_dir} are unfinished (search trials recorded: {', '.join(short)}); "
            f"finish them first with: sharpbench run CONFIG --results {results_dir}"
        )
    if optuna_storage is not None:
        config = config.model_copy(update={"optuna_storage": optuna_storage})
    _execute(
        config, results_dir, address, tracking_uri, num_cpus, verbosity, final_only=True,
        resume_hint=f"sharpbench final {results_dir} --benchmark {benchmark}",
    )


def _verbosity(quiet: bool, verbose: bool) -> Any:
    from bench.console import Verbosity

    if quiet and verbose:
        _fail("--quiet and --verbose exclude each other")
    return Verbosity.quiet if quiet else Verbosity.verbose if verbose else Verbosity.normal


def _execute(
    config: Any,
    results: Path,
    address: str | None,
    tracking_uri: str | None,
    num_cpus: int | None,
    verbosity: Any,
    *,
    resume_hint: str,
    final_only: bool = False,
    restart: bool = False,
    retry_failed: bool = False,
) -> None:
    """Check everything checkable, take the folder's lock and its run identity, start Ray, run
    the phases with a live console, print the board."""
    from bench import run_record
    from bench.preflight import PreflightError, check_before_start

    try:
        # Everything checkable, in seconds, before Ray starts or anything is written (bench/preflight.py);
        # first, before the imports below (MLflow alone takes seconds).
        check_before_start(config, results, address=address, tracking_uri=tracking_uri, num_cpus=num_cpus)
    except PreflightError as error:
        _fail(str(error))
    from bench.data import DatasetError, load_dataset
    from bench.models import ModelError

    try:
        if address is None:
            load_dataset(config.dataset)  # fail fast on a missing dataset, before any trial starts
    except (DatasetError, ModelError) as error:
        _fail(str(error))
    results = results.resolve()
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"cannot create results folder {results}: {error.strerror}")
    try:
        with run_record.FolderLock(results):
            _execute_locked(config, results, address, tracking_uri, num_cpus, verbosity, resume_hint, final_only, restart, retry_failed)
    except run_record.FolderBusy as busy:
        _fail(str(busy))


def _execute_locked(
    config: Any, results: Path, address: str | None, tracking_uri: str | None, num_cpus: int | None, verbosity: Any,
    resume_hint: str, final_only: bool, restart: bool, retry_failed: bool,
) -> None:
    from bench import run_record, search
    from bench.config import ConfigError
    from bench.console import Verbosity, quiet_third_party
    from bench.plan import plan_methods
    from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, normalize_tracking_uri
    from bench.results.parquet import tidy_dataset

    # The driver imports Ray, Optuna and MLflow, which set up their loggers on import: before
    # quiet_third_party quiets them (bench.search itself loads its modules lazily).
    from bench.search import driver  # noqa: F401

    quiet_third_party(verbosity)
    uri = normalize_tracking_uri(tracking_uri or config.tracking_uri or default_tracking_uri(results))
    try:
        opened = MlflowSink(uri, experiment_name=config.benchmark)  # reachable and usable, before any trial runs
    except Exception as error:  # MLflow raises many types here; all mean "this URI does not work"
        # A store whose creation an older sharpbench was killed in (new ones appear whole).
        half_made = uri.startswith("sqlite:") and "OperationalError" in str(error)
        hint = "; a store whose creation was interrupted stays unopenable: if it holds no runs you need, delete it and run again" if half_made else ""
        _fail(f"cannot use MLflow tracking URI {uri}: {_first_line(error)}{hint}")
    from bench.results.mlflow_mirror import open_mirror

    def tell_outage(outage: Any) -> None:  # once per run: later MLflow calls are skipped
        errors.print(
            f"warning: {outage.describe()}: the run goes on; rows are in Parquet; back-fill later with: "
            f"sharpbench sync-mlflow {shlex.quote(str(results))} --tracking-uri {shlex.quote(uri)}",
            highlight=False, markup=False, soft_wrap=True,
        )

    mirror = open_mirror(uri, tell_outage)
    try:
        if final_only:
            # `final` may change the final section (seeds, top-k) of the run it extends, nothing else.
            record = run_record.load_record(run_record.record_path(results, config.benchmark)).with_config(config)
            record.save(results)
        else:
            record = run_record.resolve(config, results, restart=restart)
    except (run_record.IdentityMismatch, ConfigError) as error:
        _fail(str(error))
    try:
        tidy = tidy_dataset(results)  # unreadable files quarantined, old layouts rewritten, stale staging removed
    except OSError as error:
        _fail(f"cannot tidy the results folder {results}: {error}")
    for line in tidy.lines():
        errors.print(f"warning: {line}", highlight=False, markup=False, soft_wrap=True)

    storage = search.absolute_storage(config.optuna_storage) if config.optuna_storage else search.default_storage(results)
    plans = plan_methods(config)
    finals = len(config.final.seeds) * config.final.top_k
    searched = 0 if final_only else 1
    if verbosity is not Verbosity.quiet:
        trials = sorted({plan.budget.trials for plan in plans})
        what = f"{'/'.join(map(str, trials))} search trial{'' if trials == [1] else 's'} + " if searched else ""
        console.print(
            f"[bold]{config.benchmark}[/]: {_count(len(plans), 'method')} × ({what}{_count(finals, 'final run')}), "
            f"{_count(config.training.epochs, 'epoch')} each; sampler {config.search.sampler.name}, budget in {config.search.budget.kind}"
            f"\nresults → {results}\nMLflow  → {uri}\nOptuna  → {storage}",
            highlight=False, soft_wrap=True,
        )
    from bench.signals import terminate_as_interrupt

    # From here on SIGTERM (Slurm, Kubernetes) stops the run as Ctrl-C does, replacing Ray's handlers.
    with terminate_as_interrupt() as termination:
        try:
            _start_ray(config, address, num_cpus, verbosity, termination)
            _run_and_report(config, results, uri, storage, opened, mirror, record, plans, finals, searched, verbosity,
                            resume_hint, final_only, retry_failed, termination)
        except (KeyboardInterrupt, SystemExit) as stop:
            if isinstance(stop, SystemExit) and stop.code != signal.SIGTERM:  # Ray's handler: sys.exit(15)
                raise
            termination.received = termination.received or isinstance(stop, SystemExit)
            errors.print(f"{termination.verb}: the run is saved. Resume with: {resume_hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=termination.exit_status) from None


def _start_ray(config: Any, address: str | None, num_cpus: int | None, verbosity: Any, termination: Any) -> None:
    """Start or join Ray, take SIGTERM back from Ray's handlers, check the trials fit on a node."""
    from bench import search
    from bench.console import Verbosity

    try:
        with termination.held():
            search.init_ray(address, num_cpus=num_cpus, verbose=verbosity is Verbosity.verbose)
    except ConnectionError as error:
        _fail(f"cannot join the Ray cluster at {address}: {_first_line(error)}")
    if address is not None:
        # A trial must fit on one node: only the connected cluster can tell (bench/preflight.py).
        from bench.preflight import PreflightError, check_placeable

        try:
            check_placeable(config, search.node_resources())
        except PreflightError as error:
            import ray

            with termination.held():
                ray.shutdown()
            _fail(str(error))


def _run_and_report(config: Any, results: Path, uri: str, storage: str, opened: Any, mirror: Any, record: Any,
                    plans: list[Any], finals: int, searched: int, verbosity: Any, resume_hint: str, final_only: bool,
                    retry_failed: bool, termination: Any) -> None:
    """The phases with a live console, the board, the report and the commands to look further."""
    from bench import search
    from bench.console import RunProgress
    from bench.errors import first_line
    from bench.failures import InfrastructureBroken, disk_full, exception_chain
    from bench.results.schema import Phase
    from bench.stores import is_locked_error, locked_message

    progress = RunProgress(
        console,
        [(plan.regularizer, plan.budget.trials * searched, finals) for plan in plans],
        verbosity=verbosity,
        already_done=_recorded_trials(results, config.benchmark),
    )
    phases = (Phase.FINAL,) if final_only else (Phase.SEARCH, Phase.FINAL)
    try:
        with progress:
            search.run_benchmark(
                config, results_dir=results, tracking_uri=uri, progress=progress, phases=phases, instance=record.instance,
                retry_failed=retry_failed, mlflow_sink=opened, optuna_storage=storage,
            )
    except search.SearchInterrupted as interrupted:
        errors.print(f"{termination.verb}: {interrupted}. Resume with: {resume_hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=termination.exit_status) from None
    except Exception as error:
        if disk_full(error):
            errors.print(f"error: {_disk_full_message(results, config.benchmark)}. Resume with: {resume_hint}",
                         highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
        broken = next((e for e in exception_chain(error) if isinstance(e, InfrastructureBroken)), None)
        if broken is not None:
            errors.print(f"error: {first_line(broken)}. Resume with: {resume_hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
        if not is_locked_error(error):
            raise
        errors.print(f"error: {locked_message(f'the Optuna store {storage}')}. Resume with: {resume_hint}",
                     highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except BaseException:
        _shutdown_ray()
        raise
    _print_board(results, config.benchmark)
    from bench.outcome import ALL_FAILED_EXIT_STATUS, failure_summary
    from bench.results.parquet import read_rows

    all_failed = failure_summary(read_rows(results).to_pylist(), config.benchmark)
    report = _report_to_mlflow(results, config.benchmark, None if mirror.down else opened, plans, record.instance)
    # One command per line, never wrapped, so each can be pasted as it is.
    commands = [
        ("Leaderboard", f"sharpbench leaderboard {shlex.quote(str(results))}"),
        ("MLflow UI  ", f"mlflow ui --backend-store-uri {shlex.quote(uri)}"),
        ("Studies    ", f"optuna-dashboard {shlex.quote(storage)}"),
    ]
    if report is not None:
        commands.append(("Report     ", f"xdg-open {shlex.quote(str(report))}"))
    for label, command in commands:
        console.print(f"{label}: {command}", highlight=False, markup=False, soft_wrap=True)
    # Last, after the board and the report: Ray's teardown resets SIGTERM to its default action in
    # every thread (a SIGTERM during its seconds killed the run silently, before the report).
    _shutdown_ray()
    if all_failed:
        errors.print(f"error: {all_failed}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=ALL_FAILED_EXIT_STATUS)


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


def _disk_full_message(results: Path, benchmark: str) -> str:
    """One line for a run stopped by a full disk: the folder, its free space, what was kept."""
    import shutil

    from bench.results.parquet import read_rows

    free = shutil.disk_usage(results).free / 2**20
    kept = sum(1 for row in read_rows(results, problems=[]).to_pylist() if row["benchmark"] == benchmark)
    return (f"the disk holding {results} is full ({free:.1f} MiB free): the run stopped; the {kept} trial row(s), "
            "studies and search state written so far are kept; free space")


def _report_to_mlflow(results: Path, benchmark: str, sink: Any, plans: list[Any], instance: str) -> Path | None:
    """Write the HTML report and attach its figures and the leaderboard to each method's MLflow
    parent runs through ``sink``, the run's own (none when ``sink`` is None: MLflow went down
    during the run, already said; a second sink would say the store's warnings again). A
    failure is said in one line and the run still succeeds: Parquet, the record, holds every
    result, and `sharpbench report` can redo this."""
    import tempfile

    from bench.report.build import build_report
    from bench.results.schema import Phase

    try:
        artifacts = build_report([results])
    except Exception as error:  # the run's results are safe in Parquet: say why, carry on
        errors.print(f"warning: the report could not be written: {_first_line(error)}", highlight=False, soft_wrap=True)
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
                for phase in Phase:
                    parent = sink.find_parent_run(plan.parent_key(phase.value, instance))
                    if parent is not None:
                        sink.log_parent_artifacts(parent, files)
    except Exception as error:  # MLflow is a mirror of the Parquet record: say so, carry on
        errors.print(f"warning: report figures not attached to MLflow: {_first_line(error)}", highlight=False, soft_wrap=True)
    return artifacts.html_path


def _recorded_trials(results: Path, benchmark: str) -> dict[tuple[str, str], int]:
    """Trials an earlier run into ``results`` already recorded, per (method, phase)."""
    from collections import Counter

    from bench.results.parquet import read_rows

    table = read_rows(results).select(["benchmark", "regularizer", "phase"]).to_pylist()
    return dict(Counter((row["regularizer"], row["phase"]) for row in table if row["benchmark"] == benchmark))


def _first_line(error: BaseException) -> str:
    from bench.errors import first_line

    return first_line(error)


def _print_board(results: Path, benchmark: str) -> None:
    """The leaderboard of ``benchmark``, read back from the Parquet rows just written."""
    from bench.leaderboard import build_leaderboard, render, to_rich
    from bench.results.parquet import read_rows

    boards = [board for board in build_leaderboard(read_rows(results)) if board.benchmark == benchmark]
    if console.is_terminal:
        console.print(to_rich(boards))
    else:
        # A pipe or a log file: markdown, whose rows are never wrapped or cut (a fixed-width table
        # would truncate the chosen hyperparameters).
        sys.stdout.write(render(boards, "markdown").rstrip("\n") + "\n")


@app.command("sync-mlflow")
def sync_mlflow(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A --results folder of `sharpbench run`."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", metavar="URI", help="MLflow tracking URI to fill; default: the run's, else sqlite under the results folder."
    ),
) -> None:
    """Back-fill MLflow from the Parquet rows (after a tracking-store outage, or into another
    store): every row gets its trial run under its method's parent, with params, final metrics,
    status and tags. Idempotent: runs are found by their trial key, a second call changes nothing.
    """
    from bench.config import ConfigError
    from bench.preflight import PreflightError, check_tracking_uri
    from bench.results.mlflow_sync import SyncError, sync_to_mlflow

    if tracking_uri is not None:
        try:
            check_tracking_uri(tracking_uri)
        except PreflightError as error:
            _fail(str(error))
    try:
        done = sync_to_mlflow(results_dir, tracking_uri)
    except (SyncError, ConfigError) as error:
        _fail(str(error))
    except Exception as error:  # MLflow failed part-way: what is done stays done, a rerun finishes
        errors.print(
            f"error: MLflow failed during the sync ({_first_line(error)}); run the same command again to finish",
            highlight=False, markup=False, soft_wrap=True,
        )
        raise typer.Exit(code=1) from None
    console.print(done.line(), highlight=False, markup=False, soft_wrap=True)


_SPLIT_HELP = ("When folders hold one benchmark name run with different configs (config hashes differ), rank each "
               "config as its own benchmark, labelled NAME@HASH; without it they are refused (exit 2).")


@app.command()
def leaderboard(
    results_dirs: Optional[list[Path]] = typer.Argument(
        None, metavar="RESULTS_DIR", help="One or more --results folders of `sharpbench run` (default: results)."
    ),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", help="Output format."),
    baseline: Optional[str] = typer.Option(None, "--baseline", metavar="METHOD", help="Method every other is tested against (default: erm; a benchmark without it gets no comparisons)."),
    alpha: float = typer.Option(0.05, "--alpha", metavar="ALPHA", help="Family-wise significance level of the Holm-adjusted tests, in (0, 1)."),
    split_configs: bool = typer.Option(False, "--split-configs", help=_SPLIT_HELP),
) -> None:
    """Rank methods per benchmark by the test accuracy of their best config (the rule of `run`:
    the completed search trial with the best search.metric, re-run with the final seeds), with
    95% t-intervals, tests against a baseline (paired on seeds, else Welch; Holm-adjusted) and
    rank groups of overlapping intervals.

    Several folders (e.g. from several machines or clusters) are ranked as one: the union of their
    rows, each run id once (the row with the latest timestamp wins). Folders that ran one benchmark
    name with different configs are refused (exit 2) unless --split-configs ranks each config apart.
    """
    from bench.leaderboard import DEFAULT_BASELINE, build_leaderboard, methods_present, render, to_rich
    from bench.merge import config_clashes, read_rows_by_config
    from bench.results.parquet import UnreadableFile, dataset_dir, has_rows, results_folder_hint

    folders = list(dict.fromkeys(results_dirs or [DEFAULT_RESULTS]))  # a folder named twice counts once
    for folder in folders:
        if not folder.is_dir():
            _fail(_no_results_folder(folder))
    empty = [folder for folder in folders if not has_rows(folder)]
    if len(empty) == len(folders):
        where = ", ".join(str(dataset_dir(folder)) for folder in folders)
        for hint in filter(None, map(results_folder_hint, folders)):
            _fail(hint)
        _fail(f"no results: the Parquet dataset{'s' if len(folders) > 1 else ''} {where} {'are' if len(folders) > 1 else 'is'} empty or missing")
    if not 0.0 < alpha < 1.0:
        _fail(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    for folder in empty:
        # Not an error (the others have rows), but a folder that adds nothing is worth a line.
        errors.print(f"note: no results in {folder}; ranking the other folders", highlight=False, soft_wrap=True)
    clashes = config_clashes(folders)
    if clashes and not split_configs:
        _fail(clashes[0].message())
    problems: list[UnreadableFile] = []
    table = read_rows_by_config(folders, clashes, problems=problems)
    for problem in problems:  # a read-only command: skip and say so, never move data
        errors.print(f"warning: {problem}", highlight=False, markup=False, soft_wrap=True)
    if table.num_rows == 0:
        _fail(f"no readable results in {', '.join(map(str, folders))} ({len(problems)} unreadable file(s) skipped)")
    present = methods_present(table)
    if baseline is not None and baseline not in present:
        _fail(f"--baseline {baseline!r} has no rows in {', '.join(map(str, folders))}; methods present: {', '.join(present)}")
    boards = build_leaderboard(table, baseline=baseline or DEFAULT_BASELINE, alpha=alpha)
    if fmt is TableFormat.table and console.is_terminal:
        console.print(to_rich(boards))  # fitted to the terminal, with colours
        return
    # Elsewhere (a pipe, a file) the table is as wide as its cells: nothing cut to a guessed width.
    output = render(boards, fmt.value, width=None)
    sys.stdout.write(output if output.endswith("\n") else output + "\n")


@app.command()
def report(
    results_dirs: list[Path] = typer.Argument(..., metavar="DIR [DIR ...]", help="Results folders of `sharpbench run` (e.g. committed reference results and your own)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE.html", help="The HTML file to write (default: DIR/report.html of the first DIR; missing folders are made); PNGs go to figures/ beside it."),
    baseline: Optional[str] = typer.Option(None, "--baseline", metavar="METHOD", help="Method every other is tested against (default: erm)."),
    split_configs: bool = typer.Option(False, "--split-configs", help=_SPLIT_HELP),
) -> None:
    """One self-contained HTML page (figures embedded, opens from disk) plus the PNGs: the
    leaderboard, accuracy against compute with the Pareto front, every final seed, flatness
    against test accuracy, and each method's search history and hyperparameter importance."""
    from bench.report.build import ReportError, build_report

    try:
        artifacts = build_report(results_dirs, out, baseline=baseline, split_configs=split_configs)
    except ReportError as error:
        _fail(str(error))
    for skipped in artifacts.skipped:  # a read-only command: skip and say so, as `leaderboard` does
        errors.print(f"warning: {skipped}", highlight=False, markup=False, soft_wrap=True)
    # One unwrapped line, so the path can be pasted.
    console.print(str(artifacts.html_path.resolve()), highlight=False, markup=False, soft_wrap=True)


@app.command("list")
def list_regularizers(
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Output format."),
) -> None:
    """Registered regularizers (built-in and plugins) with their hyperparameters, ranges and scales."""
    import regularizers

    try:
        names = regularizers.available()
    except regularizers.RegistryError as error:
        _fail(str(error))
    if fmt is ListFormat.json:
        payload = [
            {
                "name": name,
                "doc": (regularizers.get(name).__doc__ or "").strip().splitlines()[0] if regularizers.get(name).__doc__ else "",
                "module": regularizers.get(name).__module__,
                "hyperparameters": [hp.to_dict() for hp in regularizers.hyperparameters_of(name)],
            }
            for name in names
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="Registered regularizers")
    for column in ("name", "hyperparameter", "default", "range", "scale", "searched", "meaning"):
        table.add_column(column, no_wrap=column != "meaning")
    for name in names:
        hparams = regularizers.hyperparameters_of(name)
        if not hparams:
            table.add_row(name, "-", "", "", "", "", "")
        for index, hp in enumerate(hparams):
            table.add_row(
                name if index == 0 else "",
                hp.name,
                str(hp.default),
                hp.domain.describe().rsplit(" ", 1)[0] if hp.domain.scale != "categorical" else hp.domain.describe(),
                hp.domain.scale,
                "yes" if hp.searched else "option",
                hp.help,
            )
    console.print(table)


@app.command()
def perf(
    models: Optional[list[str]] = typer.Option(None, "--model", metavar="MODEL", help="Model to time (repeatable); default: the digits CNN and resnet18 on 32×32."),
    methods: Optional[list[str]] = typer.Option(None, "--method", metavar="METHOD", help="Regularizer to time (repeatable); default: every registered one (erm is always added as the reference)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", metavar="DATASET", help="Time real batches of this dataset (with its augmentation) and report epoch time; default: random tensors."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", metavar="FOLDER", help="Where --dataset's files are."),
    batch_size: int = typer.Option(32, "--batch-size", metavar="N", min=1, help="Samples per step."),
    warmup: int = typer.Option(2, "--warmup", metavar="STEPS", min=0, help="Untimed steps of every method first."),
    repeats: int = typer.Option(10, "--repeats", metavar="ROUNDS", min=1, help="Rounds: each times one block of every method in turn; medians and IQRs are over rounds (at least 4 for a reliable figure)."),
    block_steps: int = typer.Option(1, "--block-steps", metavar="STEPS", min=1, help="Steps per timed block (more for very short steps)."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    epoch_samples: Optional[int] = typer.Option(None, "--epoch-samples", metavar="N", min=1, help="Training-set size for the epoch-time estimate without --dataset (e.g. 45000 for CIFAR less validation)."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Output format."),
) -> None:
    """Time one optimizer step of each method: step time, passes, ratio to ERM, overhead beyond the pass count.

    Methods are interleaved (each round times every method once, back to back) and every figure
    is the median ± interquartile range over rounds; the ratio to ERM is taken within each round.
    Overhead = ratio to ERM / ratio of pass-equivalents (a forward-only pass counts 1/3); target
    <= 1.05, '!' marks a median above it. Unreliable figures are marked '?': fewer than 4 rounds;
    a step time whose IQR exceeds 10% of its median; an overhead whose IQR exceeds both 0.05 and
    |overhead - 1| / 2. (The numbers are bench.benchmarks.perf's constants; a test keeps this text in step.)
    """
    import regularizers
    from bench.benchmarks.perf import benchmark_steps
    from bench.data import DatasetError
    from bench.errors import unknown_name
    from bench.measure.timing import RELIABILITY_RULE, TARGET_OVERHEAD
    from bench.models import ModelError, available_models

    for model in models or []:
        if model not in available_models():
            _fail(unknown_name("model", model, available_models()))
    for method in methods or []:
        if method not in regularizers.available():
            _fail(unknown_name("regularizer", method, regularizers.available()))
    if device not in ("auto", "cpu", "cuda"):
        _fail(unknown_name("device", device, ["auto", "cpu", "cuda"]))
    load_before = os.getloadavg()[0]
    try:
        timings = benchmark_steps(
            models, methods, dataset=dataset, data_dir=data_dir, batch_size=batch_size, warmup=warmup,
            repeats=repeats, steps_per_block=block_steps, device=device, compile=compile, epoch_samples=epoch_samples,
            progress=(lambda line: errors.print(line, highlight=False)) if fmt is ListFormat.table else None,
        )
        load_after = os.getloadavg()[0]
    except (DatasetError, ModelError, RuntimeError) as error:
        _fail(_first_line(error))
    if fmt is ListFormat.json:
        sys.stdout.write(json.dumps([t.to_dict() for t in timings], indent=2) + "\n")
        return
    block = f"blocks of {block_steps} steps, " if block_steps > 1 else ""
    table = Table(title=f"One optimizer step: median ± IQR over {repeats} interleaved rounds ({block}after {warmup} warm-up)")
    for column in ("model", "method", "device", "batch", "ms/step", "samples/s", "fwd/bwd", "× erm", "overhead", "epoch"):
        table.add_column(column, justify="right" if column not in ("model", "method", "device") else "left")
    for t in timings:
        step_mark = "" if t.reliability.step_time is None else " ?"
        ratio_mark = "" if t.reliability.ratio is None else " ?"
        table.add_row(
            t.model, t.method, t.device, str(t.batch_size),
            f"{_milliseconds(t.step_seconds.median, t.step_seconds.iqr)}{step_mark}",
            f"{t.samples_per_second:.0f}{step_mark}",
            f"{t.forward_passes}/{t.backward_passes}",
            f"{t.ratio_to_erm.median:.2f} ± {t.ratio_to_erm.iqr:.2f}{ratio_mark}",
            f"{t.overhead.median:.2f} ± {t.overhead.iqr:.2f}{' !' if t.misses_target else ''}{ratio_mark}",
            "-" if t.epoch_seconds is None else f"{t.epoch_seconds:.1f}s{step_mark}",
        )
    console.print(table)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    say(f"± is the interquartile range (q3 - q1) over rounds. overhead = (time ratio to erm) / (pass-equivalents ratio); target <= {TARGET_OVERHEAD} ('!' marks a median above it).")
    say(RELIABILITY_RULE + ".")
    # Other processes compete for the cores: the load says how much, next to the spreads it causes.
    say(f"1-minute load average: {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs.")
    unreliable = [t for t in timings if not t.reliable]
    if unreliable:
        say(f"{len(unreliable)} of {len(timings)} rows have unreliable figures (a busy machine? more --repeats?):")
        for t in unreliable:
            say(f"  ? {t.model}/{t.method}: {t.reliability.reason}")


def _milliseconds(median: float, iqr: float) -> str:
    """``median ± iqr`` in ms, to the precision the median deserves (0.1 ms above 10 ms)."""
    digits = 1 if median >= 0.010 else 2
    return f"{median * 1000:.{digits}f} ± {iqr * 1000:.{digits}f}"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
