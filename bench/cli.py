"""``sharpbench``: thin command line over config → search → sinks → leaderboard.

Bad input (config, dataset, names, paths) exits with status 2 and one line on stderr, never a
traceback; a crash inside a trial is recorded as a failed trial, not raised here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Benchmark flat-minima regularizers under an equal tuning budget (Ray Tune + Optuna), "
    "recording every trial to MLflow and a Parquet leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click errors: a usage line and one "Error: ..." line, not a multi-line box.
    rich_markup_mode=None,
)
# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=160)
errors = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

DEFAULT_RESULTS = Path("results")


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class TableFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def run(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="Benchmark YAML, e.g. configs/digits.yaml."),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="Folder for the Parquet leaderboard, the default MLflow store and Ray's search state."),
    address: Optional[str] = typer.Option(None, "--address", help="Join a running Ray cluster (e.g. 'auto' or 'ray://head:10001'); default: start a local one."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI; default: the config's, else sqlite under --results."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local Ray runtime (default: all)."),
) -> None:
    """Tune every regularizer in CONFIG with the same budget, then print the leaderboard.

    Re-running the same CONFIG with the same --results resumes interrupted searches (Ctrl-C
    saves them); finished searches are not re-run. Use another --results folder (or benchmark
    name) to start afresh.
    """
    from bench.config import ConfigError, load_config
    from bench.data import DatasetError, load_dataset
    from bench.models import ModelError
    from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, normalize_tracking_uri

    try:
        config = load_config(config_path)
        if address is None:
            load_dataset(config.dataset)  # fail fast on a missing dataset, before any trial starts
    except (ConfigError, DatasetError, ModelError) as error:
        _fail(str(error))
    if address is not None:
        _check_ray_address(address)
    results = results.resolve()
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"cannot create results folder {results}: {error.strerror}")
    uri = normalize_tracking_uri(tracking_uri or config.tracking_uri or default_tracking_uri(results))
    try:
        MlflowSink(uri, experiment_name=config.benchmark)  # reachable and usable, before any trial runs
    except Exception as error:  # MLflow raises many types here; all mean "this URI does not work"
        _fail(f"cannot use MLflow tracking URI {uri}: {_first_line(error)}")

    from bench import search

    console.print(
        f"[bold]{config.benchmark}[/]: {len(config.regularizers)} regularizers × {config.search.trials_per_method} trials, "
        f"{config.training.epochs} epochs each; results → {results}, MLflow → {uri}",
        highlight=False,
    )
    try:
        search.init_ray(address, num_cpus=num_cpus)
    except ConnectionError as error:
        _fail(f"cannot join the Ray cluster at {address}: {_first_line(error)}")
    try:
        search.run_benchmark(
            config, results_dir=results, tracking_uri=uri, progress=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)
        )
    except search.SearchInterrupted as interrupted:
        errors.print(
            f"interrupted: {interrupted}. Resume with: sharpbench run {config_path} --results {results}",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(code=130) from None
    finally:
        import ray

        ray.shutdown()
    _print_board(results, config.benchmark)
    console.print(f"Leaderboard: sharpbench leaderboard {results}    MLflow UI: mlflow ui --backend-store-uri {uri}", highlight=False)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _check_ray_address(address: str) -> None:
    """HOST:PORT (or ray://HOST:PORT) must answer within seconds: Ray itself retries for minutes."""
    if address == "auto":
        return  # Ray finds the local cluster itself and fails fast when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        _fail(f"--address {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        _fail(f"no Ray cluster answers at {address}: {error.strerror or error}")


def _print_board(results: Path, benchmark: str) -> None:
    """The leaderboard of ``benchmark``, read back from the Parquet rows just written."""
    from bench.leaderboard import build_leaderboard, to_rich
    from bench.results.parquet import read_rows

    boards = [board for board in build_leaderboard(read_rows(results)) if board.benchmark == benchmark]
    console.print(to_rich(boards))


@app.command()
def leaderboard(
    results_dirs: Optional[list[Path]] = typer.Argument(
        None, metavar="RESULTS_DIR", help="One or more --results folders of `sharpbench run` (default: results)."
    ),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", help="Output format."),
) -> None:
    """Rank methods per benchmark by the test accuracy of their best-validation config.

    Several folders (e.g. from several machines or clusters) are ranked as one: the union of their
    rows, each run id once (the row with the latest timestamp wins).
    """
    from bench.leaderboard import build_leaderboard, render
    from bench.results.parquet import dataset_dir, has_rows, read_rows

    folders = list(dict.fromkeys(results_dirs or [DEFAULT_RESULTS]))  # a folder named twice counts once
    for folder in folders:
        if not folder.is_dir():
            _fail(f"results folder not found: {folder} (run `sharpbench run CONFIG --results {folder}` first)")
    empty = [folder for folder in folders if not has_rows(folder)]
    if len(empty) == len(folders):
        where = ", ".join(str(dataset_dir(folder)) for folder in folders)
        _fail(f"no results: the Parquet dataset{'s' if len(folders) > 1 else ''} {where} {'are' if len(folders) > 1 else 'is'} empty or missing")
    for folder in empty:
        # Not an error (the others have rows), but a folder that adds nothing is worth a line.
        errors.print(f"note: no results in {folder}; ranking the other folders", highlight=False, soft_wrap=True)
    table = read_rows(*folders)
    boards = build_leaderboard(table)
    output = render(boards, fmt.value)
    if isinstance(output, str):
        sys.stdout.write(output if output.endswith("\n") else output + "\n")
    else:
        console.print(output)


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
                "hyperparameters": [hp.to_dict() for hp in regularizers.space(name)],
            }
            for name in names
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="Registered regularizers")
    for column in ("name", "hyperparameter", "default", "range", "scale", "searched", "meaning"):
        table.add_column(column, no_wrap=column != "meaning")
    for name in names:
        hparams = regularizers.space(name)
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
    models: Optional[list[str]] = typer.Option(None, "--model", help="Model to time (repeatable); default: the digits CNN and resnet18 on 32×32."),
    methods: Optional[list[str]] = typer.Option(None, "--method", help="Regularizer to time (repeatable); default: every registered one (erm is always added as the reference)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Time real batches of this dataset (with its augmentation) and report epoch time; default: random tensors."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where --dataset's files are."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed steps of every method first."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Rounds: each times one block of every method in turn; medians and IQRs are over rounds (at least 4 for a reliable figure)."),
    block_steps: int = typer.Option(1, "--block-steps", min=1, help="Steps per timed block (more for very short steps)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    epoch_samples: Optional[int] = typer.Option(None, "--epoch-samples", min=1, help="Training-set size for the epoch-time estimate without --dataset (e.g. 45000 for CIFAR less validation)."),
    fmt: ListFormat = typer.Option(ListFormat.table, "--format", help="Output format."),
) -> None:
    """Time one optimizer step of each method: step time, passes, ratio to ERM, overhead beyond the pass count.

    Methods are interleaved (each round times every method once, back to back) and every figure
    is the median ± interquartile range over rounds; the ratio to ERM is taken within each round.
    Overhead = ratio to ERM / ratio of pass-equivalents (a forward-only pass counts 1/3); target
    <= 1.05, '!' marks a median above it. Unreliable figures are marked '?': fewer than 4 rounds;
    a step time whose IQR exceeds 10% of its median; an overhead whose IQR exceeds both 0.05 and
    |overhead - 1| / 2. (The numbers are bench.perf's constants; a test keeps this text in step.)
    """
    import regularizers
    from bench.data import DatasetError
    from bench.models import ModelError, available_models
    from bench.naming import unknown_name_message
    from bench.perf import RELIABILITY_RULE, TARGET_OVERHEAD, benchmark_steps

    for model in models or []:
        if model not in available_models():
            _fail(unknown_name_message("model", model, available_models()))
    for method in methods or []:
        if method not in regularizers.available():
            _fail(unknown_name_message("regularizer", method, regularizers.available()))
    if device not in ("auto", "cpu", "cuda"):
        _fail(unknown_name_message("device", device, ["auto", "cpu", "cuda"]))
    load_before = os.getloadavg()[0]
    try:
        timings = benchmark_steps(
            models, methods, dataset=dataset, data_dir=data_dir, batch_size=batch_size, warmup=warmup,
            repeats=repeats, steps_per_block=block_steps, device=device, compile=compile, epoch_samples=epoch_samples,
            progress=(lambda line: errors.print(line, highlight=False)) if fmt is ListFormat.table else None,
        )
        load_after = os.getloadavg()[0]
    except (DatasetError, ModelError, RuntimeError) as error:
        _fail(str(error).splitlines()[0])
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
