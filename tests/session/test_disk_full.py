"""A full disk mid-run, on a real size-limited file system (a tmpfs the test mounts; root only):
the run stops with one line naming the folder and what was kept, and once space is freed the
same command resumes to exactly the planned trials."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bench.results.parquet import read_rows
from tests.runner import start_sharpbench

pytestmark = pytest.mark.slow

SPACE = {"learning_rate": {"low": 0.02, "high": 0.2, "log": True}}


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at ``tmp_path/disk``, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _run(config: Path, results: Path, repo_root: Path) -> subprocess.Popen:
    return start_sharpbench("run", str(config), "--results", str(results), "--num-cpus", "2", cwd=repo_root)


def _fill(disk: Path) -> Path:
    """Write zeros until the file system is full; returns the filler file."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(chunk)
                file.flush()
        except OSError:
            pass
    return filler


def test_full_disk_stops_with_one_line_and_the_resume_is_exact(tmp_path, small_disk, repo_root):
    config = tmp_path / "full.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "benchmark": "full",
                "dataset": {"name": "digits"},
                "model": {"name": "cnn", "options": {"width": 8}},
                "training": {"epochs": 30, "batch_size": 32, "learning_rate": 0.05},
                "search": {
                    "trials_per_method": 4,
                    "asha": {"enabled": False},
                    "checkpoint_every": 1,
                    "max_concurrent_trials": 2,
                    "space": SPACE,
                },
                "final": {"seeds": [1]},
                "regularizers": ["erm", "sam"],
            }
        )
    )
    results = small_disk / "results"
    first = _run(config, results, repo_root)
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline and read_rows(results).num_rows == 0:
        time.sleep(0.3)
    assert first.poll() is None, "the run ended before the disk could fill"
    filler = _fill(small_disk)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 1, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert f"the disk holding {results} is full" in lines[0] and "kept" in lines[0] and "Resume with:" in lines[0]
    # Ray logs each failed trial's traceback (as for any failed trial); sharpbench's own word is
    # one line, the last.
    assert [line for line in stderr.splitlines() if line.strip()][-1] == lines[0]
    kept = read_rows(results).num_rows
    assert kept >= 1

    filler.unlink()
    second = _run(config, results, repo_root)
    stdout, stderr = second.communicate(timeout=400)
    assert second.returncode == 0, stdout[-2000:] + stderr[-3000:]
    rows = read_rows(results).to_pylist()
    counted = Counter((r["regularizer"], r["phase"]) for r in rows if r["failure_class"] != "infra")
    assert counted == Counter({("erm", "search"): 4, ("sam", "search"): 4, ("erm", "final"): 1, ("sam", "final"): 1})
    assert all(r["status"] == "completed" for r in rows if r["failure_class"] != "infra")
