"""End-to-end smoke: ``sharpbench run`` on a tiny digits config and a tiny CIFAR-10 config, each
in a fresh results folder, as a user would start them (a part of :mod:`bench.benchmarks.acceptance`).

Each run goes through everything a real one does (preflight, Ray Tune, Optuna, the trainable, the
Parquet rows, MLflow) with ERM and SAM, one search trial each, no final phase, no report. The
figures are its exit status, its wall time and the rows it wrote. The CIFAR config reads real
CIFAR-10 when it was found, else ``synthetic_cifar10`` (its shape and sizes, random pixels).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.benchmarks.throughput import DataSource
from bench.config import BenchmarkConfig
from bench.errors import first_line
from bench.results.parquet import read_rows

#: One search trial per method: its declared defaults (the search enqueues them first), under
#: the random sampler (TPE would warn that all its trials are random start-up trials).
METHODS = ("erm", "sam")
#: A run starts only with this much of the time budget left (it needs more: Ray alone starts in ~10 s).
MIN_SECONDS_LEFT = 20.0
#: How long a run may take to stop after SIGTERM (it saves its state and shuts Ray down) before
#: its process group is killed.
STOP_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class SmokeSizes:
    epochs: int
    reduced: bool  # the CPU mode: tiny model widths and splits, no GPU share


def digits_config(sizes: SmokeSizes) -> dict[str, Any]:
    return {
        "benchmark": "acceptance_digits",
        "dataset": {"name": "digits"},
        "model": {"name": "cnn", "options": {"width": 8 if sizes.reduced else 16}},
        "training": {"epochs": sizes.epochs, "batch_size": 64},
        "search": {"trials_per_method": 1, "sampler": "random", "asha": {"enabled": False}},
        "resources": {"cpus_per_trial": 1},
        "regularizers": list(METHODS),
    }


def cifar_config(sizes: SmokeSizes, source: DataSource) -> dict[str, Any]:
    """configs/cifar10_quick.yaml's recipe, one trial per method, two trials per GPU. Reduced: a
    ResNet-18 of width 8 on 64 training and 500 validation images (the official 10,000 test images
    are evaluated once), so that a CPU gets through it in seconds."""
    dataset: dict[str, Any] = {
        "name": source.dataset,
        "data_dir": source.data_dir,
        "val_fraction": 0.01 if sizes.reduced else 0.1,
        "crop_padding": 4,
        "horizontal_flip": True,
    }
    if sizes.reduced:
        dataset["max_train_samples"] = 64
    return {
        "benchmark": "acceptance_cifar10",
        "dataset": dataset,
        "model": {"name": "resnet18", "options": {"width": 8} if sizes.reduced else {}},
        "training": {
            "epochs": sizes.epochs,
            "batch_size": 32 if sizes.reduced else 128,
            "learning_rate": 0.1,
            "weight_decay": 5.0e-4,
        },
        "search": {"trials_per_method": 1, "sampler": "random", "asha": {"enabled": False}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0 if sizes.reduced else 0.5},
        "regularizers": list(METHODS),
    }


@dataclass
class SmokeRun:
    config: str  # digits or cifar10
    dataset: str
    model: str
    epochs: int
    status: str  # ok, failed, skipped
    reason: str | None = None
    exit_code: int | None = None
    wall_seconds: float | None = None
    rows: int = 0
    completed_rows: int = 0
    expected_rows: int = len(METHODS)
    devices: tuple[str, ...] = ()  # the trials' devices, from their rows

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        record["devices"] = list(self.devices)
        return record


def _last_line(path: Path) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return first_line(lines[-1]) if lines else None


def _run(command: list[str], folder: Path, timeout: float) -> tuple[int | None, float, Path]:
    """``command`` in its own session (it starts Ray, whose processes join its group), stdout and
    stderr to files (no pipe to fill); past ``timeout``, SIGTERM (the run saves and stops), then
    the group is killed. Returns the exit status (``None`` when killed), the seconds and stderr."""
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group this Popen created
                process.wait()
            code = None
    return code, time.perf_counter() - started, err


def run_config(name: str, config: dict[str, Any], *, timeout: float) -> SmokeRun:
    """``sharpbench run`` on ``config`` in a temporary folder, and what it left there."""
    checked = BenchmarkConfig.model_validate(config)  # a bad config here is this module's bug: raise
    run = SmokeRun(
        name, checked.dataset.name, checked.model.name, checked.training.epochs, "failed", expected_rows=len(METHODS)
    )
    with tempfile.TemporaryDirectory(prefix=f"sharpbench-smoke-{name}-") as temporary:
        folder = Path(temporary)
        path, results = folder / f"{name}.yaml", folder / "results"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(results)]
        code, run.wall_seconds, stderr = _run([*command, "--no-report", "--quiet"], folder, timeout)
        run.exit_code = code
        rows = read_rows(results).to_pylist()
        run.rows = len(rows)
        run.completed_rows = sum(row["status"] == "completed" for row in rows)
        run.devices = tuple(sorted({str(row["device"]) for row in rows}))
        if code is None:  # not a failure of the run: the budget ran out while it ran
            run.status, run.reason = "skipped", f"stopped when the time budget ran out, after {timeout:.0f} s"
        elif code != 0:
            run.reason = f"exit status {code}: {_last_line(stderr) or 'no message'}"
        elif run.completed_rows < run.expected_rows:
            run.reason = f"{run.completed_rows} of {run.expected_rows} trials completed"
        else:
            run.status = "ok"
    return run


def run_smoke(
    configs: list[tuple[str, dict[str, Any]]],
    *,
    time_left: Callable[[], float],
    out_of_time: Callable[[], str | None],
    progress: Callable[[str], None],
) -> list[SmokeRun]:
    """Each config in turn, each given the time left (then stopped); once ``out_of_time()`` gives
    a reason, the rest are skipped with it."""
    runs = []
    for name, config in configs:
        reason = out_of_time()
        if reason is not None:
            checked = BenchmarkConfig.model_validate(config)
            runs.append(
                SmokeRun(name, checked.dataset.name, checked.model.name, checked.training.epochs, "skipped", reason)
            )
            continue
        progress(f"smoke: sharpbench run ({name})")
        runs.append(run_config(name, config, timeout=max(1.0, time_left())))
    return runs
