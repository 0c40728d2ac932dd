"""Names: name → object registries for bench (datasets, models) with did-you-mean errors, and the
file names that benchmark and method names become."""

from __future__ import annotations

import importlib.metadata
import os
import re
import urllib.parse
from collections.abc import Callable
from typing import Generic, TypeVar

from bench.errors import described, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under stable names by a decorator, in the style of timm's ``register_model``,
    and by plug-ins: every entry point of the group ``entry_points`` (e.g. ``sharpbench.datasets``)
    is registered under its name, loaded on the first lookup, as regularizers' plug-ins are. A
    plug-in that fails to load raises (a benchmark silently missing a dataset is worse than an
    error); one that registered itself with the decorator on import is taken as it is."""

    def __init__(self, kind: str, error: type[ValueError], entry_points: str | None = None) -> None:
        self.kind = kind
        self.error = error
        self.entry_points = entry_points
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_points is None

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def load_plugins(self) -> None:
        """Register every entry point of the group (once; again after a failure)."""
        if self._plugins_loaded:
            return
        for entry_point in importlib.metadata.entry_points(group=self.entry_points):
            try:
                loaded = entry_point.load()
            except Exception as error:  # re-raised with the plug-in named, as one line
                raise self.error(
                    f"{self.kind} plugin {entry_point.name!r} ({entry_point.value}) failed to load: {described(error)}"
                ) from error
            if self._entries.get(entry_point.name) is not loaded:
                self.register(entry_point.name)(loaded)
        self._plugins_loaded = True

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        if name not in self._entries:
            self.load_plugins()
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
