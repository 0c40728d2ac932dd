"""What Ray Tune costs per trial, measured: the same trials in-process and through
:func:`bench.search.run_benchmark`, and the throughput of concurrent CPU trials.

``python -m bench.benchmarks.orchestration overhead [--config configs/digits.yaml] [--trials 6]
[--repeats 3] [--long-seconds 60] [--long-width 64] [--throughput-seconds 8] [--quick] [--no-full]
[--no-long] [--no-throughput]``

A measurement, not a test: it prints figures, and asserts nothing about them.

* **Overhead.** ``N`` trials of one method (``erm``) with the config's dataset, model and
  recipe, the learning rate searched (so the driver's Optuna calls are part of the cost), ASHA
  off (every trial trains every epoch, so both sides do identical work), one at a time. Ray side:
  a local Ray runtime and :func:`bench.search.run_benchmark` into a fresh results folder (Parquet
  + a SQLite MLflow store), as ``sharpbench run`` does. In-process side: the very trial specs the
  Ray run recorded (read back from its Parquet rows), run one after another in this process
  as :func:`bench.training.run_trial` runs them (a fresh ``Trainer`` and dataset load each), with
  ``torch.set_num_threads(cpus_per_trial)``, the threads a Ray trial gets.
  Printed: both wall times, their ratio, and where the Ray run's time went: the trials' own wall
  time (from the trainable's start to its last report, ``wall_seconds`` of the row), the time
  before the first trial started, the gaps between one trial's end and the next one's start, and
  the tail after the last one. A trial's start is its row's timestamp (written on the driver when
  the trial ended) minus its own wall time; the small delay between the last report and the row
  therefore counts as gap, not as trial time. The worker's one-time warm-up (``compile_s`` of
  its first trial: PyTorch imports ``torch._dynamo`` at the first optimizer, the dataset is
  loaded) runs before that trial's clock, so it falls in "before the first trial"; the full
  benchmark's line gives the ratio with it counted as trial time too. Done for the config's recipe; for the config as
  configured (every method, search and final seeds, all in one Tune experiment,
  one trial at a time; ASHA-stopped trials are replayed for the epochs they ran); and for a
  "long" variant (``model.options.width`` ``--long-width``, epochs scaled so that one trial takes
  about ``--long-seconds`` here).
* **Throughput.** ``N`` trials with ``search.max_concurrent_trials`` C = 1 and C = 2, one CPU each
  (``resources.cpus_per_trial: 1``) on a local runtime of 2 CPUs: trials per minute and the ratio
  to C = 1 (the ideal is C). Twice: with the config's own trials (0.3-s digits trials, where the
  driver's work per trial competes with the trials for the 2 cores) and with 4 trials of about
  ``--throughput-seconds`` (8 s by default).

The machine may be shared: each figure is printed with the 1-minute load average at its end, and
repeated runs are summarized by median and range (min–max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"


@dataclass(frozen=True)
class TrialTiming:
    """One trial of a Ray run, from its Parquet row (seconds; ``started``/``ended`` are Unix times)."""

    run_id: str
    wall_seconds: float  # the trial's own: trainable start → last report
    ended: float  # the row's timestamp: written on the driver when the trial ended
    warm_up_seconds: float = 0.0  # compile_s: the worker's one-time warm-up, before the trial's clock

    @property
    def started(self) -> float:
        return self.ended - self.wall_seconds


@dataclass(frozen=True)
class RayRun:
    """One :func:`bench.search.run_benchmark` call, and where its wall time went."""

    wall_seconds: float  # the call, start to return
    called: float  # Unix time of the call
    trials: tuple[TrialTiming, ...]  # by start time
    load: float  # 1-minute load average at the end
    driver_cpu_seconds: float  # CPU time of this (the driver's) process during the call, all threads

    @property
    def trial_seconds(self) -> float:
        return sum(t.wall_seconds for t in self.trials)

    @property
    def warm_up_seconds(self) -> float:
        return sum(t.warm_up_seconds for t in self.trials)

    @property
    def before_first(self) -> float:
        return self.trials[0].started - self.called

    @property
    def gaps(self) -> list[float]:
        """Between one trial's end and the next one's start (one at a time only)."""
        return [b.started - a.ended for a, b in zip(self.trials, self.trials[1:], strict=False)]

    @property
    def tail(self) -> float:
        return self.called + self.wall_seconds - max(t.ended for t in self.trials)


@dataclass(frozen=True)
class InProcessRun:
    wall_seconds: float
    trial_seconds: tuple[float, ...]
    load: float


@dataclass(frozen=True)
class OverheadFigure:
    label: str
    epochs: int  # per trial
    ray: RayRun
    local: InProcessRun

    @property
    def excess_per_epoch(self) -> float:
        """Seconds per epoch a trial spends more in Ray than in-process: the per-epoch report's
        round trip to the driver (Tune's function trainables wait for it) and checkpoints."""
        excess = self.ray.trial_seconds - sum(self.local.trial_seconds)
        return excess / (len(self.ray.trials) * self.epochs)

    @property
    def ratio(self) -> float:
        return self.ray.wall_seconds / self.local.wall_seconds


def _load() -> float:
    return os.getloadavg()[0]


def _bench_config(base, *, trials: int, epochs: int | None = None, width: int | None = None, concurrency: int = 1):
    """``base`` reduced to one method (erm), ``trials`` trials with the learning rate searched,
    ASHA and the final phase off, one CPU per trial, ``concurrency`` trials at a time; optionally
    another number of epochs and another ``model.options.width``."""
    from bench.config import RangeSpec, RegularizerEntry

    training = base.training if epochs is None else base.training.model_copy(update={"epochs": epochs})
    model = (
        base.model
        if width is None
        else base.model.model_copy(update={"options": {**base.model.options, "width": width}})
    )
    search = base.search.model_copy(
        update={
            "trials_per_method": trials,
            "asha": base.search.asha.model_copy(update={"enabled": False}),
            "max_concurrent_trials": concurrency,
            "space": {"learning_rate": RangeSpec(low=0.01, high=0.1, log=True)},
        }
    )
    return base.model_copy(
        update={
            "benchmark": f"{base.benchmark}_overhead",
            "training": training,
            "model": model,
            "search": search,
            "resources": base.resources.model_copy(update={"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}),
            "final": base.final.model_copy(update={"seeds": []}),
            "flatness": base.flatness.model_copy(update={"when": "off"}),
            "regularizers": [RegularizerEntry(name="erm")],
        }
    )


def _ray_run(config) -> tuple[RayRun, list[dict]]:
    """``run_benchmark`` on the connected runtime into a fresh folder; its timing and its rows."""
    from bench import search
    from bench.results.mlflow_sink import MlflowSink, default_tracking_uri
    from bench.results.parquet import read_rows

    with tempfile.TemporaryDirectory(prefix="sharpbench-overhead-") as folder:
        uri = default_tracking_uri(folder)
        opened = MlflowSink(uri, experiment_name=config.benchmark)  # as `sharpbench run` does, before timing
        called = time.time()
        started, cpu = time.perf_counter(), time.process_time()
        search.run_benchmark(config, results_dir=folder, tracking_uri=uri, mlflow_sink=opened)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        rows = read_rows(folder).to_pylist()
    timings = sorted(
        (
            TrialTiming(
                row["run_id"], float(row["wall_seconds"]), row["timestamp"].timestamp(), float(row["compile_s"] or 0.0)
            )
            for row in rows
        ),
        key=lambda t: t.started,
    )
    return RayRun(wall, called, tuple(timings), _load(), cpu), rows


def _in_process(config, rows: list[dict]) -> InProcessRun:
    """The trials the Ray run recorded, run again here one after another: each with its own
    recipe, hyperparameters and seed, for the epochs it ran there (an ASHA-stopped trial stops at
    the same epoch, untested), with ``bench.training.Trainer`` and a fresh dataset load per trial,
    as :func:`bench.training.run_trial` does."""
    from bench.training import Trainer, TrialSpec

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.resources.cpus_per_trial)))  # what a Ray trial gets
    try:
        seconds = []
        started = time.perf_counter()
        for row in sorted(rows, key=lambda r: r["run_id"]):
            trial_started = time.perf_counter()
            spec = TrialSpec.from_row(config, row)
            trainer = Trainer(spec)
            while trainer.epochs_done < int(row["epochs_run"]):
                trainer.train_epoch()
            if trainer.finished:
                trainer.test()
            seconds.append(time.perf_counter() - trial_started)
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return InProcessRun(wall, tuple(seconds), _load())


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} (range {min(values):.2f}–{max(values):.2f}, n={len(values)})"


def _print_overhead(figure: OverheadFigure) -> None:
    ray_run, local = figure.ray, figure.local
    print(
        f"  {figure.label}: in-process {local.wall_seconds:.1f} s (load {local.load:.1f}), "
        f"Ray {ray_run.wall_seconds:.1f} s (load {ray_run.load:.1f}), ratio {figure.ratio:.2f}x"
    )
    own = [t.wall_seconds for t in ray_run.trials]
    gaps = ray_run.gaps
    print(
        f"    per trial: own wall in Ray {statistics.mean(own):.2f} s mean, {statistics.median(own):.2f} s median "
        f"(in-process {statistics.mean(local.trial_seconds):.2f} s, {statistics.median(local.trial_seconds):.2f} s; "
        f"the first trial of a process pays one-time imports); "
        f"before first trial {ray_run.before_first:.2f} s; gaps between trials "
        f"{statistics.mean(gaps) if gaps else 0.0:.2f} s mean, {max(gaps, default=0.0):.2f} s max; "
        f"tail {ray_run.tail:.2f} s"
    )
    print(
        f"    Ray wall = trials {ray_run.trial_seconds:.1f} s "
        f"+ orchestration {ray_run.wall_seconds - ray_run.trial_seconds:.1f} s; "
        f"own-wall excess over in-process {ray_run.trial_seconds - sum(local.trial_seconds):+.1f} s "
        f"({1000 * figure.excess_per_epoch:+.1f} ms per epoch)",
        flush=True,
    )


def measure_overhead(
    base,
    *,
    label: str,
    trials: int,
    repeats: int,
    epochs: int | None = None,
    width: int | None = None,
) -> list[OverheadFigure]:
    """``repeats`` × (Ray run, then the same trials in-process), printed as they come."""
    config = _bench_config(base, trials=trials, epochs=epochs, width=width)
    print(
        f"{label}: {trials} trials x {config.training.epochs} epochs, "
        f"model {config.model.name} {config.model.options}, one at a time",
        flush=True,
    )
    figures = []
    for _ in range(repeats):
        ray_run, rows = _ray_run(config)
        figure = OverheadFigure(label, config.training.epochs, ray_run, _in_process(config, rows))
        _print_overhead(figure)
        figures.append(figure)
    ratios = [f.ratio for f in figures]
    gaps = [statistics.mean(f.ray.gaps) for f in figures if f.ray.gaps]
    print(f"  {label} ratio Ray / in-process: {_spread(ratios)}")
    if gaps:
        print(f"  {label} mean gap between trials (s): {_spread(gaps)}", flush=True)
    return figures


def measure_full(base, *, repeats: int) -> list[OverheadFigure]:
    """The config as it is (every method, its search and its final seeds), one trial at a time,
    against the same trials in-process: the Tune experiment's start-up is in this figure."""
    config = base.model_copy(
        update={
            "benchmark": f"{base.benchmark}_overhead",
            "search": base.search.model_copy(update={"max_concurrent_trials": 1}),
            "resources": base.resources.model_copy(update={"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}),
        }
    )
    methods = len(config.regularizers)
    print(
        f"{base.benchmark} as configured: {methods} methods x ({config.search.trials_per_method} search trials + "
        f"{len(config.final.seeds) * config.final.top_k} final runs), one at a time, one Tune experiment",
        flush=True,
    )
    figures = []
    for _ in range(repeats):
        ray_run, rows = _ray_run(config)
        epochs = sum(int(row["epochs_run"]) for row in rows) / len(rows)  # mean: ASHA stops some early
        figure = OverheadFigure("full benchmark", round(epochs), ray_run, _in_process(config, rows))
        print(
            f"  full benchmark: {len(rows)} trials; "
            f"in-process {figure.local.wall_seconds:.1f} s (load {figure.local.load:.1f}), "
            f"Ray {ray_run.wall_seconds:.1f} s (load {ray_run.load:.1f}), ratio {figure.ratio:.2f}x; "
            f"Ray wall = trials {ray_run.trial_seconds:.1f} s "
            f"+ orchestration {ray_run.wall_seconds - ray_run.trial_seconds:.1f} s "
            f"({ray_run.wall_seconds / ray_run.trial_seconds:.2f}x the trials' own time: before the first trial "
            f"{ray_run.before_first:.2f} s, gaps {sum(ray_run.gaps):.2f} s, tail {ray_run.tail:.2f} s); "
            f"{ray_run.wall_seconds / (ray_run.trial_seconds + ray_run.warm_up_seconds):.2f}x with the workers' "
            f"one-time warm-up ({ray_run.warm_up_seconds:.2f} s, inside 'before the first trial') counted as trial "
            "time",
            flush=True,
        )
        figures.append(figure)
    print(f"  full benchmark ratio Ray / in-process: {_spread([f.ratio for f in figures])}", flush=True)
    return figures


def epochs_for(base, seconds: float, width: int | None) -> int:
    """Epochs of ``base``'s recipe (with ``width``) that take about ``seconds`` in-process here
    (one timed trial of a few epochs, one thread)."""
    from bench.plan import plan_methods, trial_spec
    from bench.training import Trainer

    probe_epochs = 4
    config = _bench_config(base, trials=1, epochs=probe_epochs, width=width)
    plan = plan_methods(config)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(trial_spec(config, plan, {"seed": config.seed}))
        trainer.train_epoch()  # warm-up: first-call costs are not per-epoch costs
        started = time.perf_counter()
        while not trainer.finished:
            trainer.train_epoch()
        per_epoch = (time.perf_counter() - started) / (probe_epochs - 1)
    finally:
        torch.set_num_threads(threads)
    print(f"  probe: {per_epoch:.3f} s per epoch in-process", flush=True)
    return max(probe_epochs, round(seconds / per_epoch))


def measure_throughput(
    base, *, trials: int, concurrencies: tuple[int, ...], epochs: int | None = None, width: int | None = None
) -> dict[int, float]:
    """Trials per minute with C trials at a time (each 1 CPU), on the connected runtime.

    Two figures per C: over the whole call (the Tune experiment's start-up included) and in the
    steady state, from the first trial's start to the last one's end. Returns the steady ones.
    """
    shown = base.training.epochs if epochs is None else epochs
    print(
        f"throughput: {trials} trials x {shown} epochs{'' if width is None else f', width {width}'}, 1 CPU each",
        flush=True,
    )
    steady: dict[int, float] = {}
    for concurrency in concurrencies:
        run, _ = _ray_run(_bench_config(base, trials=trials, concurrency=concurrency, epochs=epochs, width=width))
        overall = 60.0 * len(run.trials) / run.wall_seconds
        span = max(t.ended for t in run.trials) - min(t.started for t in run.trials)
        steady[concurrency] = 60.0 * len(run.trials) / span
        own = statistics.mean(t.wall_seconds for t in run.trials)
        print(
            f"  C={concurrency}: {run.wall_seconds:.1f} s; {overall:.1f} trials/min overall, {steady[concurrency]:.1f} "
            f"steady (ratio to C=1 {steady[concurrency] / steady[concurrencies[0]]:.2f}, ideal {concurrency}); "
            f"own wall per trial {own:.2f} s; driver CPU {run.driver_cpu_seconds / len(run.trials):.2f} s per trial "
            f"({run.driver_cpu_seconds / run.wall_seconds:.2f} of a core); load {run.load:.1f}",
            flush=True,
        )
    return steady


def _overhead(args: argparse.Namespace) -> int:
    from bench import search
    from bench.catalog import load_benchmark
    from bench.config import ConfigError
    from bench.console import Verbosity, quiet_third_party
    from bench.search import driver  # noqa: F401 - Ray, Optuna, MLflow set their loggers on import: before quieting them

    quiet_third_party(Verbosity.normal)  # the library output settings of `sharpbench run`
    try:
        base = load_benchmark(args.config)
    except (ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trials, repeats, long_seconds = args.trials, args.repeats, args.long_seconds
    if args.quick:
        trials, repeats, long_seconds = min(trials, 3), 1, min(long_seconds, 20.0)
        args.throughput_seconds = min(args.throughput_seconds, 4.0)
        args.no_full = True
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average {_load():.1f} at start", flush=True)
    started = time.perf_counter()
    search.init_ray(None, num_cpus=2)
    print(f"ray.init (local, 2 CPUs): {time.perf_counter() - started:.1f} s (not counted below)", flush=True)
    try:
        measure_overhead(base, label=f"{base.benchmark} recipe", trials=trials, repeats=repeats)
        if not args.no_full:
            measure_full(base, repeats=1)
        if not args.no_long:
            epochs = epochs_for(base, long_seconds, args.long_width)
            measure_overhead(
                base,
                label=f"~{long_seconds:.0f} s trials",
                trials=2,
                repeats=1,
                epochs=epochs,
                width=args.long_width,
            )
        if not args.no_throughput:
            measure_throughput(base, trials=4 if args.quick else 8, concurrencies=(1, 2))
        if args.throughput_seconds:
            epochs = epochs_for(base, args.throughput_seconds, args.long_width)
            measure_throughput(base, trials=4, concurrencies=(1, 2), epochs=epochs, width=args.long_width)
    finally:
        import ray

        ray.shutdown()
    print(f"total {time.perf_counter() - started:.0f} s, load average {_load():.1f} at end")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.benchmarks.orchestration", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    overhead = commands.add_parser("overhead", help="Ray Tune against in-process, and C=1/2 throughput")
    overhead.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="benchmark config whose recipe the trials use"
    )
    overhead.add_argument("--trials", type=int, default=6, help="trials per run (default 6, digits.yaml's budget)")
    overhead.add_argument("--repeats", type=int, default=3, help="Ray + in-process pairs for the config's recipe")
    overhead.add_argument("--long-seconds", type=float, default=60.0, help="target length of one 'long' trial")
    overhead.add_argument(
        "--long-width",
        type=int,
        default=64,
        help="model.options.width of the long trials (default 64: epochs of ~0.5 s rather than digits' ~0.03 s)",
    )
    overhead.add_argument(
        "--quick",
        action="store_true",
        help="3 trials, 1 repeat, 20 s long trials, 4 throughput trials, no full benchmark",
    )
    overhead.add_argument(
        "--no-full", action="store_true", help="skip the whole config as configured (every method and phase)"
    )
    overhead.add_argument("--no-long", action="store_true", help="skip the long-trial figure")
    overhead.add_argument("--no-throughput", action="store_true", help="skip the C=1/C=2 throughput figure")
    overhead.add_argument(
        "--throughput-seconds",
        type=float,
        default=8.0,
        help="also measure C=1/C=2 throughput with 4 trials of about this many seconds "
        "(CNN of --long-width; default 8, --quick 4); 0: skip",
    )
    args = parser.parse_args(argv)
    for name in ("trials", "repeats"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return 2
    if args.long_width < 1:
        print("error: --long-width must be at least 1", file=sys.stderr)
        return 2
    if args.throughput_seconds < 0:
        print("error: --throughput-seconds must be 0 (skip) or positive", file=sys.stderr)
        return 2
    if args.long_seconds <= 0:
        print("error: --long-seconds must be positive", file=sys.stderr)
        return 2
    return _overhead(args)


if __name__ == "__main__":
    sys.exit(main())
