"""One background thread that runs a sink's calls in order, off the caller's critical path.

Ray Tune's trials wait for the driver's callbacks after every report: an MLflow write there
(creating a run ~0.2 s on SQLite, an epoch batch ~5 ms, seconds against a slow server) is paid
by every running trial. :class:`BackgroundWriter` takes those calls instead, in submission order,
on one thread (an MLflow client and its SQLite connection are used from that one thread only).

The queue is **bounded** (:data:`QUEUE_SIZE` calls): when the store falls that far behind, the
caller blocks in :meth:`BackgroundWriter.submit` until there is room (back-pressure), so a
dead-slow store slows the run instead of growing memory without limit. :meth:`BackgroundWriter.stop`
**drains** the queue and joins the thread: the run calls it when it ends, normally, after Ctrl-C or
after SIGTERM (which :mod:`bench.signals` turns into Ctrl-C); nothing queued is dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

_R = TypeVar("_R")

#: Calls the queue holds before :meth:`BackgroundWriter.submit` blocks. A trial queues one call
#: when it starts, one per report and one when it ends, so 256 is minutes of a busy run's writes:
#: reached only when the store itself is slower than the trials.
QUEUE_SIZE = 256

_STOP = object()  # the sentinel that ends the thread after every call queued before it


class WriterStopped(RuntimeError):
    """A call submitted after :meth:`BackgroundWriter.stop`."""


class BackgroundWriter:
    """Runs submitted calls one at a time, in order, on a daemon thread named ``name``.

    A call's result or exception is its :class:`~concurrent.futures.Future`'s; the writer itself
    never stops on an exception (the caller decides what a failed write means).
    """

    def __init__(self, name: str, max_queued: int = QUEUE_SIZE) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self.max_queued = max_queued
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queued)
        self._stopped = False
        self._lock = threading.Lock()  # submit and stop from several threads keep the sentinel last
        # A daemon: a driver that dies without stop() must still exit; stop() joins it otherwise.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], _R]) -> Future[_R]:
        """Queue ``call``; blocks while :data:`QUEUE_SIZE` calls wait (back-pressure)."""
        future: Future[_R] = Future()
        with self._lock:
            if self._stopped:
                raise WriterStopped("the background writer was stopped")
            self._queue.put((call, future))
        return future

    @property
    def queued(self) -> int:
        """Calls waiting (not counting the one running)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Run every call queued so far, then end the thread (idempotent)."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            call, future = item  # type: ignore[misc]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as error:  # handed to the caller through its future, not lost
                future.set_exception(error)


__all__ = ["QUEUE_SIZE", "BackgroundWriter", "WriterStopped"]
