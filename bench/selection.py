"""The one rule for "best": which search trials the final seeds re-run and the leaderboard reports.

The search (choosing the configs that the final phase re-runs) and the leaderboard (choosing the
config it reports) both call this module, so they cannot drift apart. It imports neither Ray nor
Optuna: the search converts its Tune results to :class:`Candidate` values, the leaderboard its
Parquet rows (:func:`candidate_from_row`).

**The rule.**

1. Only *completed* search trials compete: they ran all their planned epochs. Trials stopped
   early by ASHA were scored after fewer epochs and failed trials have no score, so they count
   as trials of the budget but are never "best".
2. A competitor needs a finite value of the search metric (``search.metric``: ``val_accuracy``
   or ``val_loss``); NaN or missing means it does not compete.
3. Competitors are ordered by the search metric in its direction (:data:`bench.metrics.OBJECTIVES`:
   accuracy higher first, loss lower first).
4. Ties are broken by the other objective metric in its own direction (for ``val_accuracy`` the
   lower ``val_loss``, for ``val_loss`` the higher ``val_accuracy``); a missing or NaN tie-break
   value loses the tie.
5. Remaining ties go to the smaller ``run_id`` (string order), so the order is total and the same
   in every process.

:func:`top_k` gives the first k of that order (the final phase re-runs them); :func:`best` the
first. Rows written before schema version 2 have no ``search_metric``; they were chosen by
:data:`DEFAULT_METRIC`.

>>> a = Candidate("s/a", TrialStatus.COMPLETED, val_accuracy=0.90, val_loss=0.60)
>>> b = Candidate("s/b", TrialStatus.COMPLETED, val_accuracy=0.89, val_loss=0.30)
>>> best([a, b], "val_loss").run_id
's/b'
>>> best([a, b], "val_accuracy").run_id
's/a'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import metrics as M
from bench.results.schema import TrialStatus

#: The search metric of rows that do not record one (schema version 1 always used it).
DEFAULT_METRIC = M.VAL_ACCURACY


@dataclass(frozen=True)
class Candidate:
    """One search trial as the selection rule sees it.

    ``val_accuracy`` is a fraction in [0, 1], ``val_loss`` the mean cross-entropy (nats) on the
    validation split, both of the trial's last reported epoch; None or NaN when not measured.
    There is one field per key of :data:`bench.metrics.OBJECTIVES`.
    """

    run_id: str
    status: TrialStatus
    val_accuracy: float | None = None
    val_loss: float | None = None

    def value(self, metric: str) -> float | None:
        """The value of objective ``metric`` as a finite float, or None (missing or NaN).

        Raises ValueError for a metric that is not a search objective."""
        direction(metric)
        value = getattr(self, metric)
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None


def direction(metric: str) -> str:
    """``"max"`` or ``"min"``: how ``metric`` is optimized. Raises ValueError for an unknown one."""
    try:
        return M.OBJECTIVES[metric]
    except KeyError:
        raise ValueError(f"unknown search metric {metric!r}; choose one of {', '.join(M.OBJECTIVES)}") from None


def tie_break_metric(metric: str) -> str:
    """The other objective, which breaks ties of ``metric`` (rule step 4)."""
    direction(metric)
    (other,) = (m for m in M.OBJECTIVES if m != metric)
    return other


def competes(candidate: Candidate, metric: str) -> bool:
    """Rule steps 1-2: completed, with a finite value of ``metric``."""
    return candidate.status == TrialStatus.COMPLETED and candidate.value(metric) is not None


def _oriented(value: float | None, metric: str) -> float:
    """A key where smaller is better; a missing value sorts last."""
    if value is None:
        return math.inf
    return -value if direction(metric) == "max" else value


def sort_key(candidate: Candidate, metric: str) -> tuple[float, float, str]:
    """Rule steps 3-5 as a key for ``sorted`` (ascending = best first)."""
    other = tie_break_metric(metric)
    return (_oriented(candidate.value(metric), metric), _oriented(candidate.value(other), other), candidate.run_id)


def ranked(candidates: Iterable[Candidate], metric: str) -> list[Candidate]:
    """The competing candidates, best first (the whole rule). Raises ValueError for an unknown metric."""
    direction(metric)
    return sorted((c for c in candidates if competes(c, metric)), key=lambda c: sort_key(c, metric))


def top_k(candidates: Iterable[Candidate], k: int, metric: str) -> list[Candidate]:
    """The first ``k`` of :func:`ranked` (fewer when fewer compete). Raises ValueError for k < 1."""
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}")
    return ranked(candidates, metric)[:k]


def best(candidates: Iterable[Candidate], metric: str) -> Candidate | None:
    """The first of :func:`ranked`, or None when no candidate competes."""
    order = ranked(candidates, metric)
    return order[0] if order else None


def candidate_from_row(row: Mapping[str, Any]) -> Candidate:
    """A candidate from a Parquet row mapping (``bench.results.schema.TrialRow`` column names).

    Raises ValueError for a status outside :class:`TrialStatus`, KeyError for a missing column."""
    return Candidate(
        run_id=str(row["run_id"]),
        status=TrialStatus(row["status"]),
        **{metric: row[metric] for metric in M.OBJECTIVES},
    )


def metric_of_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The search metric recorded in ``rows`` (their ``search_metric`` column).

    Null values (rows before schema version 2) mean :data:`DEFAULT_METRIC`. When rows disagree
    (one benchmark name reused with another config), the most recent row's value (``timestamp``)
    is used. Raises ValueError for an unknown metric."""
    if not rows:
        return DEFAULT_METRIC
    latest = max(rows, key=lambda r: r["timestamp"])
    metric = latest.get("search_metric") or DEFAULT_METRIC
    direction(metric)
    return metric


__all__ = [
    "DEFAULT_METRIC",
    "Candidate",
    "best",
    "candidate_from_row",
    "competes",
    "direction",
    "metric_of_rows",
    "ranked",
    "sort_key",
    "tie_break_metric",
    "top_k",
]
