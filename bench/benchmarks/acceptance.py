"""The GPU acceptance check: what one GPU gives a benchmark, in one command of a few minutes.

``python -m bench.benchmarks.acceptance [--output results/acceptance.json] [--budget SECONDS]
[--data-dir FOLDER] [--part NAME ...] [--cpu-smoke]``

Parts, in the order they run (each with its wall time; one that fails is recorded with its
one-line reason and the others still run; once the time budget is spent, what is left is
recorded as skipped):

* ``throughput``: ResNet-18 training images/s on CIFAR-10-shaped images resident on the device,
  bf16 autocast × channels_last, eager (:mod:`bench.benchmarks.throughput`);
* ``regularizers``: every registered regularizer's step time relative to ERM's
  (:func:`bench.benchmarks.perf.benchmark_steps`, what ``sharpbench perf`` prints);
* ``packing``: total and per-trial images/s of 1, 2 and 4 trial processes sharing the GPU, and
  the ``resources.gpus_per_trial`` that pays (:mod:`bench.benchmarks.packing`);
* ``smoke``: ``sharpbench run`` of a tiny digits and a tiny CIFAR-10 config
  (:mod:`bench.benchmarks.smoke`);
* ``compile``: the throughput grid's other half, with ``torch.compile`` and its compile time;
  last, because each point compiles for tens of seconds: a tight budget loses these first.

Real CIFAR-10 is used where its files are found (``--data-dir``, else the configs' default
folder); otherwise random tensors of its shape (``synthetic_cifar10`` in the smoke config), and
the JSON says which. The *reduced mode* (``--cpu-smoke``, or automatically without CUDA) runs
every part on the CPU at toy sizes, in one to two minutes on 2 cores; its figures only show that
the program works.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from bench import __version__
from bench.benchmarks import packing, smoke, throughput
from bench.benchmarks.acceptance_report import render
from bench.benchmarks.throughput import DataSource, GridSizes
from bench.errors import first_line
from bench.provenance import git_commit, hardware

PROGRAM = "python -m bench.benchmarks.acceptance"
PARTS = ("throughput", "regularizers", "packing", "smoke", "compile")
DEFAULT_OUTPUT = Path("results") / "acceptance.json"
#: The version of the JSON layout: bump it when a key changes meaning.
FORMAT = 1


@dataclass(frozen=True)
class Mode:
    """The sizes of one mode: the full one on a GPU, or the reduced one on a CPU."""

    name: str  # full or reduced
    device: str  # cuda or cpu
    budget_seconds: float
    grid: GridSizes
    samples: int  # synthetic training images held on the device (without real CIFAR-10)
    compile: bool  # whether the compiled points run
    compile_margin_seconds: float  # a compiled point starts only with this much time left
    ratio_model: str
    ratio_batch_size: int
    ratio_warmup: int
    ratio_repeats: int
    ratio_block_steps: int
    packing_levels: tuple[int, ...]
    packing_seconds: float  # each level's timed window
    packing_warmup: int
    packing_block_steps: int
    packing_startup_timeout: float
    smoke_epochs: int


#: One H100, the recipe's batch of 128. Sized from estimates, not yet timed on a GPU: eager points and
#: regularizers ~1 min, packing ~1.5 min, the smoke runs ~2 min, the compiled points ~30-60 s each.
#: The budget leaves room for the item running when it is spent (a compiled point needs 60 s).
FULL = Mode(
    name="full",
    device="cuda",
    budget_seconds=450.0,
    grid=GridSizes(batch_size=128, warmup_steps=10, steps_per_block=20, repeats=10),
    samples=45_000,  # CIFAR-10's training split less a 10% validation split
    compile=True,
    compile_margin_seconds=60.0,
    ratio_model="resnet18",
    ratio_batch_size=128,
    ratio_warmup=3,
    ratio_repeats=10,
    ratio_block_steps=3,
    packing_levels=(1, 2, 4),
    packing_seconds=15.0,
    packing_warmup=10,
    packing_block_steps=10,
    packing_startup_timeout=240.0,
    smoke_epochs=3,
)
#: 2 CPU cores: toy sizes that run every part; the regularizers on the digits CNN (ResNet-18's
#: 22 methods would take most of a minute at batch 8), packing up to 2 trials.
REDUCED = Mode(
    name="reduced",
    device="cpu",
    budget_seconds=300.0,
    grid=GridSizes(batch_size=8, warmup_steps=1, steps_per_block=1, repeats=1),
    samples=32,
    compile=False,
    compile_margin_seconds=0.0,
    ratio_model="cnn",
    ratio_batch_size=8,
    ratio_warmup=1,
    ratio_repeats=1,
    ratio_block_steps=1,
    packing_levels=(1, 2),  # 4 processes on 2 cores would only add their start-up
    packing_seconds=1.0,
    packing_warmup=2,
    packing_block_steps=1,
    packing_startup_timeout=120.0,
    smoke_epochs=1,
)


class Budget:
    """The overall time budget, from the program's start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_left(self) -> float:
        return self.seconds - self.elapsed()

    def out_of_time(self, margin: float = 0.0) -> str | None:
        """Why nothing more may start (``None``: something may), ``margin`` seconds ahead."""
        if self.time_left() > margin:
            return None
        spent = f"time budget of {self.seconds:g} s spent ({self.elapsed():.0f} s elapsed"
        return spent + (f", under {margin:g} s left for this)" if margin else ")")


@dataclass
class Part:
    name: str
    status: str  # ok, failed, skipped
    seconds: float | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "seconds": self.seconds, "reason": self.reason, "result": self.result}


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    commit = git_commit()
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else hardware(device),
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        # What "fp32" means on this device: PyTorch's defaults let cuDNN's convolutions use TF32.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "python": platform.python_version(),
        "sharpbench": __version__,
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }


Progress = Callable[[str], None]


def _failed_items(items: list[dict[str, Any]], what: str) -> str | None:
    failed = [item for item in items if item["status"] == "failed"]
    if not failed:
        return None
    return f"{len(failed)} of {len(items)} {what} failed; first: {failed[0]['reason']}"


def _grid_part(compiled: bool, mode: Mode, source: DataSource, budget: Budget, progress: Progress) -> Part:
    margin = mode.compile_margin_seconds if compiled else 0.0
    result = throughput.measure_grid(
        throughput.grid_points(compiled),
        source,
        mode.grid,
        torch.device(mode.device),
        samples=mode.samples,
        compile_allowed=mode.compile,
        out_of_time=lambda: budget.out_of_time(margin),
        progress=progress,
    )
    record = result.to_dict()
    name = "compile" if compiled else "throughput"
    reason = _failed_items(record["cells"], "points")  # a failed point fails the part; the others' figures stay
    skipped = [cell for cell in record["cells"] if cell["status"] == "skipped"]
    if not reason and record["cells"] and len(skipped) == len(record["cells"]):
        # Nothing was measured (the reduced mode skips compiling): "ok" would read as a measurement.
        return Part(name, "skipped", reason=skipped[0].get("reason") or "every point skipped", result=record)
    return Part(name, "failed" if reason else "ok", reason=reason, result=record)


def _regularizers_part(mode: Mode, source: DataSource, budget: Budget, progress: Progress) -> Part:
    """``sharpbench perf``'s own measurement, called as it is (its rounds are short: no budget checks)."""
    from bench.benchmarks.perf import benchmark_steps

    # Random batches of the model's input shape whatever the data source: a step costs the same
    # whatever the pixels, and perf's real-data path keeps a copy of the training set on the
    # device per method (22 × 0.55 GB for CIFAR-10).
    timings = benchmark_steps(
        [mode.ratio_model],
        None,  # every registered regularizer, plug-ins included; erm first, as the reference
        batch_size=mode.ratio_batch_size,
        warmup=mode.ratio_warmup,
        repeats=mode.ratio_repeats,
        steps_per_block=mode.ratio_block_steps,
        device=mode.device,
        progress=lambda line: progress(f"regularizers: {line}"),
    )
    record = {
        "model": mode.ratio_model,
        "data": "random tensors of the model's input shape",
        "batch_size": mode.ratio_batch_size,
        "warmup": mode.ratio_warmup,
        "repeats": mode.ratio_repeats,
        "steps_per_block": mode.ratio_block_steps,
        "precision": "bf16 autocast, channels_last" if mode.device == "cuda" else "float32",
        "methods": [timing.to_dict() for timing in timings],
    }
    return Part("regularizers", "ok", result=record)


def _packing_part(mode: Mode, source: DataSource, budget: Budget, progress: Progress) -> Part:
    jobs = [
        packing.PackingJob(
            source=source,
            samples=mode.samples,
            device=mode.device,
            trials=trials,
            batch_size=mode.grid.batch_size,
            warmup_steps=mode.packing_warmup,
            steps_per_block=mode.packing_block_steps,
            seconds=mode.packing_seconds,
            startup_timeout=mode.packing_startup_timeout,
        )
        for trials in mode.packing_levels
    ]
    levels = packing.measure_packing(jobs, out_of_time=budget.out_of_time, progress=progress)
    items = [level.to_dict() for level in levels]
    record = {
        "model": throughput.MODEL,
        "recipe": "bf16 autocast, channels_last, eager" if mode.device == "cuda" else "float32, eager",
        "batch_size": mode.grid.batch_size,
        "seconds_per_level": mode.packing_seconds,
        "levels": items,
        # On a CPU the processes share cores, not a GPU: no GPU share to suggest.
        "suggested_gpus_per_trial": packing.suggested_gpus_per_trial(levels) if mode.device == "cuda" else None,
    }
    reason = _failed_items(items, "levels")
    return Part("packing", "failed" if reason else "ok", reason=reason, result=record)


def _smoke_part(mode: Mode, source: DataSource, budget: Budget, progress: Progress) -> Part:
    sizes = smoke.SmokeSizes(epochs=mode.smoke_epochs, reduced=mode.name == REDUCED.name)
    configs = [("digits", smoke.digits_config(sizes)), ("cifar10", smoke.cifar_config(sizes, source))]
    runs = smoke.run_smoke(
        configs,
        time_left=budget.time_left,
        out_of_time=lambda: budget.out_of_time(smoke.MIN_SECONDS_LEFT),
        progress=progress,
    )
    items = [run.to_dict() for run in runs]
    reason = _failed_items(items, "runs")
    return Part("smoke", "failed" if reason else "ok", reason=reason, result={"runs": items})


RUNNERS: dict[str, Callable[[Mode, DataSource, Budget, Progress], Part]] = {
    "throughput": functools.partial(_grid_part, False),
    "regularizers": _regularizers_part,
    "packing": _packing_part,
    "smoke": _smoke_part,
    "compile": functools.partial(_grid_part, True),
}


def run_part(name: str, mode: Mode, source: DataSource, budget: Budget, progress: Progress) -> Part:
    """One part, timed; its failure is recorded as one line, never raised."""
    reason = budget.out_of_time()
    if reason is not None:
        return Part(name, "skipped", reason=reason)
    started = time.perf_counter()
    try:
        part = RUNNERS[name](mode, source, budget, progress)
    except Exception as error:  # the part's one-line reason; the next part still runs
        part = Part(name, "failed", reason=f"{type(error).__name__}: {first_line(error)}")
    part.seconds = time.perf_counter() - started
    # Hand the part's cached device memory back: the packed trial processes and the smoke runs'
    # Ray trials share this GPU with this process.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return part


def add_speedups(parts: dict[str, Any]) -> None:
    """Each measured grid point's ``speedup``: its median images/s over the fp32/contiguous/eager
    point's (of the throughput part; the compiled points are in another part, hence here)."""
    cells = [
        cell
        for name in ("throughput", "compile")
        for cell in ((parts.get(name) or {}).get("result") or {}).get("cells", [])
    ]
    baseline = next(
        (
            cell["images_per_second"]["median"]
            for cell in cells
            if cell["status"] == "ok" and cell["label"] == throughput.BASELINE.label
        ),
        None,
    )
    for cell in cells:
        measured = cell["status"] == "ok" and baseline is not None
        cell["speedup"] = cell["images_per_second"]["median"] / baseline if measured else None


def _write(path: Path, report: dict[str, Any]) -> None:
    # Written after every part, through a temporary file: a run cut short keeps what it measured.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(report, indent=2) + "\n")
    staging.replace(path)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2 (not usage + error)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {PROGRAM} --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROGRAM,
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Parts, in this order: throughput (ResNet-18 images/s, bf16 x channels_last, eager), regularizers "
            "(each one's step time / ERM's), packing (1, 2, 4 trial processes on one GPU), smoke (sharpbench run "
            "of a digits and a CIFAR-10 config), compile (the grid with torch.compile; last, as the slowest). "
            f"On a GPU: batch {FULL.grid.batch_size}, {FULL.grid.repeats} x {FULL.grid.steps_per_block} timed "
            f"steps per point, {FULL.smoke_epochs} epochs per smoke run, a {FULL.budget_seconds:g}-s budget: sized for "
            "8 minutes on one H100 (estimated, not yet timed on one). "
            "Reduced CPU mode: with --cpu-smoke, or automatically when no CUDA device is visible, every part runs "
            f"on the CPU at toy sizes (batch {REDUCED.grid.batch_size}, {REDUCED.grid.repeats} repeat, "
            f"{REDUCED.smoke_epochs} epoch, no torch.compile, the regularizers on the digits CNN, packing of "
            f"{' and '.join(map(str, REDUCED.packing_levels))} trials), in a minute or two on 2 cores. "
            "Exit status: 0 when every part ran (or was skipped for the budget or --part), "
            "1 when a part failed (its reason is in the table and the JSON), 2 for bad flags."
        ),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="FILE.json",
        help=f"where the figures are written (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help=f"overall time budget; parts, points and runs not started when it is spent are recorded as skipped "
        f"(default {FULL.budget_seconds:g} on a GPU, {REDUCED.budget_seconds:g} in the reduced mode)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="FOLDER",
        help="where to look for CIFAR-10 (cifar-10-batches-py/); default: the configs' ~/.cache/sharpbench/data. "
        "Without it, synthetic tensors of its shape are timed; nothing is downloaded",
    )
    parser.add_argument(
        "--part",
        action="append",
        choices=PARTS,
        metavar="PART",
        help=f"run only this part (repeatable; default all): {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="the reduced CPU mode even where CUDA is available (a check that the program works)",
    )
    return parser


def _checked_output(parser: _Parser, output: Path) -> None:
    if output.is_dir():
        parser.error(f"--output {output} is a folder; name a file, e.g. {output / DEFAULT_OUTPUT.name}")
    for parent in output.parents:
        if parent.exists() and not parent.is_dir():
            parser.error(f"--output {output}: {parent} is a file, not a folder")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, not {args.budget:g}")
    _checked_output(parser, args.output)
    if args.cpu_smoke:
        mode, why = REDUCED, "--cpu-smoke"
    elif torch.cuda.is_available():
        mode, why = FULL, "a CUDA device is visible"
    else:
        mode, why = REDUCED, "no CUDA device is visible"
    budget = Budget(args.budget if args.budget is not None else mode.budget_seconds)
    selected = set(args.part or PARTS)

    def progress(line: str) -> None:
        print(f"[{budget.elapsed():6.1f} s] {line}", file=sys.stderr, flush=True)

    progress(f"{mode.name} mode ({why}); budget {budget.seconds:g} s; writing {args.output}")
    source = throughput.find_cifar10(args.data_dir)
    progress(f"data: {source.dataset}" + (f" ({source.reason})" if source.reason else ""))
    report: dict[str, Any] = {
        "program": PROGRAM,
        "format": FORMAT,
        "mode": mode.name,
        "mode_reason": why,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_seconds": budget.seconds,
        "environment": environment(torch.device(mode.device)),
        "data": source.to_dict(),
        "parts": {},
    }
    for name in PARTS:
        if name in selected:
            part = run_part(name, mode, source, budget, progress)
        else:
            part = Part(name, "skipped", reason="not selected (--part)")
        report["parts"][name] = part.to_dict()
        add_speedups(report["parts"])
        report["wall_seconds"] = budget.elapsed()
        _write(args.output, report)
        progress(f"{name}: {part.status}" + (f" ({part.reason})" if part.reason else ""))
    report["environment"]["load_average_at_end"] = os.getloadavg()[0]
    _write(args.output, report)
    print(render(report))
    print(f"wrote {args.output}")
    return 1 if any(part["status"] == "failed" for part in report["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
