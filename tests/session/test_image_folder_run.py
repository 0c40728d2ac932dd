"""Fine-tuning on an image folder through the real CLI: ``sharpbench run`` on CPU, a real Ray
runtime, two methods, one trial each, one epoch; the folder (3 classes × 12 images) and the
checkpoint (the small ``cnn`` "pretrained" on 10 classes) are written by the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from bench.models import create_model
from bench.results.parquet import read_rows
from tests.image_folders import save_checkpoint, write_image_folder
from tests.runner import sharpbench

pytestmark = pytest.mark.slow


def test_fine_tuning_a_checkpoint_on_an_image_folder_writes_rows(tmp_path: Path, repo_root: Path) -> None:
    folder = write_image_folder(tmp_path / "images")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "cnn10.pt", create_model("cnn", (3, 16, 16), 10, width=8))
    config = {
        "benchmark": "folder_ft",
        "dataset": {
            "name": "image_folder",
            "data_dir": str(folder),
            "image_size": 16,
            "crop_padding": 2,
            "horizontal_flip": True,
            "loader_workers": 1,
        },
        "model": {"name": "cnn", "options": {"width": 8}, "pretrained": str(checkpoint)},
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.05},
        "search": {"trials_per_method": 1, "asha": {"enabled": False}},
        "flatness": {
            "when": "final",
            "subset_size": 16,
            "batch_size": 8,
            "eigen_max_iterations": 3,
            "trace_min_probes": 2,
            "trace_max_probes": 2,
            "trace_sketch_size": 1,
            "sharpness_steps": 1,
        },
        "resources": {"cpus_per_trial": 1},
        "regularizers": ["erm", "sam"],
    }
    path = tmp_path / "folder_ft.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    done = sharpbench("run", str(path), "--results", str(results), "--num-cpus", "2", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    notes = [line for line in done.stderr.splitlines() if line.startswith("note: model.pretrained")]
    assert notes == [
        f"note: model.pretrained {checkpoint}: the classifier head (10.weight, 10.bias) has another shape "
        "(10 classes there, 3 here): it is left out and trained from its fresh initialization"
    ], done.stderr
    rows = read_rows(results).to_pylist()
    assert sorted(row["regularizer"] for row in rows) == ["erm", "sam"]
    for row in rows:
        assert row["status"] == "completed", row["error"]
        assert (row["dataset"], row["model"], row["epochs_run"]) == ("image_folder", "cnn", 1)
        assert row["hessian_top_eigenvalue"] is not None and 0.0 <= row["test_accuracy"] <= 1.0
    passes = {row["regularizer"]: row["forward_passes"] for row in rows}
    assert passes == {"erm": 3, "sam": 6}  # 24 training images in batches of 8; SAM takes 2 passes a step
