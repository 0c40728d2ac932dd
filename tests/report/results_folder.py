"""A small, real results folder for the report tests: Parquet rows written by ParquetSink and a
recorded config, as `sharpbench run` leaves them (three methods, every trial status, final seeds,
flatness on some runs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchmarkConfig, parse_config
from bench.results.curves import CurveKey, CurveWriter
from bench.results.parquet import ParquetSink
from bench.results.schema import Phase, TrialRow, TrialStatus
from bench.run_record import RunRecord

BENCHMARK = "tiny"
START = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
TRAINING = {"epochs": 4, "batch_size": 64, "learning_rate": 0.1, "momentum": 0.9}
PASSES_PER_EPOCH = 10  # ERM: one forward + one backward per step, 10 steps per epoch


def config() -> BenchmarkConfig:
    """The config the rows claim to come from (search spaces the rows' values lie in)."""
    return parse_config(
        {
            "benchmark": BENCHMARK,
            "dataset": {"name": "digits", "max_train_samples": 256},
            "model": {"name": "mlp", "options": {"hidden": 32, "depth": 1}},
            "training": {"epochs": 4, "batch_size": 64, "learning_rate": 0.1},
            "search": {"trials_per_method": 5, "space": {"learning_rate": {"low": 0.01, "high": 0.5, "log": True}}},
            "final": {"seeds": [1, 2, 3]},
            "regularizers": ["erm", "sam", "asam"],
        }
    )


@dataclass(frozen=True)
class Trial:
    """The varying part of one row."""

    regularizer: str
    phase: str
    status: str
    learning_rate: float
    val_accuracy: float | None
    test_accuracy: float | None
    passes_factor: int = 1  # passes per step relative to ERM (SAM: 2)
    regularizer_hparams: dict[str, Any] | None = None
    seed: int = 0
    selected_from: str | None = None
    epochs_run: int = 4
    wall_seconds: float = 10.0
    hessian_trace: float | None = None
    hessian_trace_stderr: float | None = None
    hessian_top_eigenvalue: float | None = None


def row(trial: Trial, index: int) -> TrialRow:
    passes = PASSES_PER_EPOCH * trial.epochs_run * trial.passes_factor // 2
    return TrialRow(
        run_id=f"{BENCHMARK}-{trial.regularizer}-{trial.phase}/t{index:03d}",
        benchmark=BENCHMARK,
        regularizer=trial.regularizer,
        phase=trial.phase,
        status=trial.status,
        error="diverged: loss is nan" if trial.status == TrialStatus.FAILED.value else None,
        failure_class="diverged" if trial.status == TrialStatus.FAILED.value else None,
        dataset="digits",
        model="mlp",
        seed=trial.seed,
        search_seed=0,
        search_metric="val_accuracy",
        sampler=json.dumps({"name": "tpe", "seed": 0}),
        suggestion_kind="model",
        budget=json.dumps({"kind": "trials", "trials": 5}),
        selected_from_run_id=trial.selected_from,
        regularizer_hparams=json.dumps(trial.regularizer_hparams or {}, sort_keys=True),
        training_hparams=json.dumps({**TRAINING, "learning_rate": trial.learning_rate}, sort_keys=True),
        val_accuracy=trial.val_accuracy,
        val_loss=None if trial.val_accuracy is None else 1.0 - trial.val_accuracy,
        test_accuracy=trial.test_accuracy,
        test_loss=None,
        train_loss=0.2,
        epochs_run=trial.epochs_run,
        epochs_planned=4,
        forward_passes=passes,
        backward_passes=passes,
        wall_seconds=trial.wall_seconds,
        compile_s=None,
        hessian_top_eigenvalue=trial.hessian_top_eigenvalue,
        hessian_eigen_iterations=None,
        hessian_eigen_converged=None,
        hessian_trace=trial.hessian_trace,
        hessian_trace_stderr=trial.hessian_trace_stderr,
        hessian_trace_probes=None,
        epsilon_sharpness=None,
        adaptive_sharpness=None,
        device="cpu",
        hardware="test cpu",
        package_versions="{}",
        git_commit=None,
        precision="float32",
        evaluated_weights="trained",
        mlflow_run_id=None,
        node=None,
        started_at=None,
        # Trials start 60 s apart, in index order (start = timestamp - wall_seconds).
        timestamp=START + dt.timedelta(seconds=60 * index + trial.wall_seconds),
    )


def curve(r: TrialRow) -> dict[int, dict[str, Any]]:
    """A learning curve that ends where the row ends: passes and time linear in the epoch, the
    validation accuracy rising to the row's (epoch / epochs_run of it), training loss 1/epoch."""
    n = r.epochs_run
    return {
        e: {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": None,
            "val_accuracy": None if r.val_accuracy is None else r.val_accuracy * e / n,
            "learning_rate": 0.1,
            "epoch_seconds": r.wall_seconds / n,
            "wall_seconds": r.wall_seconds * e / n,
            "forward_passes": r.forward_passes * e // n,
            "backward_passes": r.backward_passes * e // n,
        }
        for e in range(1, n + 1)
    }


C, S, F = TrialStatus.COMPLETED.value, TrialStatus.STOPPED.value, TrialStatus.FAILED.value
SEARCH, FINAL = Phase.SEARCH.value, Phase.FINAL.value


def sam(rho: float) -> dict[str, Any]:
    return {"perturbation_radius": rho}


def asam(rho: float) -> dict[str, Any]:
    return {"perturbation_radius": rho, "eta": 0.01, "adaptive_tensors": "weights"}


#: erm: 4 search trials (3 completed, 1 stopped), best t002 (lr 0.1), 3 final seeds.
#: sam: 5 search trials (3 completed, 1 stopped, 1 failed), best t106, 3 final seeds with flatness.
#: asam: 2 search trials (1 completed, 1 failed), no final seeds: ranked by its search trial.
TRIALS: dict[int, Trial] = {
    0: Trial("erm", SEARCH, C, 0.02, 0.90, 0.89),
    1: Trial("erm", SEARCH, S, 0.4, 0.50, 0.48, epochs_run=1),
    2: Trial("erm", SEARCH, C, 0.1, 0.93, 0.92),
    3: Trial("erm", SEARCH, C, 0.05, 0.92, 0.90),
    10: Trial("erm", FINAL, C, 0.1, 0.93, 0.920, seed=1, selected_from="tiny-erm-search/t002"),
    11: Trial("erm", FINAL, C, 0.1, 0.93, 0.910, seed=2, selected_from="tiny-erm-search/t002"),
    12: Trial("erm", FINAL, C, 0.1, 0.92, 0.925, seed=3, selected_from="tiny-erm-search/t002"),
    100: Trial("sam", SEARCH, C, 0.02, 0.91, 0.90, 2, sam(0.02)),
    101: Trial("sam", SEARCH, S, 0.3, 0.40, 0.41, 2, sam(0.3), epochs_run=1),
    102: Trial("sam", SEARCH, F, 0.5, None, None, 2, sam(0.45), epochs_run=1),
    103: Trial("sam", SEARCH, C, 0.05, 0.94, 0.93, 2, sam(0.05)),
    106: Trial("sam", SEARCH, C, 0.1, 0.95, 0.94, 2, sam(0.1)),
    110: Trial(
        "sam",
        FINAL,
        C,
        0.1,
        0.95,
        0.945,
        2,
        sam(0.1),
        seed=1,
        selected_from="tiny-sam-search/t106",
        wall_seconds=21.0,
        hessian_trace=40.0,
        hessian_trace_stderr=2.0,
        hessian_top_eigenvalue=5.0,
    ),
    111: Trial(
        "sam",
        FINAL,
        C,
        0.1,
        0.94,
        0.935,
        2,
        sam(0.1),
        seed=2,
        selected_from="tiny-sam-search/t106",
        wall_seconds=19.0,
        hessian_trace=55.0,
        hessian_trace_stderr=3.0,
        hessian_top_eigenvalue=6.5,
    ),
    112: Trial(
        "sam",
        FINAL,
        C,
        0.1,
        0.95,
        0.950,
        2,
        sam(0.1),
        seed=3,
        selected_from="tiny-sam-search/t106",
        wall_seconds=20.0,
        hessian_trace=35.0,
        hessian_trace_stderr=1.5,
        hessian_top_eigenvalue=4.0,
    ),
    200: Trial("asam", SEARCH, C, 0.1, 0.92, 0.91, 2, asam(0.5)),
    201: Trial("asam", SEARCH, F, 0.3, None, None, 2, asam(1.5), epochs_run=1),
}


#: How far :func:`own_trials` moves sam's final seeds from :data:`TRIALS`'s: below its interval.
SAM_SHIFT = -0.05


def own_trials() -> dict[int, Trial]:
    """A run to compare with :data:`TRIALS` as its reference: the same trials, sam's final seeds
    SAM_SHIFT lower (outside the reference interval), erm's the same (inside)."""
    return {
        i: dataclasses.replace(t, test_accuracy=t.test_accuracy + SAM_SHIFT)
        if t.regularizer == "sam" and t.phase == FINAL and t.test_accuracy is not None
        else t
        for i, t in TRIALS.items()
    }


def write_results(
    folder: Path, *, with_config: bool = True, trials: dict[int, Trial] | None = None, benchmark: str = BENCHMARK
) -> Path:
    """Write the rows of ``trials`` (default :data:`TRIALS`) into ``folder`` with ParquetSink,
    their learning curves (:func:`curve`), and the recorded config unless ``with_config`` is
    False. Returns ``folder``. Another ``benchmark`` renames the rows (and their run ids, which
    start with it)."""
    chosen = TRIALS if trials is None else trials
    rows = [row(t, i) for i, t in chosen.items()]
    if benchmark != BENCHMARK:
        rows = [
            dataclasses.replace(
                r,
                benchmark=benchmark,
                run_id=r.run_id.replace(BENCHMARK, benchmark, 1),
                selected_from_run_id=r.selected_from_run_id and r.selected_from_run_id.replace(BENCHMARK, benchmark, 1),
            )
            for r in rows
        ]
    ParquetSink(folder).write(rows)
    for r in rows:
        CurveWriter(folder).write(CurveKey(r.run_id, r.benchmark, r.regularizer, r.phase, r.seed), curve(r))
    if with_config:
        RunRecord.new(config()).save(folder)
    return folder
