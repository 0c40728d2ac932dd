"""``sharpbench``: thin command line over config → search → sinks → leaderboard.

Bad input (config, dataset, names, paths) exits with status 2 and one line on stderr, never a
traceback; a crash inside a trial is recorded as a failed trial, not raised here.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from bench.console import Output
from bench.errors import first_line

app = typer.Typer(
    help="Benchmark flat-minima regularizers under an equal tuning budget (Ray Tune + Optuna), "
    "recording every trial to MLflow and a Parquet leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click errors: a usage line and one "Error: ..." line, not a multi-line box.
    rich_markup_mode=None,
)
OUTPUT = Output.standard()
console, errors = OUTPUT.out, OUTPUT.err

DEFAULT_RESULTS = Path("results")


def version_line() -> str:
    """``sharpbench X (commit C) · python … · torch … · …``: what a row's provenance records, read
    without importing the packages (a quick answer, and one that works where CUDA does not)."""
    from bench import __version__
    from bench.provenance import TRACKED_PACKAGES, git_commit, package_versions

    commit = git_commit()
    versions = package_versions()
    if commit:  # abbreviated, keeping the "-dirty" of a work tree with changes
        commit = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
    parts = [f"sharpbench {__version__}" + (f" (commit {commit})" if commit else "")]
    parts += [f"{name} {versions[name]}" for name in ("python", *TRACKED_PACKAGES) if name != "sharpbench"]
    return " · ".join(parts)


def _print_version(value: bool) -> None:
    if value:
        console.print(version_line(), highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print sharpbench's version and commit and the versions of the packages it records, then exit.",
    ),
) -> None:
    pass  # the options above; the help text is the app's


def _print_error(message: str) -> None:
    # The message as plain text: a path or a config value with [brackets] is no markup.
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    _print_error(message)
    raise typer.Exit(code=2)


class TableFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    latex = "latex"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


# Options shared by `run` and `final`.
_ADDRESS = typer.Option(
    None,
    "--address",
    metavar="ADDRESS",
    help="Join a running Ray cluster (e.g. 'auto' or 'ray://head:10001'); default: start a local one.",
)
_TRACKING_URI = typer.Option(
    None,
    "--tracking-uri",
    metavar="URI",
    help="MLflow tracking URI; default: the config's, else sqlite under the results folder.",
)
_OPTUNA_STORAGE = typer.Option(
    None,
    "--optuna-storage",
    metavar="STORE",
    help=(
        "Where the Optuna studies live (one per method; optuna-dashboard reads them): a SQLAlchemy URL, or "
        "an Optuna journal file ending in .journal; default: the config's, else RESULTS/optuna.journal."
    ),
)
_NUM_CPUS = typer.Option(None, "--num-cpus", metavar="N", min=1, help="CPUs of the local Ray runtime (default: all).")
_QUIET = typer.Option(
    False, "--quiet", "-q", help="Print only the final leaderboard, the commands to open the results, and errors."
)
_VERBOSE = typer.Option(
    False,
    "--verbose",
    "-v",
    help="Also show Ray's, Tune's, Optuna's and MLflow's own log lines (filtered out by default).",
)


@app.command()
def run(
    config_path: Path = typer.Argument(
        ..., metavar="CONFIG", help="Benchmark or suite YAML, e.g. configs/digits.yaml or configs/suite_cpu.yaml."
    ),
    benchmark: Optional[str] = typer.Option(
        None,
        "--benchmark",
        metavar="NAME",
        help="Of a suite CONFIG, run only this benchmark (alone, as an ordinary run into --results).",
    ),
    # A str, not a Path: Path("") is "." and an empty --results would fill the working folder.
    results: str = typer.Option(
        str(DEFAULT_RESULTS),
        "--results",
        metavar="FOLDER",
        help="Folder for the Parquet leaderboard, the default MLflow store and Ray's search state.",
    ),
    address: Optional[str] = _ADDRESS,
    tracking_uri: Optional[str] = _TRACKING_URI,
    optuna_storage: Optional[str] = _OPTUNA_STORAGE,
    num_cpus: Optional[int] = _NUM_CPUS,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
    restart: bool = typer.Option(
        False,
        "--restart",
        help="The results folder holds a run of this benchmark with another config: set that run aside "
        "(rows and state moved under RESULTS/superseded/) and start afresh. Without it, such a run stops with exit 2.",
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Re-run the failed trials of searches already in --results (by default they stay failed).",
    ),
    no_report: bool = typer.Option(
        False, "--no-report", help="Skip the HTML report at the end (`sharpbench report RESULTS` writes it later)."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the plan (methods, trials, epochs, passes, resources per trial, concurrency, a time estimate "
        "from `sharpbench perf` figures when present) and exit 0; nothing is started or written.",
    ),
    perf_file: Optional[Path] = typer.Option(
        None,
        "--perf",
        metavar="FILE.json",
        help="With --dry-run: step times from `sharpbench perf --format json` (default: RESULTS/perf.json if present).",
    ),
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
    saves it) and continues the same Optuna studies; finished trials are not re-run, and failed
    trials stay failed unless --retry-failed is given. A changed CONFIG (anything that changes
    results) stops with exit 2 naming the keys that differ: use another --results folder or
    benchmark name, or --restart.
    One run at a time per results folder.

    A suite CONFIG (`suite:`, `defaults:`, `benchmarks:`; see docs/suites.md) runs all its
    benchmarks at once on one Ray runtime, each as its own run (identity, rows, resume) in its own
    process with its log under RESULTS/logs/SUITE/, and then prints the suite board. Re-running it
    resumes every benchmark that had not ended.

    Exit status: 0 when the run ended (failed trials are recorded and counted on the board); 1
    when every trial failed (the most frequent reason is printed); 2 for bad input, refused
    before anything starts; 130 when interrupted (Ctrl-C), 143 on SIGTERM (the run is saved: re-run to
    resume); 1 also when the disk fills up or a store stays locked (saved likewise).
    """
    from bench.catalog import load_any, load_benchmark
    from bench.config import ConfigError
    from bench.config.suite import SuiteConfig
    from bench.signals import SUITE_PARENT, SUITE_RESUME, die_with_parent

    verbosity = _verbosity(quiet, verbose)
    if not results.strip():
        _fail("--results is empty: name a folder (default: results)")
    folder = Path(results)
    if os.environ.get(SUITE_PARENT, "").isdigit():
        die_with_parent(int(os.environ[SUITE_PARENT]))  # one benchmark of a suite: dies with it
    try:
        workload = load_any(config_path) if benchmark is None else load_benchmark(config_path, benchmark)
    except ConfigError as error:
        _fail(str(error))
    configs = list(workload.benchmarks) if isinstance(workload, SuiteConfig) else [workload]
    if dry_run:
        for config in configs:
            _dry_run(config, folder, perf_file, num_cpus, address)
        if isinstance(workload, SuiteConfig):
            from bench.suite import planned_trials

            OUTPUT.say(
                f"suite {workload.suite}: {len(configs)} benchmarks, {sum(map(planned_trials, configs)):,} trials in "
                "all, on one Ray runtime whose slots they share: expect about the sum of the benchmarks' times"
            )
        return
    if perf_file is not None:
        _fail("--perf goes with --dry-run (the run itself measures its trials)")
    options = _options(
        folder,
        address,
        tracking_uri,
        optuna_storage,
        num_cpus,
        verbosity,
        restart=restart,
        retry_failed=retry_failed,
        report=not no_report,
    )
    if isinstance(workload, SuiteConfig):
        _run_suite(workload, config_path, options)
        return
    args = ["run", str(config_path), *(["--benchmark", benchmark] if benchmark else []), "--results", str(folder)]
    hint = os.environ.get(SUITE_RESUME) or resume_command(args, options)  # a suite's benchmark: resume the suite
    _execute(lambda: _session().Session(workload, options, resume_hint=hint, output=OUTPUT))


def _run_suite(suite: Any, path: Path, options: Any) -> None:
    """`run` of a suite file: every benchmark at once (bench.suite), then the suite board."""
    import bench.suite
    from bench.api import suite as suite_board
    from bench.errors import BadInput, RunStopped
    from bench.leaderboard.suite_render import render_suite

    try:
        outcome = bench.suite.SuiteRun(suite, path, options, OUTPUT).run()
    except BadInput as error:
        _fail(str(error))
    except RunStopped as stopped:
        OUTPUT.tell(str(stopped))
        raise typer.Exit(code=stopped.exit_status) from None
    try:
        board = suite_board([outcome.results], benchmarks=outcome.names, tell=OUTPUT.tell)
    except BadInput as error:  # e.g. no baseline rows: the runs ended, their boards say why
        OUTPUT.tell(f"note: no suite board: {error}")
    else:
        sys.stdout.write(render_suite(board, "table"))
    minutes, seconds = divmod(round(outcome.seconds), 60)
    OUTPUT.say(f"suite {outcome.suite}: {len(outcome.names)} benchmarks in {minutes} min {seconds} s")
    if outcome.report is not None:
        OUTPUT.say(f"Report     : xdg-open {shlex.quote(str(outcome.report))}")
    only = " ".join(f"--benchmark {shlex.quote(name)}" for name in outcome.names)
    OUTPUT.say(f"Suite board: sharpbench leaderboard {shlex.quote(str(outcome.results))} --suite {only}")


def _dry_run(config: Any, results: Path, perf_file: Path | None, num_cpus: int | None, address: str | None) -> None:
    """`run --dry-run`: the plan and its estimate (bench.preview); reads, never writes."""
    from bench.preview import PERF_FILENAME, PreviewError, lines, preview, read_perf

    if results.exists() and not results.is_dir():  # the run's preflight wording (bench.preflight)
        _fail(f"results folder {results.resolve()} is a file, not a folder")
    path = perf_file or (results / PERF_FILENAME)
    try:
        figures = read_perf(path) if perf_file is not None or path.is_file() else []
    except PreviewError as error:
        _fail(str(error))
    plan = preview(
        config,
        perf=figures,
        perf_source=str(path) if figures or perf_file else None,
        num_cpus=num_cpus,
        address=address,
    )
    for line in lines(plan, config):
        OUTPUT.say(line)


@app.command()
def final(
    results_dir: Path = typer.Argument(
        ..., metavar="RESULTS_DIR", help="The --results folder of an earlier `sharpbench run`."
    ),
    benchmark: Optional[str] = typer.Option(
        None, "--benchmark", metavar="NAME", help="Which benchmark of the folder (needed when it holds several)."
    ),
    seeds: Optional[list[int]] = typer.Option(
        None, "--seed", metavar="SEED", help="Final training seed (repeatable); default: the run's final.seeds."
    ),
    top_k: Optional[int] = typer.Option(
        None,
        "--top-k",
        metavar="K",
        min=1,
        help="Re-run each method's K best search configs; default: the run's final.top_k.",
    ),
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
    verbosity = _verbosity(quiet, verbose)
    options = _options(results_dir, address, tracking_uri, optuna_storage, num_cpus, verbosity)
    hint = resume_command(["final", str(results_dir), *(["--benchmark", benchmark] if benchmark else [])], options)
    _execute(lambda: _session().Session.for_final(results_dir, benchmark, seeds, top_k, options, hint, OUTPUT))


def resume_command(args: list[str], options: Any) -> str:
    """The command that resumes a run: ``sharpbench ARGS`` and the options that say where it
    runs and records (its Ray cluster, stores, CPUs), quoted for a POSIX shell, so it can be
    pasted whatever the folder's name."""
    where = {
        "--address": options.address,
        "--tracking-uri": options.tracking_uri,
        "--optuna-storage": options.optuna_storage,
        "--num-cpus": options.num_cpus,
    }
    given = [part for option, value in where.items() if value is not None for part in (option, str(value))]
    return shlex.join(["sharpbench", *args, *given])


def _verbosity(quiet: bool, verbose: bool) -> Any:
    from bench.console import Verbosity

    if quiet and verbose:
        _fail("--quiet and --verbose exclude each other")
    return Verbosity.quiet if quiet else Verbosity.verbose if verbose else Verbosity.normal


def _session() -> Any:
    import bench.session  # imported late: `sharpbench --help` and bad input answer in a blink

    return bench.session


def _options(
    results: Path,
    address: str | None,
    tracking_uri: str | None,
    optuna_storage: str | None,
    num_cpus: int | None,
    verbosity: Any,
    *,
    restart: bool = False,
    retry_failed: bool = False,
    report: bool = True,
) -> Any:
    return _session().RunOptions(
        results=results,
        address=address,
        tracking_uri=tracking_uri,
        optuna_storage=optuna_storage,
        num_cpus=num_cpus,
        verbosity=verbosity,
        restart=restart,
        retry_failed=retry_failed,
        report=report,
    )


def _execute(make_session: Any) -> None:
    """Build the session and run it; its errors become exit statuses (2: bad input; 130/143:
    interrupted; 1: stopped by the machine, or every trial failed)."""
    from bench.errors import BadInput, RunStopped
    from bench.outcome import ALL_FAILED_EXIT_STATUS

    try:
        outcome = make_session().run()
    except BadInput as error:
        _fail(str(error))
    except RunStopped as stopped:
        OUTPUT.tell(str(stopped))
        raise typer.Exit(code=stopped.exit_status) from None
    if outcome.all_failed:
        OUTPUT.tell(f"error: {outcome.all_failed}")
        raise typer.Exit(code=ALL_FAILED_EXIT_STATUS)


@app.command("sync-mlflow")
def sync_mlflow(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A --results folder of `sharpbench run`."),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI to fill; default: the run's, else sqlite under the results folder.",
    ),
) -> None:
    """Back-fill MLflow from the Parquet rows (after a tracking-store outage, or into another
    store): every row gets its trial run under its method's parent, with params, final metrics,
    status and tags. Idempotent: runs are found by their trial key, a second call changes nothing.
    """
    from bench.config import ConfigError
    from bench.preflight import PreflightError, check_tracking_uri
    from bench.sync import SyncError, sync_to_mlflow

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
        OUTPUT.tell(f"error: MLflow failed during the sync ({first_line(error)}); run the same command again to finish")
        raise typer.Exit(code=1) from None
    OUTPUT.say(done.line())


_SPLIT_HELP = (
    "When folders hold one benchmark name run with different configs (config hashes differ), rank each "
    "config as its own benchmark, labelled NAME@HASH; without it they are refused (exit 2)."
)


@app.command()
def leaderboard(
    results_dirs: Optional[list[Path]] = typer.Argument(
        None, metavar="RESULTS_DIR", help="One or more --results folders of `sharpbench run` (default: results)."
    ),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", help="Output format."),
    baseline: Optional[str] = typer.Option(
        None,
        "--baseline",
        metavar="METHOD",
        help="Method every other is tested against (default: erm; a benchmark without it gets no comparisons).",
    ),
    alpha: float = typer.Option(
        0.05, "--alpha", metavar="ALPHA", help="Family-wise significance level of the Holm-adjusted tests, in (0, 1)."
    ),
    split_configs: bool = typer.Option(False, "--split-configs", help=_SPLIT_HELP),
    wide: bool = typer.Option(
        False,
        "--wide",
        help="Every column (std, intervals of Δ, trials, slot-hours, hyperparameters, flatness) and every rule; "
        "the default table fits 100 columns.",
    ),
    suite: bool = typer.Option(
        False,
        "--suite",
        help="Rank across the benchmarks instead (at least 2): scores relative to the baseline's error, IQM and "
        "mean with stratified bootstrap 95% intervals, probability of improvement, average rank, Friedman and "
        "Nemenyi tests (docs/statistics.md).",
    ),
    benchmarks: Optional[list[str]] = typer.Option(
        None, "--benchmark", metavar="NAME", help="Only this benchmark (repeatable), e.g. those of one suite."
    ),
) -> None:
    """Rank methods per benchmark by the test accuracy of their best config (the rule of `run`:
    the completed search trial with the best search.metric, re-run with the final seeds), with
    95% t-intervals cut at the accuracy's bounds, tests against a baseline (paired on seeds, else
    Welch; Holm-adjusted), rank groups that follow those tests, and a verdict line in words.

    Several folders (e.g. from several machines or clusters) are ranked as one: the union of their
    rows, each run id once (the row with the latest timestamp wins). Folders that ran one benchmark
    name with different configs are refused (exit 2) unless --split-configs ranks each config apart.
    With --suite, one board across all the benchmarks.
    """
    from bench.api import boards as ranked
    from bench.api import suite as suite_board
    from bench.errors import BadInput
    from bench.leaderboard import render, to_rich

    if suite and wide:
        _fail("--wide widens the per-benchmark boards; the --suite board has one layout (drop one of them)")
    try:
        read = suite_board if suite else ranked
        boards = read(
            results_dirs or [DEFAULT_RESULTS],
            baseline=baseline,
            alpha=alpha,
            split_configs=split_configs,
            tell=OUTPUT.tell,
            benchmarks=benchmarks,
        )
    except BadInput as error:
        _fail(str(error))
    if suite:
        from bench.leaderboard.suite_render import render_suite

        sys.stdout.write(render_suite(boards, fmt.value))
        return
    if fmt is TableFormat.table and console.is_terminal:
        console.print(to_rich(boards, wide=wide))  # fitted to the terminal, with colours
        return
    # Elsewhere (a pipe, a file): the narrow table at most 100 columns, the wide one as wide as its
    # cells, nothing cut to a guessed terminal width.
    output = render(boards, fmt.value, width=None, wide=wide)
    sys.stdout.write(output if output.endswith("\n") else output + "\n")


@app.command()
def report(
    results_dirs: list[Path] = typer.Argument(
        ...,
        metavar="DIR [DIR ...]",
        help="Results folders of `sharpbench run` (e.g. committed reference results and your own).",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        metavar="FILE.html",
        help=(
            "The HTML file to write (default: DIR/report.html of the first DIR; missing folders are made); figures "
            "(PNG, SVG, PDF) go to figures/ beside it."
        ),
    ),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", metavar="METHOD", help="Method every other is tested against (default: erm)."
    ),
    split_configs: bool = typer.Option(False, "--split-configs", help=_SPLIT_HELP),
    reference: Optional[Path] = typer.Option(
        None,
        "--reference",
        metavar="DIR",
        help=(
            "Reference results (e.g. results/reference/digits_noisy): per benchmark present in both, each method's "
            "reference mean and interval beside yours, whether your mean lies inside it, and the reference interval "
            "drawn in the seeds figure."
        ),
    ),
) -> None:
    """One self-contained HTML page (figures embedded, opens from disk) plus every figure as PNG,
    SVG and PDF: the leaderboard, accuracy against compute with the Pareto front, every final
    seed, flatness against test accuracy, and each method's search history and hyperparameter
    importance; with --reference, your run against reference results."""
    from bench.report.build import ReportError, build_report

    try:
        artifacts = build_report(results_dirs, out, baseline=baseline, split_configs=split_configs, reference=reference)
    except ReportError as error:
        _fail(str(error))
    for skipped in artifacts.skipped:  # a read-only command: skip and say so, as `leaderboard` does
        OUTPUT.tell(f"warning: {skipped}")
    for compared in artifacts.references:  # the answer at a glance; the page has the per-method table
        OUTPUT.tell(f"{compared.benchmark}: {compared.summary()}")
    # One unwrapped line, so the path can be pasted.
    OUTPUT.say(str(artifacts.html_path.resolve()))


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
    from regularizers.averaging import KINDS

    # Weight averaging composes with every name (sam+swa): its hyperparameters join the method's.
    listed = [(name, regularizers.get(name)) for name in names] + [(f"<method>+{k}", c) for k, c in KINDS.items()]
    if fmt is ListFormat.json:
        payload = [
            {
                "name": name,
                "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
                "module": cls.__module__,
                "hyperparameters": [hp.to_dict() for hp in regularizers.space.hyperparameters(cls)],
            }
            for name, cls in listed
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="Registered regularizers")
    for column in ("name", "hyperparameter", "default", "range", "scale", "searched", "meaning"):
        table.add_column(column, no_wrap=column != "meaning")
    for name, hparams in [(name, regularizers.space.hyperparameters(cls)) for name, cls in listed]:
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
    models: Optional[list[str]] = typer.Option(
        None,
        "--model",
        metavar="MODEL",
        help="Model to time (repeatable); default: the digits CNN and resnet18 on 32×32.",
    ),
    methods: Optional[list[str]] = typer.Option(
        None,
        "--method",
        metavar="METHOD",
        help="Regularizer to time (repeatable); default: every registered one (erm is always added as the reference).",
    ),
    dataset: Optional[str] = typer.Option(
        None,
        "--dataset",
        metavar="DATASET",
        help=(
            "Time real batches of this dataset (with its augmentation) and report epoch time; default: random tensors."
        ),
    ),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", metavar="FOLDER", help="Where --dataset's files are."),
    batch_size: int = typer.Option(32, "--batch-size", metavar="N", min=1, help="Samples per step."),
    warmup: int = typer.Option(2, "--warmup", metavar="STEPS", min=0, help="Untimed steps of every method first."),
    repeats: int = typer.Option(
        10,
        "--repeats",
        metavar="ROUNDS",
        min=1,
        help=(
            "Rounds: each times one block of every method in turn; medians and IQRs are over rounds (at least 4 "
            "for a reliable figure)."
        ),
    ),
    block_steps: int = typer.Option(
        1, "--block-steps", metavar="STEPS", min=1, help="Steps per timed block (more for very short steps)."
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    epoch_samples: Optional[int] = typer.Option(
        None,
        "--epoch-samples",
        metavar="N",
        min=1,
        help="Training-set size for the epoch-time estimate without --dataset (e.g. 45000 for CIFAR less validation).",
    ),
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
        if not regularizers.is_known(method):
            _fail(unknown_name("regularizer", method, regularizers.available()))
    if device not in ("auto", "cpu", "cuda"):
        _fail(unknown_name("device", device, ["auto", "cpu", "cuda"]))
    load_before = os.getloadavg()[0]
    try:
        timings = benchmark_steps(
            models,
            methods,
            dataset=dataset,
            data_dir=data_dir,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            steps_per_block=block_steps,
            device=device,
            compile=compile,
            epoch_samples=epoch_samples,
            progress=(lambda line: errors.print(line, highlight=False)) if fmt is ListFormat.table else None,
        )
        load_after = os.getloadavg()[0]
    except (DatasetError, ModelError, RuntimeError) as error:
        _fail(first_line(error))
    if fmt is ListFormat.json:
        sys.stdout.write(json.dumps([t.to_dict() for t in timings], indent=2) + "\n")
        return
    block = f"blocks of {block_steps} steps, " if block_steps > 1 else ""
    table = Table(
        title=f"One optimizer step: median ± IQR over {repeats} interleaved rounds ({block}after {warmup} warm-up)"
    )
    for column in (
        "model",
        "method",
        "device",
        "batch",
        "ms/step",
        "samples/s",
        "fwd/bwd",
        "× erm",
        "overhead",
        "epoch",
    ):
        table.add_column(column, justify="right" if column not in ("model", "method", "device") else "left")
    for t in timings:
        step_mark = "" if t.reliability.step_time is None else " ?"
        ratio_mark = "" if t.reliability.ratio is None else " ?"
        table.add_row(
            t.model,
            t.method,
            t.device,
            str(t.batch_size),
            f"{_milliseconds(t.step_seconds.median, t.step_seconds.iqr)}{step_mark}",
            f"{t.samples_per_second:.0f}{step_mark}",
            f"{t.forward_passes:g}/{t.backward_passes:g}",
            f"{t.ratio_to_erm.median:.2f} ± {t.ratio_to_erm.iqr:.2f}{ratio_mark}",
            f"{t.overhead.median:.2f} ± {t.overhead.iqr:.2f}{' !' if t.misses_target else ''}{ratio_mark}",
            "-" if t.epoch_seconds is None else f"{t.epoch_seconds:.1f}s{step_mark}",
        )
    console.print(table)

    say = OUTPUT.say
    say(
        "± is the interquartile range (q3 - q1) over rounds. overhead = (time ratio to erm) / (pass-equivalents "
        f"ratio); target <= {TARGET_OVERHEAD} ('!' marks a median above it)."
    )
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
    """Run the command line. Click's usage errors (an unknown option or command, a value out of
    range, a missing argument) come out as every other bad input does: one line, exit status 2,
    here with the command whose ``--help`` explains it (Click's own form is four lines)."""
    try:  # typer 0.2x carries its own copy of Click
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    try:
        code = typer.main.get_command(app).main(prog_name="sharpbench", standalone_mode=False)
    except click_errors.UsageError as error:
        if isinstance(error, getattr(click_errors, "NoArgsIsHelpError", ())):  # `sharpbench` alone: the help
            error.show()
        else:
            command = error.ctx.command_path if error.ctx is not None else "sharpbench"
            _print_error(f"{error.format_message()} (see {command} --help)")
        sys.exit(error.exit_code)
    except click_errors.ClickException as error:  # e.g. a file Click itself could not open
        _print_error(error.format_message())
        sys.exit(error.exit_code)
    except typer.Abort:  # Ctrl-C outside a run (a run handles its own: exit 130, state saved)
        errors.print("Aborted!", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
