"""What a finished run's rows say about the run as a whole: whether it produced anything.

A run in which every trial failed has no result to rank, and must not end with exit status 0
(a script or CI job would take it for a benchmark). Ray-free and pure: it reads Parquet rows
(``bench.results.parquet.read_rows(...).to_pylist()``) as mappings with ``benchmark``,
``status`` and ``error``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from bench.errors import first_line
from bench.results.schema import TrialStatus

#: Exit status of ``sharpbench run`` / ``final`` when every trial of the benchmark failed.
ALL_FAILED_EXIT_STATUS = 1


def all_failed(rows: Iterable[Mapping[str, Any]]) -> bool:
    """True when there is at least one row and every row's status is ``failed``."""
    statuses = [row["status"] for row in rows]
    return bool(statuses) and all(status == TrialStatus.FAILED.value for status in statuses)


def failure_summary(rows: Iterable[Mapping[str, Any]], benchmark: str) -> str | None:
    """One line when every recorded trial of ``benchmark`` failed (None otherwise): how many,
    and the most frequent reason, e.g. ``every one of the 12 trials of digits failed; most
    often (12×): diverged: training loss nan at epoch 1 (step 4)``."""
    mine = [row for row in rows if row["benchmark"] == benchmark]
    if not all_failed(mine):
        return None
    reasons = Counter(first_line(row.get("error") or "no reason recorded") for row in mine)
    reason, count = reasons.most_common(1)[0]
    return f"every one of the {len(mine)} trials of {benchmark} failed; most often ({count}×): {reason}"
