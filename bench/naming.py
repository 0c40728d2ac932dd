"""Names: name → object registries for bench (datasets, models) with did-you-mean errors, and the
file names that benchmark and method names become."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from typing import Generic, TypeVar

from bench.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under stable names by a decorator, in the style of timm's ``register_model``."""

    def __init__(self, kind: str, error: type[ValueError]) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(unknown_name(self.kind, name, self.names())) from None


#: Longest file or folder name most file systems allow (ext4, xfs, btrfs: 255 bytes).
NAME_MAX_BYTES = 255
#: The longest suffix a report figure adds after ``<benchmark>-<method>`` (bench.report.build).
FIGURE_SUFFIX = "-importance.png"
#: The run instance id's length (bench.run_record): ``superseded/<benchmark>-<instance>``.
INSTANCE_CHARS = 12


def file_safe(name: str) -> str:
    """A name for a figure file: every character but ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def partition_segment(value: str) -> str:
    """A folder name for a Parquet partition value: percent-encoded (no ``/``, ``=`` or ``%`` left),
    and a leading ``.`` or ``_`` encoded too, since pyarrow (hence pandas) skips such names."""
    quoted = urllib.parse.quote(value, safe="")
    if quoted[:1] in (".", "_"):
        quoted = f"%{ord(quoted[0]):02X}" + quoted[1:]
    return quoted


def built_file_names(benchmark: str, methods: list[str]) -> list[tuple[str, str]]:
    """``(where, name)`` of every file or folder name sharpbench builds from these names."""
    names = [
        ("leaderboard/<benchmark>/", partition_segment(benchmark)),
        ("runs/<benchmark>.json", f"{benchmark}.json"),
        ("ray/<benchmark>/", benchmark),
        ("superseded/<benchmark>-<instance>/", f"{benchmark}-{'0' * INSTANCE_CHARS}"),
    ]
    for method in methods:
        names.append((f"leaderboard/<benchmark>/<method {method[:40]!r}>/", partition_segment(method)))
        figure = f"{file_safe(benchmark)}-{file_safe(method)}{FIGURE_SUFFIX}"
        names.append(("figures/<benchmark>-<method>-importance.png", figure))
    return names


def name_limit(folder: str | os.PathLike[str]) -> int:
    """The longest name (bytes) the file system of ``folder`` (or its nearest existing parent) allows."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return min(NAME_MAX_BYTES, os.pathconf(path, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX_BYTES


def too_long_name(benchmark: str, methods: list[str], folder: str | os.PathLike[str]) -> str | None:
    """One line naming the longest built name over the file-system limit of ``folder``; None when all fit."""
    limit = name_limit(folder)
    where, name = max(built_file_names(benchmark, methods), key=lambda item: len(item[1].encode()))
    size = len(name.encode())
    if size <= limit:
        return None
    return (
        f"names too long for the file system: {where} would be a {size}-byte name, over the limit of {limit} bytes "
        f"per file name; shorten the benchmark or method name by {size - limit} bytes"
    )
