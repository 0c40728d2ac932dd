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

    @property
    def exit_status(self) -> int:
        return TERMINATED_EXIT_STATUS if self.received else INTERRUPTED_EXIT_STATUS

    @property
    def verb(self) -> str:
        return "terminated (SIGTERM)" if self.received else "interrupted"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[Termination]:
    """While active, SIGTERM acts as SIGINT (Ctrl-C). Main thread only (Python's rule for handlers)."""
    termination = Termination()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        termination.received = True
        signal.raise_signal(signal.SIGINT)  # Tune's handler, or KeyboardInterrupt outside its loop

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
