"""Measured orchestration: how busy the cluster's trial slots are during a whole benchmark.

``python -m bench.benchmarks.orchestration utilization [--quick | --short] [--format table|json] [--repeats N]``

A measurement, not a test: it prints figures. It starts a loopback Ray cluster
(``ray.cluster_utils.Cluster``: a head with no GPUs and two worker nodes declaring logical GPUs,
so every trial lands on a worker), and runs one benchmark through the real driver
(:func:`bench.search.run_benchmark`: the routing searcher, per-method ASHA, the sink writing
Parquet and MLflow) twice, with the new scheduler (every method at once, final seeds as soon as a
method's own search ends) and with ``sequential=True`` (one method at a time, search then
finals: how sharpbench scheduled before). Trials are *simulated* (:class:`SimulatedTraining`):
an epoch sleeps a set time proportional to the method's passes per step and reports a
deterministic, hyperparameter-dependent validation accuracy, so TPE and ASHA act as in a real
run while the figure measures scheduling, not this machine's cores.

* **Slot utilization** = busy slot-seconds / (slots × wall time). A slot is one trial's share
  of the cluster (GPUs / ``gpus_per_trial``); a trial is busy from the moment its code starts
  (its row's ``started_at``) to its last report (``started_at + wall_seconds``), so Tune's trial
  start-up counts as idle. Wall time runs from the first trial's start to the last trial's end.
* The sequential scheduler cannot exceed ``trials_per_method / slots`` while a search runs, nor
  ``top_k × seeds / slots`` while a method's final seeds run (:func:`sequential_bound`).
* A method with nothing to search runs one search trial (plus its seeds), not
  ``trials_per_method``: counted from the rows of a small run.

Where idle slot-time comes from is split by phase (:class:`Utilization`): the ramp (until
``slots`` trials have started), the middle, and the tail (after the last trial started, when no
work is left to hand out), and the *handover*: how long a freed slot waits for its next trial
(freed slots are taken in the order they were freed): Tune's trial start latency when work is
waiting, longer when the searcher has nothing to give yet (a search must end before its final
seeds are chosen; the sequential scheduler waits for a whole method to end).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
import typer
from ray import tune
from ray.cluster_utils import Cluster

from bench import metrics
from bench.config import BenchmarkConfig, parse_config
from bench.plan import METHOD_KEY, PHASE_KEY, REFERENCE_PASSES_PER_STEP, SEED_KEY, MethodPlan, plan_methods, trial_spec
from bench.results.mlflow_sink import default_tracking_uri
from bench.results.parquet import read_rows
from bench.results.schema import Phase
from bench.search.driver import run_benchmark
from bench.search.reporting import EpochBatch
from bench.search.runtime import init_ray
from bench.search.scheduler import rung_epochs

#: Nominal optimizer steps per simulated epoch: only sizes the pass counters the rows record.
SIMULATED_STEPS_PER_EPOCH = 10
#: What a simulated trial reports as its device and hardware (rows say it was not trained).
SIMULATED_DEVICE = "simulated"

# ------------------------------------------------------------------------------ pure figures


@dataclass(frozen=True)
class TrialInterval:
    """When one trial's code ran (Unix seconds), and where."""

    method: str
    phase: str
    status: str
    start: float
    end: float
    node: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Utilization:
    """How busy ``slots`` trial slots were over a set of trial intervals (seconds throughout).

    ``wall_seconds`` runs from the first start to the last end. The idle slot-seconds
    ``slots × wall − busy`` are split at ``ramp_end`` (the ``slots``-th start, or the last start
    when fewer trials ran) and ``tail_start`` (the last start): ``idle_ramp + idle_middle +
    idle_tail`` equals the total. ``handovers``: for each start after the first ``slots``, how
    long the slot it takes had been free (the k-th such start takes the slot of the k-th end, in
    time order; at most ``slots`` trials run at once, so that end came first).
    """

    slots: int
    trials: int
    wall_seconds: float
    busy_slot_seconds: float
    idle_ramp: float
    idle_middle: float
    idle_tail: float
    ramp_seconds: float
    tail_seconds: float
    max_running: int
    handovers: tuple[float, ...]

    @property
    def utilization(self) -> float:
        return self.busy_slot_seconds / (self.slots * self.wall_seconds)

    @property
    def handover_median(self) -> float | None:
        return statistics.median(self.handovers) if self.handovers else None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["handovers"] = list(self.handovers)
        record["utilization"] = self.utilization
        record["handover_median"] = self.handover_median
        return record


def _busy_between(intervals: Sequence[TrialInterval], low: float, high: float) -> float:
    """Slot-seconds the intervals spend inside [low, high]."""
    return sum(max(0.0, min(i.end, high) - max(i.start, low)) for i in intervals)


def utilization(intervals: Iterable[TrialInterval], slots: int) -> Utilization:
    """Busy slot-seconds / (slots × wall time) of ``intervals`` on ``slots`` slots, with the idle
    time split by phase (see :class:`Utilization`).

    Raises ValueError when there is no interval, ``slots`` < 1, an interval ends before it starts,
    the first start equals the last end (no wall time), or more than ``slots`` intervals overlap
    (the slot count is wrong for these intervals).
    """
    trials = sorted(intervals, key=lambda i: (i.start, i.end))
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    if not trials:
        raise ValueError("no trial intervals to measure")
    for interval in trials:
        if not (math.isfinite(interval.start) and math.isfinite(interval.end)) or interval.end < interval.start:
            raise ValueError(
                f"trial interval of {interval.method} ({interval.phase}) ends before it starts: "
                f"{interval.start} → {interval.end}"
            )
    first, last = trials[0].start, max(i.end for i in trials)
    wall = last - first
    if wall <= 0:
        raise ValueError("trial intervals span no wall time")
    # Concurrency: at equal times an end frees its slot before a start takes one (-1 sorts first).
    events = sorted([(i.start, 1) for i in trials] + [(i.end, -1) for i in trials])
    running = max_running = 0
    for _, step in events:
        running += step
        max_running = max(max_running, running)
    if max_running > slots:
        raise ValueError(f"{max_running} trials ran at once on {slots} slots")
    starts = [i.start for i in trials]
    ends = sorted(i.end for i in trials)
    ramp_end = starts[min(slots, len(starts)) - 1]
    tail_start = starts[-1]
    busy = sum(i.seconds for i in trials)
    idle_ramp = slots * (ramp_end - first) - _busy_between(trials, first, ramp_end)
    idle_middle = slots * (tail_start - ramp_end) - _busy_between(trials, ramp_end, tail_start)
    idle_tail = slots * (last - tail_start) - _busy_between(trials, tail_start, last)
    handovers = tuple(start - end for start, end in zip(starts[slots:], ends, strict=False))
    return Utilization(
        slots=slots,
        trials=len(trials),
        wall_seconds=wall,
        busy_slot_seconds=busy,
        idle_ramp=idle_ramp,
        idle_middle=idle_middle,
        idle_tail=idle_tail,
        ramp_seconds=ramp_end - first,
        tail_seconds=last - tail_start,
        max_running=max_running,
        handovers=handovers,
    )


@dataclass(frozen=True)
class SequentialBound:
    """The most the one-method-at-a-time scheduler can keep busy, per phase (fractions of slots)."""

    search: float  # trials_per_method / slots, capped at 1
    final: float  # top_k × seeds / slots, capped at 1


def sequential_bound(trials_per_method: int, finals_per_method: int, slots: int) -> SequentialBound:
    """While one method searches at most its ``trials_per_method`` trials can run; while its final
    seeds run, at most ``finals_per_method`` (top-k × seeds). Raises ValueError for ``slots`` < 1."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    return SequentialBound(min(1.0, trials_per_method / slots), min(1.0, finals_per_method / slots))


# ------------------------------------------------------------------------------ simulated trial


def simulated_accuracy(plan: MethodPlan, sampled: dict[str, Any], config: BenchmarkConfig, epoch: int) -> float:
    """A deterministic validation accuracy after ``epoch`` epochs: best at the plan's defaults,
    lower the further (in log scale) the searched values are from them, rising with epochs
    (``1 − 2^-epoch``), so TPE has a landscape to learn and ASHA something to rank."""
    spec = trial_spec(config, plan, sampled)
    distance = 0.0
    for param in plan.params:
        value = (
            spec.regularizer_hparams.get(param.name)
            if param.namespace == "regularizer"
            else getattr(spec.training, param.name)
        )
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value > 0
            and isinstance(param.default, (int, float))
            and param.default > 0
        ):
            distance += math.log(value / param.default) ** 2
    peak = 0.95 - min(0.5, 0.05 * distance)
    return peak * (1.0 - 0.5**epoch)


@dataclass(frozen=True)
class SimulatedTraining:
    """A trial function for :func:`bench.search.run_benchmark` (``trial_function=``) that trains
    nothing: each epoch sleeps ``epoch_seconds × passes / 2`` (``passes``: the method's passes per
    step, so SAM's epochs take twice ERM's), then reports what the real trainable reports, with
    :func:`simulated_accuracy` as the validation accuracy and the test accuracy on the last epoch.
    ``passes`` maps each method to its passes per step (:attr:`bench.plan.MethodPlan.passes_per_step`)."""

    epoch_seconds: float
    passes: dict[str, int] = field(default_factory=dict)

    def __call__(self, sampled: dict[str, Any], *, config: BenchmarkConfig, plans: dict[str, MethodPlan]) -> None:
        started, started_at = time.perf_counter(), time.time()
        plan = plans[sampled[METHOD_KEY]]
        passes = self.passes.get(plan.regularizer, REFERENCE_PASSES_PER_STEP)
        epoch_wall = self.epoch_seconds * passes / REFERENCE_PASSES_PER_STEP
        epochs = trial_spec(config, plan, sampled).training.epochs
        seed = int(sampled.get(SEED_KEY, config.seed))
        where = {
            metrics.NODE: ray.get_runtime_context().get_node_id(),
            metrics.STARTED_AT: started_at,
            metrics.DEVICE: SIMULATED_DEVICE,
            metrics.HARDWARE: SIMULATED_DEVICE,
            metrics.PRECISION: "float32",
        }
        # Reported as the real trainable reports (bench.search.reporting).
        batch = EpochBatch(
            rung_epochs(config.search.asha, plan) if sampled.get(PHASE_KEY) == Phase.SEARCH.value else ()
        )
        for epoch in range(1, epochs + 1):
            # Sleep to a deadline, not for a duration: reporting time does not stretch the trial.
            deadline = started + epoch * epoch_wall
            while (left := deadline - time.perf_counter()) > 0:
                time.sleep(left)
            accuracy = simulated_accuracy(plan, sampled, config, epoch)
            steps = epoch * SIMULATED_STEPS_PER_EPOCH
            report = {
                **where,
                metrics.EPOCH: epoch,
                metrics.EPOCHS_PLANNED: epochs,
                metrics.VAL_ACCURACY: accuracy,
                metrics.VAL_LOSS: -math.log(accuracy),
                metrics.TRAIN_LOSS: -math.log(min(0.99, accuracy + 0.02)),
                metrics.FORWARD_PASSES: steps * passes // 2,
                metrics.BACKWARD_PASSES: steps * passes // 2,
                metrics.EPOCH_SECONDS: epoch_wall,
                metrics.WALL_SECONDS: time.perf_counter() - started,
            }
            if epoch == epochs:
                # Seeds spread the test figure a little, as real seeds do; deterministic per seed.
                test = accuracy - 0.01 + 0.002 * (seed % 5)
                report |= {metrics.TEST_ACCURACY: test, metrics.TEST_LOSS: -math.log(test)}
            if batch.add(report, last=epoch == epochs):
                tune.report(batch.take())


# ------------------------------------------------------------------------------ the measurement


@dataclass(frozen=True)
class Setup:
    """One utilization measurement's shape. The default is the default benchmark's
    (``configs/digits.yaml``: its four methods, 12 epochs, ASHA grace 3 and reduction 2, 5 final
    seeds; a test keeps them equal) with the issue's 8 trials per method, epochs of 0.5 s."""

    methods: tuple[str, ...] = ("erm", "weight_decay", "sam", "asam")
    trials_per_method: int = 8
    epochs: int = 12
    epoch_seconds: float = 0.5  # one epoch of a 2-pass (ERM-cost) method
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    top_k: int = 1
    workers: int = 2
    gpus_per_worker: int = 4
    gpus_per_trial: float = 1.0
    grace_period: int = 3
    reduction_factor: float = 2.0
    #: Every method searches the learning rate; off, ERM has nothing to search (the no-search check).
    search_learning_rate: bool = True
    #: The search's sampler (``search.sampler.name``).
    sampler: str = "tpe"

    @property
    def slots(self) -> int:
        return int(self.workers * self.gpus_per_worker // self.gpus_per_trial)

    def config(self, benchmark: str) -> BenchmarkConfig:
        """The benchmark config (digits/MLP names only: nothing is trained)."""
        space = {"learning_rate": {"low": 0.01, "high": 0.5, "log": True}} if self.search_learning_rate else {}
        return parse_config(
            {
                "benchmark": benchmark,
                "model": {"name": "mlp"},
                "training": {"epochs": self.epochs, "learning_rate": 0.05},
                "search": {
                    "trials_per_method": self.trials_per_method,
                    "asha": {
                        "enabled": True,
                        "grace_period": self.grace_period,
                        "reduction_factor": self.reduction_factor,
                    },
                    "space": space,
                    "sampler": {"name": self.sampler},
                },
                "resources": {"cpus_per_trial": 1, "gpus_per_trial": self.gpus_per_trial},
                "final": {"seeds": list(self.seeds), "top_k": self.top_k},
                "regularizers": list(self.methods),
            }
        )


DEFAULT = Setup()
#: A harder shape: short trials (4 epochs of 1 s, ASHA from epoch 1) and 3 final seeds, so the
#: last method's seeds are a large share of the work and run with little beside them.
SHORT = Setup(epochs=4, epoch_seconds=1.0, seeds=(1, 2, 3), grace_period=1)
#: Smaller in every direction (fewer trial processes to start on a small machine too).
QUICK = Setup(trials_per_method=4, epochs=3, epoch_seconds=0.5, seeds=(1, 2), gpus_per_worker=2, grace_period=1)
#: The no-search check: ERM has nothing to search once the learning rate is fixed; SAM searches ρ.
NO_SEARCH_METHODS = ("erm", "sam")
NO_SEARCH_BENCHMARK = "nosearch"


@dataclass(frozen=True)
class RunFigures:
    """One benchmark run under one scheduler."""

    scheduler: str  # "concurrent" or "sequential"
    utilization: Utilization
    counts: dict[str, dict[str, int]]  # method -> phase -> trials
    trials_by_status: dict[str, int]
    nodes: int  # distinct Ray nodes the trials ran on
    on_head: int  # trials that ran on the head node (it declares no GPU: expected 0)
    driver_seconds: float  # run_benchmark's own wall time, Tune's start-up and shut-down included


def intervals_from_rows(rows: list[dict[str, Any]]) -> list[TrialInterval]:
    """Each row's interval: ``started_at`` to ``started_at + wall_seconds`` (rows without a start
    time, written by an older sharpbench, are skipped)."""
    return [
        TrialInterval(
            method=row["regularizer"],
            phase=row["phase"],
            status=row["status"],
            start=row["started_at"].timestamp(),
            end=row["started_at"].timestamp() + float(row["wall_seconds"]),
            node=row["node"],
        )
        for row in rows
        if row["started_at"] is not None
    ]


def _run(
    config: BenchmarkConfig, trial: SimulatedTraining, *, sequential: bool, results: Path
) -> tuple[list[dict[str, Any]], float]:
    began = time.perf_counter()
    run_benchmark(
        config,
        results_dir=results,
        tracking_uri=default_tracking_uri(results),
        trial_function=trial,
        sequential=sequential,
    )
    return read_rows(results).to_pylist(), time.perf_counter() - began


def measure_run(
    setup: Setup, *, sequential: bool, head_node: str, workdir: Path, name: str | None = None
) -> RunFigures:
    """One benchmark run on the connected cluster; figures from the rows the sink wrote.
    ``name``: the benchmark's name (default: the scheduler's, ``concurrent`` or ``sequential``)."""
    scheduler = "sequential" if sequential else "concurrent"
    config = setup.config(name or scheduler)
    trial = SimulatedTraining(
        setup.epoch_seconds, {plan.regularizer: plan.passes_per_step for plan in plan_methods(config)}
    )
    rows, seconds = _run(config, trial, sequential=sequential, results=workdir / config.benchmark)
    intervals = intervals_from_rows(rows)
    counts: dict[str, dict[str, int]] = {
        method: {Phase.SEARCH.value: 0, Phase.FINAL.value: 0} for method in setup.methods
    }
    for row in rows:
        counts[row["regularizer"]][row["phase"]] += 1
    return RunFigures(
        scheduler=scheduler,
        utilization=utilization(intervals, setup.slots),
        counts=counts,
        trials_by_status=dict(sorted(Counter(row["status"] for row in rows).items())),
        nodes=len({i.node for i in intervals}),
        on_head=sum(i.node == head_node for i in intervals),
        driver_seconds=seconds,
    )


def no_search_setup(setup: Setup) -> Setup:
    """The no-search check's shape: ERM (nothing to search: the learning rate fixed) beside SAM
    (ρ searched), with ``setup``'s trials, seeds and cluster, and shorter trials."""
    return dataclasses.replace(
        setup, methods=NO_SEARCH_METHODS, epochs=2, epoch_seconds=setup.epoch_seconds / 2, search_learning_rate=False
    )


@dataclass
class Report:
    """Everything ``utilization`` prints."""

    setup: Setup
    slots: int
    bound: SequentialBound
    runs: list[RunFigures]
    no_search: RunFigures | None  # a concurrent run of :func:`no_search_setup`
    cluster_start_seconds: float

    def utilizations(self, scheduler: str) -> list[float]:
        return [run.utilization.utilization for run in self.runs if run.scheduler == scheduler]

    def to_dict(self) -> dict[str, Any]:
        summary = {}
        for scheduler in ("concurrent", "sequential"):
            values = self.utilizations(scheduler)
            if values:
                summary[scheduler] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        return {
            "setup": asdict(self.setup),
            "slots": self.slots,
            "wall_time": "first trial start to last trial end",
            "sequential_bound": asdict(self.bound),
            "utilization": summary,
            "runs": [{**asdict(run), "utilization": run.utilization.to_dict()} for run in self.runs],
            "no_search": None
            if self.no_search is None
            else {**asdict(self.no_search), "utilization": self.no_search.utilization.to_dict()},
            "cluster_start_seconds": self.cluster_start_seconds,
        }


def measure(
    setup: Setup, *, repeats: int = 1, no_search: bool = True, log: Callable[[str], None] = lambda line: None
) -> Report:
    """Start the loopback cluster, run the benchmark ``repeats`` times under each scheduler
    (alternating which goes first), then the no-search check; shut everything down.
    Raises what Ray raises when the cluster cannot start, and :class:`bench.search.SearchInterrupted`
    when a run stops before its trials end."""
    began = time.perf_counter()
    # The head declares no GPU, so every trial (1 GPU each) is placed on a worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        for _ in range(setup.workers):
            cluster.add_node(num_cpus=setup.gpus_per_worker, num_gpus=setup.gpus_per_worker)
        cluster.wait_for_nodes()
        init_ray(cluster.address)
        head_node = cluster.head_node.node_id
        started = time.perf_counter() - began
        log(f"cluster: head + {setup.workers} workers × {setup.gpus_per_worker} GPUs up in {started:.1f} s")
        runs = []
        with tempfile.TemporaryDirectory(prefix="sharpbench-orchestration-") as folder:
            for repeat in range(repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for sequential in order:
                    workdir = Path(folder, f"repeat-{repeat}")
                    run = measure_run(setup, sequential=sequential, head_node=head_node, workdir=workdir)
                    runs.append(run)
                    log(
                        f"repeat {repeat + 1}/{repeats} {run.scheduler}: "
                        f"utilization {run.utilization.utilization:.3f}, wall {run.utilization.wall_seconds:.1f} s"
                    )
            nosearch = None
            if no_search:
                nosearch = measure_run(
                    no_search_setup(setup),
                    sequential=False,
                    head_node=head_node,
                    workdir=Path(folder),
                    name=NO_SEARCH_BENCHMARK,
                )
        finals_per_method = setup.top_k * len(setup.seeds)
        return Report(
            setup,
            setup.slots,
            sequential_bound(setup.trials_per_method, finals_per_method, setup.slots),
            runs,
            nosearch,
            started,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


# ------------------------------------------------------------------------------ the command


def _format_table(report: Report) -> str:
    setup = report.setup
    lines = [
        (
            f"Slot utilization: {len(setup.methods)} methods ({', '.join(setup.methods)}) "
            f"× {setup.trials_per_method} search trials + top-{setup.top_k} × {len(setup.seeds)} final seeds; "
            f"{setup.epochs} epochs, {setup.epoch_seconds:g} s per epoch "
            f"× passes per step / 2 (an SAM epoch takes twice an ERM one); ASHA grace {setup.grace_period}, "
            f"reduction {setup.reduction_factor:g}"
        ),
        (
            f"cluster: head (0 GPUs) + {setup.workers} workers × {setup.gpus_per_worker} GPUs, "
            f"{setup.gpus_per_trial:g} GPU per trial → {report.slots} slots "
            f"(started in {report.cluster_start_seconds:.1f} s)"
        ),
        (
            "utilization = busy slot-seconds / (slots × wall); busy = a trial's code running; "
            "wall = first trial start → last trial end"
        ),
        "",
        (
            f"{'scheduler':<11} {'util':>6} {'wall s':>7} {'busy slot-s':>11} {'trials':>6} {'nodes':>5} "
            f"{'idle ramp/middle/tail slot-s':>29} {'slot wait med (max) s':>21} {'driver s':>8}"
        ),
    ]
    for run in report.runs:
        u = run.utilization
        handover = "-" if u.handover_median is None else f"{u.handover_median:.2f} ({max(u.handovers):.2f})"
        idle = f"{u.idle_ramp:.1f}/{u.idle_middle:.1f}/{u.idle_tail:.1f}"
        lines.append(
            f"{run.scheduler:<11} {u.utilization:>6.3f} {u.wall_seconds:>7.1f} {u.busy_slot_seconds:>11.1f} "
            f"{u.trials:>6} {run.nodes:>5} {idle:>29} {handover:>21} {run.driver_seconds:>8.1f}"
        )
    lines.append("")
    for scheduler in ("concurrent", "sequential"):
        values = report.utilizations(scheduler)
        if values:
            spread = "" if len(values) == 1 else f" (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
            lines.append(f"{scheduler}: utilization median {statistics.median(values):.3f}{spread}")
    bound = report.bound
    lines.append(
        f"sequential bound: ≤ {setup.trials_per_method}/{report.slots} = {bound.search:.2f} while a search runs, "
        f"≤ {setup.top_k * len(setup.seeds)}/{report.slots} = {bound.final:.2f} while a method's final seeds run"
    )
    if report.no_search is not None:
        counts = "; ".join(
            f"{method} {c[Phase.SEARCH.value]} search + {c[Phase.FINAL.value]} final"
            for method, c in report.no_search.counts.items()
        )
        lines.append(
            f"no-search method ({NO_SEARCH_METHODS[0]} with the learning rate fixed, "
            f"{setup.trials_per_method} trials per method): {counts}"
        )
    return "\n".join(lines)


app = typer.Typer(add_completion=False, help="Measured orchestration of the whole-benchmark search.")


@app.callback()
def _group() -> None:
    """Measured orchestration on a loopback Ray cluster with simulated trials."""


@app.command("utilization")
def utilization_command(
    quick: bool = typer.Option(
        False, "--quick", help="4 methods × 4 trials + 2 seeds on 4 slots, shorter epochs (about 2 minutes)."
    ),
    short: bool = typer.Option(
        False,
        "--short",
        help="4 epochs of 1 s, ASHA from epoch 1, 3 final seeds: the seeds of the last method make a long tail.",
    ),
    repeats: int = typer.Option(
        1, "--repeats", min=1, help="Runs per scheduler; figures are the median and range over them."
    ),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Slot utilization of the whole-benchmark scheduler against the sequential one, and the
    trial counts of a method with nothing to search."""
    from bench.console import Verbosity, quiet_third_party

    if fmt not in ("table", "json"):
        typer.echo(f"error: --format must be table or json, got {fmt!r}", err=True)
        raise typer.Exit(2)
    if quick and short:
        typer.echo("error: --quick and --short are two shapes: give one", err=True)
        raise typer.Exit(2)
    quiet_third_party(Verbosity.normal)
    setup = QUICK if quick else SHORT if short else DEFAULT
    report = measure(setup, repeats=repeats, log=lambda line: typer.echo(line, err=True))
    if fmt == "json":
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        typer.echo(_format_table(report))


@app.command(
    "overhead", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
def overhead_command(ctx: typer.Context) -> None:
    """Ray Tune against the same trials in-process (where the time goes), and throughput with
    1 and 2 concurrent CPU trials. Options: `overhead --help` (bench/benchmarks/overhead.py)."""
    from bench.benchmarks import overhead

    raise typer.Exit(overhead.main(["overhead", *ctx.args]))


if __name__ == "__main__":
    app()
