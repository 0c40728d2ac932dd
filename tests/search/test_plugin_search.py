"""A third-party method, dataset and model, installed as one distribution with entry points in
`sharpbench.regularizers`, `sharpbench.datasets` and `sharpbench.models`, run in a real search:
discovered by the CLI, the config validation and the Ray workers alike."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from bench.results.parquet import read_rows
from tests.plugins import env_with_site, install_distribution
from tests.runner import sharpbench_command

pytestmark = pytest.mark.slow

PLUGIN_MODULE = '''
"""A tiny plugin: ERM with its gradient scaled by a factor (a stand-in for a real method)."""
from dataclasses import dataclass

import torch

from regularizers import BatchClosure, Float, PassCost, Regularizer, StepReport, hparam


@dataclass
class ScaledGradient(Regularizer):
    """g = scale * grad L(w)."""

    gradient_scale: float = hparam(1.0, Float(0.5, 2.0, log=True), "factor applied to the gradient")

    def step(self, closure: BatchClosure) -> StepReport:
        clean = closure(update_bn=True)
        with torch.no_grad():
            for p in closure.parameters:
                if p.grad is not None:
                    p.grad.mul_(self.gradient_scale)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm: bool) -> PassCost:
        return PassCost(forward=1, backward=1)


def blobs(config):
    """Three Gaussian blobs in 16 dimensions, as 1×4×4 images: a dataset no package ships."""
    from bench.data import Dataset, TensorSplit

    generator = torch.Generator().manual_seed(config.split_seed)
    centers = torch.randn(3, 1, 4, 4, generator=generator) * 3

    def split(n):
        labels = torch.arange(n) % 3
        return TensorSplit(centers[labels] + torch.randn(n, 1, 4, 4, generator=generator), labels)

    return Dataset("blobs", split(120), split(30), split(30), num_classes=3)


def tiny_linear(input_shape, num_classes, bias=True):
    """Logits from a linear map of the flattened input."""
    channels, height, width = input_shape
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * height * width, num_classes, bias=bias))
'''


def _install_plugin(root: Path) -> None:
    """A real distribution on sys.path: importlib.metadata finds its entry points like a pip install."""
    install_distribution(
        root,
        "scaled_plugin",
        PLUGIN_MODULE,
        {
            "sharpbench.regularizers": {"scaled_gradient": "scaled_plugin:ScaledGradient"},
            "sharpbench.datasets": {"blobs": "scaled_plugin:blobs"},
            "sharpbench.models": {"tiny_linear": "scaled_plugin:tiny_linear"},
        },
    )


def test_entry_point_plugin_runs_in_a_search(tmp_path, repo_root):
    plugin_root = tmp_path / "site"
    plugin_root.mkdir()
    _install_plugin(plugin_root)
    config = {
        "benchmark": "plugin",
        "dataset": {"name": "blobs"},
        "model": {"name": "tiny_linear", "options": {"bias": False}},
        "training": {"epochs": 2, "batch_size": 50},
        "search": {"trials_per_method": 2, "asha": {"enabled": False}},
        "regularizers": ["scaled_gradient"],
    }
    config_path = tmp_path / "plugin.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = env_with_site(plugin_root)

    listed = subprocess.run(
        sharpbench_command("list", "--format", "json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '"scaled_gradient"' in listed.stdout and '"gradient_scale"' in listed.stdout

    results = tmp_path / "results"
    done = subprocess.run(
        sharpbench_command("run", str(config_path), "--results", str(results), "--num-cpus", "2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        cwd=repo_root,
    )
    assert done.returncode == 0, textwrap.shorten(done.stdout[-2000:] + done.stderr[-2000:], 4000)
    table = read_rows(results)
    assert table.num_rows == 2
    assert set(table.column("regularizer").to_pylist()) == {"scaled_gradient"}
    assert set(table.column("dataset").to_pylist()) == {"blobs"} and set(table.column("model").to_pylist()) == {
        "tiny_linear"
    }
    assert set(table.column("status").to_pylist()) == {"completed"}
    # three well separated blobs: a linear model learns them
    assert max(table.column("val_accuracy").to_pylist()) > 0.6
    scales = [yaml.safe_load(h)["gradient_scale"] for h in table.column("regularizer_hparams").to_pylist()]
    assert all(0.5 <= s <= 2.0 for s in scales)
