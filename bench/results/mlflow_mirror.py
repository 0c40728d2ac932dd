"""MLflow is a mirror, Parquet the record: MLflow calls that may fail without stopping a run.

A tracking server that goes away mid-run must cost a bounded few seconds, once, and nothing else:
the Parquet row of every trial is written whatever MLflow does, the trial is never marked errored
because of MLflow, and the run's exit status does not change. :class:`MlflowMirror` wraps each
call of the driver's sink: the first failure tells the user once (through ``notify``) and marks
MLflow down for the rest of the run, so later calls are skipped instead of each waiting for
MLflow's HTTP retries. ``sharpbench sync-mlflow`` (:mod:`bench.sync`) back-fills
MLflow from Parquet afterwards.

One mirror per tracking URI and process (:func:`open_mirror`, :func:`mirror_for`): the CLI opens
it with its notifier before a run, the Tune callback on the driver finds it by URI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench.failures import error_text

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class MlflowOutage:
    """Why MLflow was given up on: the tracking URI, the call that failed, its error
    (``<Type>: <first line>``, :func:`bench.failures.error_text`)."""

    tracking_uri: str
    call: str
    error: str

    def describe(self) -> str:
        return f"MLflow at {self.tracking_uri} unreachable ({self.call}: {self.error})"


def _log_outage(outage: MlflowOutage) -> None:
    _log.warning("%s: going on without it; rows are in Parquet", outage.describe())


class MlflowMirror:
    """Runs MLflow calls for one tracking URI until one fails; then skips them all.

    ``notify`` receives the :class:`MlflowOutage` once, at the first failure (default: a
    ``logging`` warning). Only :class:`Exception` is caught (MLflow raises MlflowException,
    requests' and SQLAlchemy's errors, ...); KeyboardInterrupt and SystemExit pass through.
    """

    def __init__(self, tracking_uri: str, notify: Callable[[MlflowOutage], None] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.notify = notify or _log_outage
        self.outage: MlflowOutage | None = None

    @property
    def down(self) -> bool:
        return self.outage is not None

    def call(self, what: str, fn: Callable[[], _T]) -> _T | None:
        """``fn()``, or ``None`` when MLflow is down or ``fn`` raises (which marks it down).

        ``what`` names the call in the one message (e.g. ``"log epoch"``)."""
        if self.outage is not None:
            return None
        try:
            return fn()
        except Exception as error:  # any failure: MLflow is a mirror, the run must go on
            self.outage = MlflowOutage(self.tracking_uri, what, error_text(error))
            self.notify(self.outage)
            return None


_MIRRORS: dict[str, MlflowMirror] = {}


def open_mirror(tracking_uri: str, notify: Callable[[MlflowOutage], None] | None = None) -> MlflowMirror:
    """A fresh mirror for ``tracking_uri`` (MLflow up), registered for :func:`mirror_for`."""
    mirror = MlflowMirror(tracking_uri, notify)
    _MIRRORS[tracking_uri] = mirror
    return mirror


def mirror_for(tracking_uri: str) -> MlflowMirror:
    """The mirror :func:`open_mirror` registered for ``tracking_uri``, else a new one that logs."""
    mirror = _MIRRORS.get(tracking_uri)
    return mirror if mirror is not None else open_mirror(tracking_uri)


__all__ = ["MlflowMirror", "MlflowOutage", "mirror_for", "open_mirror"]
