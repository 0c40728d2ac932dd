"""Simulated scale: how the driver copes as a benchmark grows to thousands of trials.

``python -m bench.benchmarks.scale --trials 100 1000 10000 --workers 4 --gpus-per-worker 16``

A loopback Ray cluster (``ray.cluster_utils.Cluster``: a head with no GPUs and worker nodes
declaring logical GPUs) runs one benchmark of N trials through the real driver (the routing
searcher, per-method ASHA, the Parquet and MLflow sinks), with simulated trials
(:class:`bench.benchmarks.orchestration.SimulatedTraining`: each epoch sleeps a cost model's
time, ``epoch_seconds × passes per step / 2``, and reports what a real trial reports). For each
N it prints the slot utilization (busy slot-seconds over slots × wall, as the orchestration
benchmark defines it) and the driver's CPU time per trial (the process's user + system time over
the whole run, Tune's start-up included, divided by N), and that cost in each tenth of the run (by
trials ended, sampled every 2 s: within one run, whether a trial costs the driver more as the
history grows). The targets: utilization ≥ 0.9, and the driver's cost per trial flat as N grows
(no per-trial work that grows with the history).

Every slot is a trial process on this machine: 64 slots need about 64 × 0.3 GB of memory, so the
default is 16 slots (4 workers × 4 logical GPUs); give a larger cluster where memory allows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from bench.benchmarks.orchestration import Setup, measure_run
from bench.console import Verbosity, quiet_third_party
from bench.results.parquet import dataset_dir
from bench.search.runtime import init_ray

METHODS = ("erm", "weight_decay", "sam", "asam")
#: The run is cut into this many parts by trials ended; the driver's CPU per trial in each part
#: shows whether its cost grows with the history within one run.
PARTS = 10


@dataclass(frozen=True)
class ScaleFigure:
    trials: int
    slots: int
    wall_seconds: float
    utilization: float
    driver_cpu_seconds: float
    #: The driver's CPU ms per trial in each tenth of the run (by trials ended), first to last.
    ms_per_trial_by_part: list[float] = field(default_factory=list)

    @property
    def driver_ms_per_trial(self) -> float:
        return 1000 * self.driver_cpu_seconds / self.trials


class DriverMeter:
    """Samples this process's CPU time and the number of rows written (one Parquet file per ended
    trial) every ``period`` seconds on a thread, while a run goes on."""

    def __init__(self, leaderboard: Path, period: float = 2.0) -> None:
        self.leaderboard, self.period = leaderboard, period
        self.samples: list[tuple[float, int]] = []  # (process CPU seconds, trials ended)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="scale-meter", daemon=True)

    def _ended(self) -> int:
        count = 0
        for _, _, files in os.walk(self.leaderboard):
            count += sum(name.endswith(".parquet") for name in files)
        return count

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.process_time(), self._ended()))

    def __enter__(self) -> DriverMeter:
        self.samples.append((time.process_time(), 0))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.process_time(), self._ended()))

    def ms_per_trial_by_part(self, trials: int, parts: int = PARTS) -> list[float]:
        """CPU ms per trial between the first samples at or past each ``trials / parts`` boundary;
        NaN for a part no sample falls inside (a run too short for its sampling period)."""
        figures = []
        for part in range(parts):
            low, high = trials * part / parts, trials * (part + 1) / parts
            start = next(s for s in self.samples if s[1] >= low) if part else self.samples[0]
            end = next((s for s in self.samples if s[1] >= high), self.samples[-1])
            ended = end[1] - start[1]
            figures.append(1000 * (end[0] - start[0]) / ended if ended > 0 else math.nan)
        return figures


def setup_for(trials: int, *, workers: int, gpus_per_worker: int, epochs: int, epoch_seconds: float) -> Setup:
    """A benchmark of ``trials`` trials in all: 4 methods × (search trials + 1 final seed). ASHA's
    grace period is the whole run, so every trial costs exactly its cost model's time; random
    search, since a model-based sampler's trials wait for its startup trials (the startup rule),
    idle slots by design that would hide the driver's own cost."""
    per_method = max(2, trials // len(METHODS)) - 1
    return Setup(
        methods=METHODS,
        trials_per_method=per_method,
        epochs=epochs,
        epoch_seconds=epoch_seconds,
        seeds=(1,),
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        grace_period=epochs,
        sampler="random",
    )


def measure(
    counts: Sequence[int], *, workers: int, gpus_per_worker: int, epochs: int, epoch_seconds: float
) -> list[ScaleFigure]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    figures = []
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=gpus_per_worker, num_gpus=gpus_per_worker)
        cluster.wait_for_nodes()
        init_ray(cluster.address)
        head = cluster.head_node.node_id
        with tempfile.TemporaryDirectory(prefix="sharpbench-scale-") as folder:
            for count in counts:
                setup = setup_for(
                    count, workers=workers, gpus_per_worker=gpus_per_worker, epochs=epochs, epoch_seconds=epoch_seconds
                )
                name = f"scale{count}"
                began = time.process_time()
                with DriverMeter(dataset_dir(Path(folder) / name)) as meter:
                    run = measure_run(setup, sequential=False, head_node=head, workdir=Path(folder), name=name)
                cpu = time.process_time() - began
                u = run.utilization
                parts = meter.ms_per_trial_by_part(u.trials)
                figure = ScaleFigure(u.trials, setup.slots, u.wall_seconds, u.utilization, cpu, parts)
                figures.append(figure)
                print(_line(figure), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return figures


HEADER = (
    f"{'trials':>7} {'slots':>5} {'wall s':>8} {'utilization':>11} {'driver CPU s':>12} {'ms/trial':>9}"
    "  ms/trial by tenth of the run"
)


def _line(f: ScaleFigure) -> str:
    return (
        f"{f.trials:>7} {f.slots:>5} {f.wall_seconds:>8.1f} {f.utilization:>11.3f} "
        f"{f.driver_cpu_seconds:>12.1f} {f.driver_ms_per_trial:>9.1f}  "
        + " ".join("–" if math.isnan(ms) else f"{ms:.0f}" for ms in f.ms_per_trial_by_part)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000], help="benchmark sizes (trials)")
    parser.add_argument("--workers", type=int, default=4, help="worker nodes of the loopback cluster")
    parser.add_argument("--gpus-per-worker", type=int, default=4, help="logical GPUs per worker (1 slot each)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--epoch-seconds", type=float, default=1.0, help="seconds per epoch of a 2-pass method")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.trials) < 8 or args.workers < 1 or args.gpus_per_worker < 1 or args.epochs < 1:
        parser.error("--trials must be ≥ 8 (4 methods × a search trial and a seed); the cluster sizes ≥ 1")
    if args.epoch_seconds <= 0:
        parser.error("--epoch-seconds must be positive")
    quiet_third_party(Verbosity.normal)  # as `sharpbench run` does: its table, not Tune's per-trial lines
    print(HEADER, flush=True)
    figures = measure(
        args.trials,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        epochs=args.epochs,
        epoch_seconds=args.epoch_seconds,
    )
    if args.json:
        payload = [asdict(f) | {"driver_ms_per_trial": f.driver_ms_per_trial} for f in figures]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
