"""The one-time warm-up of a worker process (torch._dynamo import, dataset load) is the trial's
``compile_s``, kept out of its wall time: two identical trials in one worker cost alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.results.parquet import read_rows
from tests.runner import sharpbench

pytestmark = pytest.mark.slow


def test_first_trial_in_a_worker_carries_the_warm_up_in_compile_s(tmp_path: Path, repo_root: Path) -> None:
    config = {
        "benchmark": "warm",
        "dataset": {"name": "digits", "max_train_samples": 400},
        "model": {"name": "mlp", "options": {"hidden": 32, "depth": 1}},
        "training": {"epochs": 3, "batch_size": 50},
        # nothing searched: both trials run the same config, one after the other in one worker
        "search": {"trials_per_method": 2, "asha": {"enabled": False}, "space": {"learning_rate": {"choices": [0.05]}}},
        "resources": {"cpus_per_trial": 1},
        "regularizers": ["erm"],
    }
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    done = sharpbench("run", str(path), "--results", str(results), "--num-cpus", "1", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = sorted(read_rows(results).to_pylist(), key=lambda r: r["started_at"])
    assert [r["status"] for r in rows] == ["completed", "completed"]
    first, second = rows
    assert first["node"] == second["node"]
    assert first["compile_s"] > 0.05, first["compile_s"]  # dataset load + torch._dynamo import
    assert second["compile_s"] == pytest.approx(0.0, abs=0.05), second["compile_s"]  # warmed already
    # The warm-up is in neither trial's clock: the first trial's wall time exceeds the second's by far
    # less than its warm-up (trials of tens of ms: their ratio is noise on a loaded machine).
    extra = first["wall_seconds"] - second["wall_seconds"]
    assert extra < max(first["compile_s"] / 2, 0.2), (first["wall_seconds"], second["wall_seconds"], first["compile_s"])
    assert first["forward_passes"] == second["forward_passes"]
