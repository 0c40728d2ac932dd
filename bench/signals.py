"""SIGTERM stops a run as Ctrl-C does: cleanly, saved, with the resume line, exit status 143.

SIGTERM is what Slurm, Kubernetes and cluster autoscalers send before they kill a job. Ray's
``ray.init`` installs its own handlers in the driver (a native one that printed a stack dump and
ended the run with exit 1 or 134, without the resume line and without Tune saving its state).
:func:`terminate_as_interrupt`, entered after ``ray.init``, replaces them: a SIGTERM is turned
into the SIGINT that Ray Tune already handles (it stops the trials and saves the experiment;
outside Tune's loop Python raises KeyboardInterrupt), and remembers that it came, so the caller
exits with 128 + 15 as a terminated process would.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

#: Exit status after SIGTERM (128 + signal number, the shell's convention); after Ctrl-C: 130.
TERMINATED_EXIT_STATUS = 128 + signal.SIGTERM
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT


@dataclass
class Termination:
    """Whether a SIGTERM came while :func:`terminate_as_interrupt` was active."""

    received: bool = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        signal.raise_signal(signal.SIGINT)  # Tune's handler, or KeyboardInterrupt outside its loop

    def reinstall(self) -> None:
        """Take SIGTERM back after a library replaced the handler."""
        signal.signal(signal.SIGTERM, self.on_sigterm)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """SIGTERM held (blocked) while Ray starts or shuts down, then taken back and released: a
        SIGTERM meanwhile is handled here afterwards. ``ray.init`` installs Ray's handlers
        (``sys.exit(15)``, and a native one that dumps a stack and aborts); the teardown in
        ``ray.shutdown`` leaves the default action (the process was killed silently, -15)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            yield
        finally:
            self.reinstall()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    @property
    def exit_status(self) -> int:
        return TERMINATED_EXIT_STATUS if self.received else INTERRUPTED_EXIT_STATUS

    @property
    def verb(self) -> str:
        return "terminated (SIGTERM)" if self.received else "interrupted"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[Termination]:
    """While active, SIGTERM acts as SIGINT (Ctrl-C). Main thread only (Python's rule for handlers).
    A SIGTERM that arrives while Ray's own handler is in place (inside ``ray.init``) exits through
    ``SystemExit(15)``; the caller treats that as a termination too (:meth:`Termination.reinstall`
    takes the signal back after ``ray.init`` and ``ray.shutdown``)."""
    termination = Termination()
    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


#: Environment variable naming the process id of the suite that started this run (:mod:`bench.suite`).
SUITE_PARENT = "SHARPBENCH_SUITE_PARENT"
#: ... and the command that resumes that suite (a benchmark's own resume line would name the
#: suite's Ray runtime, gone once the suite stops).
SUITE_RESUME = "SHARPBENCH_SUITE_RESUME"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
    suite killed with kill -9 takes its benchmarks' runs with it, as one run's trials die with it.
    ``parent`` is the pid this process was started by: if it is already gone (it died before the
    request), this process kills itself. False where the call does not exist (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return True
