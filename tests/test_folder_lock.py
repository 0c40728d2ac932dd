"""The results folder's lock, and a suite handing it to the runs of its benchmarks (real processes, real flock)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bench.run_record import HELD_LOCK_FD, FolderLock

# A child process that takes the folder's lock and says whether it got it.
_TAKE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bench.run_record import FolderBusy, FolderLock
    try:
        with FolderLock(Path(sys.argv[1])):
            print("held")
    except FolderBusy as busy:
        print("busy:", busy)
    """
)


def _take(folder, env_fd=None, pass_fds=()):
    env = {key: value for key, value in os.environ.items() if key != HELD_LOCK_FD}
    if env_fd is not None:
        env[HELD_LOCK_FD] = str(env_fd)
    done = subprocess.run(
        [sys.executable, "-c", _TAKE, str(folder)], env=env, pass_fds=pass_fds, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_held_folder_is_busy_for_every_other_process(tmp_path):
    with FolderLock(tmp_path):
        assert _take(tmp_path).startswith(f"busy: {tmp_path} is in use by another sharpbench run (pid {os.getpid()}")
    assert _take(tmp_path) == "held"  # released on exit


def test_a_suites_benchmarks_share_its_lock_and_do_not_release_it(tmp_path):
    with FolderLock(tmp_path) as lock:
        fd = lock.descriptor()
        assert _take(tmp_path, env_fd=fd, pass_fds=(fd,)) == "held"  # the suite's child: the same open file
        assert _take(tmp_path, env_fd=fd, pass_fds=(fd,)) == "held"  # and the next one (the first did not unlock)
        assert _take(tmp_path).startswith("busy:")  # anyone else: still locked
        # the variable alone is not the lock: a descriptor not passed, or of another file, is refused
        assert _take(tmp_path, env_fd=fd).startswith("busy:")
        other = tmp_path / "other"
        other.mkdir()
        with FolderLock(other) as foreign:
            handed = foreign.descriptor()
            assert _take(tmp_path, env_fd=handed, pass_fds=(handed,)).startswith("busy:")
    assert _take(tmp_path) == "held"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_suites_benchmark_dies_with_the_suite_on_kill_9(tmp_path):
    # parent: starts a child that asks to die with it, prints the child's pid, then waits to be killed
    child = (
        "import os, sys, time; from bench.signals import die_with_parent; die_with_parent(os.getppid()); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); print(p.pid, flush=True); time.sleep(60)"
    )
    suite = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(suite.stdout.readline())
    import time

    time.sleep(1.0)  # the child has made its request
    os.kill(pid, 0)  # alive while its parent lives
    suite.kill()
    suite.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:  # a zombie of init still answers kill 0: read its state
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {pid} outlived its killed parent by 10 s")
