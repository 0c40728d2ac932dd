"""When a trial reports to Tune: at every epoch the search decides on, else in batches.

A function trainable waits after each ``tune.report`` until the driver has handled the result
(the searcher, the per-method ASHA, the sink, the console): 12–28 ms per report here, against
~30 ms for a whole digits epoch. So a trial sends a report only when something needs it now:

* an epoch at which its method's ASHA takes a decision (:func:`bench.search.scheduler.rung_epochs`),
  so early stopping sees exactly what it would see with one report per epoch;
* its last epoch (the outcome), and an epoch with a checkpoint (resume needs Tune to know it);
* otherwise at most once per :data:`REPORT_SECONDS`, so progress on the console stays current.

The epochs trained in between travel inside the next report (:data:`bench.metrics.EARLIER_EPOCHS`),
and everything downstream reads them with :func:`bench.metrics.epochs_of`: MLflow still logs every
epoch, and the study still holds every epoch's value. Epochs of a second or longer are reported
one by one, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from bench import metrics

#: The longest a trial keeps epochs to itself when no decision, checkpoint or end is due.
REPORT_SECONDS = 1.0


class EpochBatch:
    """The epochs a trial has trained but not yet reported, and whether to report now.

    ``decision_epochs``: epochs at which a scheduler decides on the trial (always reported);
    ``seconds``: the longest time between reports otherwise; ``clock``: seconds (monotonic).
    """

    def __init__(
        self,
        decision_epochs: Collection[int] = (),
        *,
        seconds: float = REPORT_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.decision_epochs = frozenset(decision_epochs)
        self.seconds = seconds
        self.clock = clock
        self.pending: list[dict[str, Any]] = []
        self.sent = clock()

    def add(self, report: dict[str, Any], *, last: bool = False) -> bool:
        """Hold one epoch's report (with :data:`bench.metrics.EPOCH`); True when a report is due
        now: ``last`` (the trial's last epoch), a decision epoch, or ``seconds`` since the last one."""
        self.pending.append(report)
        return last or int(report[metrics.EPOCH]) in self.decision_epochs or self.clock() - self.sent >= self.seconds

    def take(self) -> dict[str, Any]:
        """The report to send: the newest epoch's, carrying the held earlier epochs' metrics
        (:func:`bench.metrics.batched`). Raises ValueError when nothing is held."""
        if not self.pending:
            raise ValueError("no epoch to report")
        report = metrics.batched(self.pending)
        self.pending = []
        self.sent = self.clock()
        return report
