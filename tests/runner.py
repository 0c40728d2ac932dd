"""One way for tests to run the real command line in a child process (no stdin, unbuffered)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def sharpbench_command(*args: str) -> list[str]:
    """``python -m bench.cli ARGS``, with this interpreter."""
    return [sys.executable, "-m", "bench.cli", *args]


def sharpbench(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``sharpbench ARGS`` to its end; stdout and stderr captured as text."""
    return subprocess.run(
        sharpbench_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
    )


def start_sharpbench(*args: str, cwd: Path | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start ``sharpbench ARGS`` in the background, stdout and stderr piped as text. ``new_session``:
    a process group of its own, so a kill -9 of the group takes Ray's processes too, as a killed job's would."""
    return subprocess.Popen(
        sharpbench_command(*args),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=new_session,
    )


def kill_session(sid: int) -> None:
    """SIGKILL, by id, every live process of session ``sid``: the killed driver's Ray processes
    (gcs, raylet, workers in process groups of their own) would otherwise train on for seconds."""
    for _ in range(50):
        alive = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(int(proc.name))
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"processes of the killed run still alive: {alive}")
