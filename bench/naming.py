"""Name → object registries for bench (datasets, models), with did-you-mean errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One line: ``unknown model 'cnnn' (did you mean 'cnn'?); valid: cnn, mlp``."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(sorted(choices))}"


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
            raise self.error(unknown_name_message(self.kind, name, self.names())) from None
