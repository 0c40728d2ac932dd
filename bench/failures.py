"""Why a trial failed, said one way everywhere: a class (:class:`FailureClass`) and a one-line text.

The class decides what the search does with the failure: a divergence is the method's own result
(never retried, counted), an infrastructure fault is nobody's (retried, and when it still fails
the method gets a replacement trial), an OOM or another error is counted as a failure. Ray-free
and torch-free at import: exceptions are recognised by their class names along the MRO, so the
driver, the CLI and the row builder share this module without importing Ray or torch for it.
"""

from __future__ import annotations

import errno
import re
from enum import Enum
from pathlib import Path
from typing import Any

from bench.errors import first_line


class FailureClass(str, Enum):
    """Why a ``failed`` trial failed (:func:`classify`); decides what the search does with it.
    The row's ``failure_class`` column (:mod:`bench.results.schema`)."""

    DIVERGED = "diverged"  # the training loss became non-finite: the method's own result, never retried
    OOM = "oom"  # out of memory (torch, Ray's OOM kill, MemoryError): ``error`` keeps the memory figures
    INFRA = "infra"  # the worker, actor or node died, or the disk filled: retried; not counted against the budget
    ERROR = "error"  # anything else


#: Longest error text kept (MLflow's tag limit is 8000 characters; a row needs no more).
MAX_ERROR_CHARS = 2000

# Exception class names (anywhere in the MRO) of each class. Ray's and torch's OOM errors are
# both named OutOfMemoryError; ray.exceptions.ActorDiedError and ActorUnavailableError are
# RayActorError subclasses.
_OOM_TYPES = frozenset({"OutOfMemoryError", "MemoryError"})
_INFRA_TYPES = frozenset(
    {"RayActorError", "WorkerCrashedError", "NodeDiedError", "ActorDiedError", "ActorUnavailableError"}
)
_DIVERGED_TYPES = frozenset({"Diverged"})
# Ray's OOM kill reaches Tune as an actor death whose text carries the raylet's message; its
# first line is generic ("Task was killed due to the node running low on memory."), the figures
# are in the sentence "Memory on the node (IP: ..., ID: ...) ... was running was 32.62GB / 33.28GB
# (0.98), which exceeds the memory usage threshold of 0.96." (ray: src/ray/raylet/node_manager.cc).
_RAY_OOM_FIGURES = re.compile(r"Memory on the node\b.*?memory usage threshold of [0-9]+(?:\.[0-9]+)?", re.DOTALL)
_RAY_OOM_MARKERS = ("running low on memory", "Memory on the node")
# torch's CUDA OOM text is one long line: the figures, then advice ("If reserved but
# unallocated memory is large ...", "See documentation ..."), which says nothing about this trial.
_TORCH_OOM_ADVICE = re.compile(r"\s+(If reserved but unallocated|See documentation for Memory Management).*", re.DOTALL)
_INFRA_MARKERS = ("worker died", "The actor died", "node died", "NodeDiedError", "WorkerCrashedError", "ActorDiedError")


class InfrastructureBroken(RuntimeError):
    """Trials keep failing for the machine's reasons (a full disk, a node that keeps dying): the
    run stops rather than replace them for ever; its message is one line."""


def _root(error: BaseException) -> BaseException:
    """The exception a trial raised: Ray wraps it in a RayTaskError whose ``cause`` it is."""
    seen = 0
    while seen < 8 and "RayTaskError" in _names(error) and isinstance(getattr(error, "cause", None), BaseException):
        error, seen = error.cause, seen + 1
    return error


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


#: errno values and texts (SQLite's, and Ray's re-raised strings) of a full disk or quota.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_MARKERS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and everything it wraps: causes, contexts and Ray's task-error ``cause``, each once."""
    seen: list[BaseException] = []
    stack: list[object] = [error]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseException) and all(current is not s for s in seen):
            seen.append(current)
            stack += [getattr(current, "cause", None), current.__context__, current.__cause__]
    return seen


def disk_full(error: BaseException) -> bool:
    """Whether ``error``, or anything it wraps, says the disk (or the user's quota) is full."""
    return any(
        getattr(e, "errno", None) in _DISK_FULL_ERRNOS or any(m in str(e) for m in _DISK_FULL_MARKERS)
        for e in exception_chain(error)
    )


def classify(error: BaseException) -> FailureClass:
    """The failure class of an exception a trial ended with (Ray's wrappers looked through). A
    full disk is the machine's fault, not the method's: ``infra`` (retried, not counted)."""
    root = _root(error)
    if disk_full(root):
        return FailureClass.INFRA
    names, text = _names(root), str(root)
    if names & _OOM_TYPES or any(marker in text for marker in _RAY_OOM_MARKERS):
        return FailureClass.OOM
    if names & _INFRA_TYPES or "worker died" in text.lower():
        return FailureClass.INFRA
    if names & _DIVERGED_TYPES:
        return FailureClass.DIVERGED
    return FailureClass.ERROR


def error_text(error: BaseException) -> str:
    """The row's ``error``: ``<Type>: <first line>`` of the exception a trial raised; for an OOM
    the memory figures instead of a generic first line (Ray's OOM kill), or without the advice
    that follows them (torch's CUDA OOM)."""
    root = _root(error)
    name, text = type(root).__name__, str(root).strip()
    if classify(root) is FailureClass.OOM:
        figures = _RAY_OOM_FIGURES.search(text)
        if figures is not None:
            line = " ".join(figures.group(0).split()) + "."
        else:
            line = _TORCH_OOM_ADVICE.sub("", first_line(root)).strip()
        return f"{name}: {line}"[:MAX_ERROR_CHARS]
    if _names(root) & _DIVERGED_TYPES:  # its message already says "diverged: ..."
        return first_line(root)[:MAX_ERROR_CHARS]
    return f"{name}: {first_line(root)}"[:MAX_ERROR_CHARS]


def classify_text(text: str) -> FailureClass:
    """The class of a failure known only by its text (a Tune error file, an old row's error)."""
    if any(marker in text for marker in _RAY_OOM_MARKERS) or "OutOfMemoryError" in text or "MemoryError" in text:
        return FailureClass.OOM
    if any(marker.lower() in text.lower() for marker in _INFRA_MARKERS) or "RayActorError" in text:
        return FailureClass.INFRA
    if text.startswith("diverged:"):
        return FailureClass.DIVERGED
    return FailureClass.ERROR


def trial_failure(trial: Any) -> tuple[FailureClass, str]:
    """How a Tune trial that raised failed: its class and its error text.

    From the exception Tune pickled in the trial's local folder (written by ``Trial.handle_error``
    before the searcher and the callbacks hear of the failure), else from the text of its error
    file (the last traceback line), else a placeholder saying so."""
    try:
        pickled = getattr(trial, "pickled_error_file", None)
        if pickled:
            if Path(pickled).is_file():
                import cloudpickle  # Ray's dependency: only the driver reads pickled errors

                with open(pickled, "rb") as file:
                    error = cloudpickle.load(file)
                if isinstance(error, BaseException):
                    return classify(error), error_text(error)
        text = None
        if trial.error_file:
            if Path(trial.error_file).is_file():
                text = Path(trial.error_file).read_text()
        if text is None and (error := trial.get_error()) is not None:
            text = str(error)
    except Exception as lookup_error:  # the reason itself could not be read: say so
        return FailureClass.ERROR, f"error text unavailable ({type(lookup_error).__name__}: {first_line(lookup_error)})"
    if text is None:
        return FailureClass.ERROR, "failed without an error message"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # An error file holds "Failure # n (occurred at ...)" and the traceback: its last line names the exception.
    return classify_text(text), (lines[-1] if lines else "empty error message")[:MAX_ERROR_CHARS]
