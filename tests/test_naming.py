"""bench.naming's registries: decorator registrations and entry-point plug-ins (a real distribution
on sys.path, found by importlib.metadata as after a pip install)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.naming import Registry
from tests.plugins import install_distribution


class LookupFailed(ValueError):
    pass


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("naming_plugin")]:
        del sys.modules[name]


def test_entry_points_register_on_first_lookup(site: Path) -> None:
    install_distribution(
        site,
        "naming_plugin_ok",
        "def square(x):\n    return x * x\n",
        {"test.things": {"square": "naming_plugin_ok:square"}},
    )
    things: Registry = Registry("thing", LookupFailed, "test.things")
    things.register("double")(lambda x: 2 * x)
    assert things.names() == ["double", "square"]
    assert things.get("square")(3) == 9
    with pytest.raises(LookupFailed, match="unknown thing 'squar'.*did you mean 'square'"):
        things.get("squar")


def test_a_plugin_that_fails_to_load_is_one_line_naming_it(site: Path) -> None:
    install_distribution(
        site,
        "naming_plugin_bad",
        "raise ImportError('no torch here')\n",
        {"test.broken": {"bad": "naming_plugin_bad:thing"}},
    )
    broken: Registry = Registry("thing", LookupFailed, "test.broken")
    with pytest.raises(LookupFailed) as caught:
        broken.names()
    assert str(caught.value) == (
        "thing plugin 'bad' (naming_plugin_bad:thing) failed to load: ImportError: no torch here"
    )
    with pytest.raises(LookupFailed):  # not marked loaded: it raises again, never a registry silently short
        broken.get("bad")


def test_a_name_taken_twice_is_refused() -> None:
    things: Registry = Registry("thing", LookupFailed)
    things.register("one")(len)
    things.register("one")(len)  # the same object again (a plug-in that registered itself): fine
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        things.register("one")(max)
