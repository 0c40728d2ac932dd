"""Where a result came from: package versions, hardware, git commit, time."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is described: `sharpbench --version` needs none
    import torch

#: Distributions whose versions every row records.
TRACKED_PACKAGES = ("sharpbench", "torch", "torchvision", "ray", "optuna", "mlflow", "pyarrow", "numpy", "scikit-learn")


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def package_versions_json() -> str:
    return json.dumps(package_versions(), sort_keys=True)


def hardware(device: torch.device) -> str:
    """A short description: the GPU name on CUDA, the CPU model and core count otherwise."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (macOS, containers without it): fall back to what platform knows
    return platform.processor() or platform.machine()


@functools.cache
def git_commit(start: str | None = None) -> str | None:
    """The commit of the sharpbench checkout (``None`` when not run from a git checkout).

    A dirty work tree gets a ``-dirty`` suffix: the row then does not match the commit exactly.
    """
    root = Path(start) if start else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
