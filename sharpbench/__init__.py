"""sharpbench's Python API: ``sharpbench.run(config, results=...)`` runs a benchmark as
``sharpbench run`` does; ``sharpbench.leaderboard(results)`` and ``sharpbench.rows(results)``
read what it left, as pandas DataFrames. See :mod:`bench.api` and docs/api.md."""

from bench import __version__
from bench.api import RunResult, leaderboard, rows, run
from bench.errors import BadInput, RunStopped
from bench.session import RunOutcome

__all__ = ["BadInput", "RunOutcome", "RunResult", "RunStopped", "__version__", "leaderboard", "rows", "run"]
