"""Fractional packing: training throughput of 1, 2, 4 … trials sharing one GPU, each a process
of its own, as Ray runs trials with ``resources.gpus_per_trial`` of 1/2, 1/4 … (a part of
:mod:`bench.benchmarks.acceptance`).

Each trial process does what a packed Ray trial does to its process (:mod:`bench.search.trainable`):
it caps its share of the GPU's memory (``torch.cuda.set_per_process_memory_fraction``) and of
the CPU threads, then trains the default recipe (bf16 autocast and channels-last on CUDA, eager)
with :class:`bench.benchmarks.throughput.TrainingLoop`. The processes start the clock together
(a barrier, after every one has built its model and warmed up) and each trains for the same
window, so every figure is taken while all of them compete. The total is the sum of the
trials' images/s; a trial's figure is its own images over its own window.

Processes are *spawned* (not forked: CUDA cannot be used in a forked child), so each imports
torch afresh; that start-up is outside the window.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Barrier

import torch

from bench.benchmarks.throughput import DataSource, GridPoint, TrainingLoop, training_images
from bench.errors import first_line
from bench.measure.timing import wall_clock

#: A level is only worth more trials per GPU when its total beats the fewer trials' by this much.
WORTH_PACKING = 1.05


@dataclass(frozen=True)
class PackingJob:
    """What each trial process of one level does (pickled to the spawned processes)."""

    source: DataSource
    samples: int  # synthetic images per process (real CIFAR-10: its training split)
    device: str
    trials: int  # processes sharing the device
    batch_size: int
    warmup_steps: int
    steps_per_block: int
    seconds: float  # the timed window, after the barrier
    startup_timeout: float  # the most a process may take to reach the barrier

    @property
    def gpus_per_trial(self) -> float:
        return 1 / self.trials

    @property
    def threads(self) -> int:
        # Ray gives a trial resources.cpus_per_trial CPUs; here the machine's cores are shared alike.
        return max(1, (os.cpu_count() or 1) // self.trials)


@dataclass(frozen=True)
class TrialFigure:
    images: int
    seconds: float
    peak_memory_mib: float | None  # CUDA only, resident data included

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class PackingLevel:
    trials: int
    status: str  # ok, failed, skipped
    reason: str | None = None
    figures: list[TrialFigure] = field(default_factory=list)
    wall_seconds: float | None = None  # the level, processes' start-up included

    @property
    def total_images_per_second(self) -> float | None:
        return sum(f.images_per_second for f in self.figures) if self.status == "ok" else None

    def to_dict(self) -> dict[str, object]:
        rates = [f.images_per_second for f in self.figures]
        return {
            "trials": self.trials,
            "gpus_per_trial": 1 / self.trials,
            "status": self.status,
            "reason": self.reason,
            "total_images_per_second": self.total_images_per_second,
            "per_trial_images_per_second": rates,
            "per_trial_median": statistics.median(rates) if rates else None,
            "trials_detail": [asdict(f) for f in self.figures],
            "wall_seconds": self.wall_seconds,
        }


def _trial(job: PackingJob, barrier: Barrier, results: multiprocessing.Queue) -> None:
    """One trial process: set up like a packed Ray trial, warm up, wait for the others, train."""
    try:
        device = torch.device(job.device)
        torch.set_num_threads(job.threads)
        if device.type == "cuda" and job.trials > 1:
            # Of the current device, as the trainable sets it (an index-less device is refused here).
            torch.cuda.set_per_process_memory_fraction(job.gpus_per_trial)
        data, data_config = training_images(job.source, job.samples, device)
        default_recipe = GridPoint(bf16=device.type == "cuda", channels_last=device.type == "cuda", compile=False)
        loop = TrainingLoop(data, data_config, default_recipe.training(device, job.batch_size), device=device)
        if job.warmup_steps:
            loop.run(job.warmup_steps)
        barrier.wait(timeout=job.startup_timeout)
        steps, started = 0, wall_clock(device)
        while wall_clock(device) - started < job.seconds:  # whole blocks: a few steps past the window
            loop.run(job.steps_per_block)
            steps += job.steps_per_block
        elapsed = wall_clock(device) - started
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        results.put(("ok", TrialFigure(steps * job.batch_size, elapsed, peak)))
    except BaseException as error:  # any failure, reported to the parent as one line
        barrier.abort()  # the others stop waiting at the barrier instead of timing out
        results.put(("failed", f"{type(error).__name__}: {first_line(error)}"))


def measure_level(job: PackingJob) -> PackingLevel:
    """``job.trials`` processes at once; the level fails with the first failing process's reason."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(job.trials)
    results: multiprocessing.Queue = context.Queue()
    started = time.perf_counter()
    processes = [context.Process(target=_trial, args=(job, barrier, results), daemon=True) for _ in range(job.trials)]
    for process in processes:
        process.start()
    outcomes: list[tuple[str, object]] = []
    patience = job.startup_timeout + job.seconds * 2 + 30
    deadline = time.monotonic() + patience
    try:
        while len(outcomes) < job.trials and time.monotonic() < deadline:
            try:
                outcomes.append(results.get(timeout=1.0))
            except queue.Empty:
                if not any(p.is_alive() for p in processes) and results.empty():
                    break  # every process has ended and some said nothing: a hard crash
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()  # our own child, by its handle
                process.join(timeout=10)
    wall = time.perf_counter() - started
    failures = [str(detail) for status, detail in outcomes if status != "ok"]
    # The first failure is the cause; the others are mostly "BrokenBarrierError" that it caused.
    failures.sort(key=lambda line: "BrokenBarrierError" in line)
    if failures:
        return PackingLevel(job.trials, "failed", failures[0], wall_seconds=wall)
    if len(outcomes) < job.trials:
        codes = sorted({p.exitcode for p in processes if p.exitcode not in (0, None)})
        why = f"exit codes {codes}" if codes else f"no answer within {patience:.0f} s"
        return PackingLevel(job.trials, "failed", f"{job.trials - len(outcomes)} trial process(es) died ({why})")
    figures = [detail for _, detail in outcomes if isinstance(detail, TrialFigure)]
    return PackingLevel(job.trials, "ok", figures=figures, wall_seconds=wall)


def suggested_gpus_per_trial(levels: list[PackingLevel]) -> float | None:
    """``1 / n`` for the fewest trials per GPU whose total comes within :data:`WORTH_PACKING` of
    the best total: more trials per GPU only where they buy throughput (each trial is slower,
    and shares the GPU's memory)."""
    totals = {level.trials: level.total_images_per_second for level in levels if level.status == "ok"}
    if not totals:
        return None
    best = max(totals.values())  # type: ignore[type-var]
    fewest = min(n for n, total in totals.items() if total is not None and total * WORTH_PACKING >= best)
    return 1 / fewest


def measure_packing(
    jobs: list[PackingJob], *, out_of_time: Callable[[], str | None], progress: Callable[[str], None]
) -> list[PackingLevel]:
    """Each level in turn; once ``out_of_time()`` gives a reason, the levels left are skipped."""
    levels = []
    for job in jobs:
        reason = out_of_time()
        if reason is not None:
            levels.append(PackingLevel(job.trials, "skipped", reason))
            continue
        progress(f"packing: {job.trials} trial(s) on one {job.device} device")
        levels.append(measure_level(job))
    return levels
