"""Dataset and model plug-ins through their entry points (``sharpbench.datasets``,
``sharpbench.models``): a real distribution on PYTHONPATH, found by importlib.metadata as after a
``pip install``, in a fresh process. The dataset is a streamed one (a ``StreamSplit`` with its own
sample reader), so a plug-in can bring data that does not fit in memory too.
(``tests/search/test_plugin_search.py`` runs a tensor plug-in through a whole search.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.plugins import env_with_site, install_distribution

PLUGIN = '''
"""Squares: sample k is a 1×4×4 image of the value k mod 3, read when a batch needs it."""
import torch

from bench.data import Dataset
from bench.data.stream import StreamSplit


class Squares:
    def __call__(self, item, train):
        image = torch.full((1, 4, 4), float(item % 3))
        return image + 0.3 * torch.randn(1, 4, 4) if train else image  # noise: seeded per sample


def squares(config):
    def split(count, first):
        items = torch.arange(first, first + count)
        return StreamSplit(Squares(), items, items % 3, (1, 4, 4), workers=config.loader_workers)

    return Dataset("squares", split(30, 0), split(9, 30), split(9, 39), num_classes=3)


def tiny_linear(input_shape, num_classes, bias=True):
    channels, height, width = input_shape
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * height * width, num_classes, bias=bias))
'''

CHILD = """
import json

from bench.catalog import check_registered
from bench.config import DataConfig, ModelConfig, TrainingConfig, parse_config
from bench.data import available_datasets, load_dataset
from bench.models import available_models
from bench.training import TrialSpec, run_trial

config = parse_config({
    "benchmark": "plugged",
    "dataset": {"name": "squares", "loader_workers": 1, "max_train_samples": 24, "label_noise": 0.25},
    "model": {"name": "tiny_linear", "options": {"bias": False}},
    "training": {"epochs": 2, "batch_size": 8, "device": "cpu"},
    "regularizers": ["sam"],
})
check_registered(config, "plugged.yaml")  # the names and the model's options, as a run checks them
dataset = load_dataset(config.dataset)
spec = TrialSpec("plugged", config.dataset, config.model, config.training, "sam", seed=0)
runs = [run_trial(spec) for _ in range(2)]
print(json.dumps({
    "datasets": available_datasets(),
    "models": available_models(),
    "train": len(dataset.train),
    "flipped": int((dataset.train.targets != dataset.train.items % 3).sum()),
    "losses": [[e.train_loss, e.val_accuracy] for e in runs[0].epochs],
    "again": [[e.train_loss, e.val_accuracy] for e in runs[1].epochs],
    "passes": runs[0].epochs[-1].forward_passes,
}))
"""


def test_a_streamed_dataset_and_a_model_from_an_installed_plugin_train(tmp_path: Path, repo_root: Path) -> None:
    site = install_distribution(
        tmp_path / "site",
        "squares_plugin",
        PLUGIN,
        {
            "sharpbench.datasets": {"squares": "squares_plugin:squares"},
            "sharpbench.models": {"tiny_linear": "squares_plugin:tiny_linear"},
        },
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD)],
        cwd=repo_root,
        env=env_with_site(site),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "squares" in report["datasets"] and "image_folder" in report["datasets"]
    assert "tiny_linear" in report["models"] and "cnn" in report["models"]
    assert report["train"] == 24 and report["flipped"] == 6  # max_train_samples and label_noise applied
    assert report["losses"] == report["again"]  # the seed fixes the streamed trial
    assert report["passes"] == 2 * 2 * 3  # SAM: 2 passes a step, 3 steps of 8 an epoch, 2 epochs
