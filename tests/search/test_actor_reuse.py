"""Ray Tune reuses one worker process for trial after trial (``reuse_actors=True``): the trials of
a search run in one process, and each still trains exactly as it would alone, from its own seed,
its own hyperparameters and a fresh dataset."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from bench.config import parse_config
from bench.data import load_dataset
from bench.results.parquet import read_rows
from bench.search.driver import TUNE_RESULT_LOG_VARIABLE
from bench.training import Trainer, TrialSpec
from tests.runner import sharpbench

pytestmark = pytest.mark.slow


def _tune_results(results) -> list[dict]:
    """Every result Tune recorded (its own result.json per trial), all phases."""
    return [
        json.loads(line) for path in (results / "ray").rglob("result.json") for line in path.read_text().splitlines()
    ]


def _worker_pids(results) -> dict[str, set[int]]:
    """Tune trial id → the worker process ids its results came from."""
    pids: dict[str, set[int]] = {}
    for result in _tune_results(results):
        pids.setdefault(result["trial_id"], set()).add(int(result["pid"]))
    return pids


def test_trials_in_one_reused_worker_train_as_they_would_alone(tmp_path, repo_root):
    raw = {
        "benchmark": "reuse",
        # Label noise and a subset: the dataset's own seeded draws are part of what is compared.
        "dataset": {"name": "digits", "max_train_samples": 300, "label_noise": 0.2},
        "model": {"name": "cnn", "options": {"width": 4}},
        "training": {"epochs": 3, "batch_size": 50},
        # Different learning rates, searched; ASHA off so every trial runs every epoch. A final
        # phase with two seeds: trials that differ only in their seed, run in the same worker.
        "search": {
            "trials_per_method": 3,
            "asha": {"enabled": False},
            "checkpoint_every": 2,
            "space": {"learning_rate": {"low": 0.01, "high": 0.2, "log": True}},
        },
        "final": {"seeds": [1, 2]},
        "regularizers": ["sam"],  # its perturbation is built from the weights: any leak shows
    }
    config_path = tmp_path / "reuse.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    # One CPU: one trial at a time, so a reused actor runs every trial of a phase.
    done = sharpbench(
        "run",
        str(config_path),
        "--results",
        str(results),
        "--num-cpus",
        "1",
        cwd=repo_root,
        env={**os.environ, TUNE_RESULT_LOG_VARIABLE: "1"},  # Tune's result.json: each report's worker pid
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    rows = read_rows(results).to_pylist()
    assert sorted(row["phase"] for row in rows) == ["final"] * 2 + ["search"] * 3
    assert all(row["status"] == "completed" for row in rows)

    # checkpoint_every: 2 asks for one at epoch 2 of every trial, but none comes sooner than
    # bench.search.trainable.MIN_CHECKPOINT_SECONDS (2 s) after the trial's start (these trials take ~0.2 s).
    checkpointed = [r for r in _tune_results(results) if r.get("checkpoint_dir_name")]
    assert all(r["wall_seconds"] >= 2.0 for r in checkpointed), [(r["epoch"], r["wall_seconds"]) for r in checkpointed]

    pids = _worker_pids(results)
    assert len(pids) == 5 and all(len(p) == 1 for p in pids.values())
    for phase in ("search", "final"):
        trial_ids = [row["run_id"].rsplit("/", 1)[1] for row in rows if row["phase"] == phase]
        # Reused: every trial of the phase reported from one and the same worker process.
        assert len(set().union(*(pids[t] for t in trial_ids))) == 1, (phase, pids)

    # Each trial again, alone, in this process: a fresh Trainer from a fresh load. One thread,
    # as the Ray trial had (cpus_per_trial: 1), so both sum in the same order.
    config = parse_config(raw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for row in rows:
            spec = TrialSpec.from_row(config, row)
            trainer = Trainer(spec, dataset=load_dataset(config.dataset))
            while not trainer.finished:
                epoch = trainer.train_epoch()
            test = trainer.test()
            # The same seeded computation on one machine, but in two processes whose math
            # libraries may pick different kernels: allow float32 rounding grown over 3 epochs of
            # ~20 steps (rel. 1e-4). A leaked RNG state, data order or weight would move these by
            # percent, and the step counts not at all.
            assert row["forward_passes"] == trainer.forward_passes and row["backward_passes"] == trainer.backward_passes
            assert row["train_loss"] == pytest.approx(epoch.train_loss, rel=1e-4), row["run_id"]
            assert row["val_loss"] == pytest.approx(epoch.val_loss, rel=1e-4), row["run_id"]
            assert row["test_loss"] == pytest.approx(test.test_loss, rel=1e-4), row["run_id"]
    finally:
        torch.set_num_threads(threads)
    # The seeds did differ: the two final runs are not copies of each other.
    finals = [row for row in rows if row["phase"] == "final"]
    assert finals[0]["seed"] != finals[1]["seed"]
    assert finals[0]["train_loss"] != pytest.approx(finals[1]["train_loss"], rel=1e-3)
