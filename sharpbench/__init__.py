"""sharpbench's Python API: ``sharpbench.run(config, results=...)`` runs a benchmark as
``sharpbench run`` does; ``sharpbench.leaderboard(results)``, ``sharpbench.rows(results)`` and
``sharpbench.curves(results)`` read what it left, as pandas DataFrames, and
``sharpbench.suite([results, ...])`` ranks across benchmarks. See :mod:`bench.api` and docs/api.md."""

from bench import __version__
from bench.api import RunResult, curves, leaderboard, rows, run, suite
from bench.errors import BadInput, RunStopped
from bench.session import RunOutcome

__all__ = [
    "BadInput",
    "RunOutcome",
    "RunResult",
    "RunStopped",
    "__version__",
    "curves",
    "leaderboard",
    "rows",
    "run",
    "suite",
]
