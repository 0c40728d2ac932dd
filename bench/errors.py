"""The one formatter for user-facing errors: an exception's first line, and "did you mean".

Every message a user reads as one line (a CLI error, a failed trial's reason, a refused
plug-in) is built from these two, so the wording is the same wherever a name is unknown or an
exception is shown. Standard library only: :mod:`regularizers` uses it too, and sits below bench.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an exception's message (or of a text), stripped; the
    exception's type name when the message is empty."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0].strip()


def printable(text: object) -> str:
    """A value from outside (a path from a config) as a one-line message shows it: as it is, or
    quoted as a Python literal when it holds a character that would break the line or the
    terminal (a newline, a control character)."""
    shown = str(text)
    return shown if shown.isprintable() else repr(shown)


def described(error: BaseException) -> str:
    """``Type: first line``, for an exception raised by code the user did not write (a plug-in)."""
    line = first_line(error)
    return type(error).__name__ if line == type(error).__name__ else f"{type(error).__name__}: {line}"


def unknown_name(kind: str, name: str, choices: Iterable[str], *, compared: str | None = None) -> str:
    """One line: ``unknown model 'cnnn' (did you mean 'cnn'?); valid: cnn, mlp``. ``compared`` is
    the part of ``name`` to match against ``choices`` (the last key of a dotted config path)."""
    valid = sorted(choices)
    wanted = (compared or name).strip()
    # Names are case-sensitive: 'SAM' is 'sam' in the wrong case, which difflib does not see.
    same_but_case = [choice for choice in valid if choice.lower() == wanted.lower()]
    close = same_but_case or difflib.get_close_matches(wanted, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}"


class BadInput(ValueError):
    """Input refused before anything started or was written (a config, a name, a folder, an
    option): the message is one line; the command line exits with status 2."""


class RunStopped(RuntimeError):
    """A run that ended before its work was done but is saved (interrupted, SIGTERM, a full
    disk, a locked store, broken infrastructure): ``str()`` is the one line to show, which says
    how to resume; ``exit_status`` is the command line's (130, 143 or 1)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status
