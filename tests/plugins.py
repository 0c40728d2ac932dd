"""Plug-ins for tests: a real distribution (a module and its dist-info with entry points) written
into a folder that is then put on sys.path or PYTHONPATH, so importlib.metadata finds its entry
points exactly as after a ``pip install``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path


def install_distribution(site: Path, module: str, source: str, entry_points: Mapping[str, Mapping[str, str]]) -> Path:
    """Write ``module.py`` (``source``, dedented) and its dist-info into ``site``; ``entry_points``
    maps each group (e.g. ``sharpbench.regularizers``) to ``{name: "module:attribute"}``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    sections = [
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
        for group, entries in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    return site


def env_with_site(site: Path) -> dict[str, str]:
    """This process's environment with ``site`` first on PYTHONPATH (a child process, Ray workers included)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
