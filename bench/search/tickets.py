"""The searcher's ledger of the Tune trials it issued, with its counts kept as it changes.

The searcher asks the same questions many times per trial (how many search trials has this
method issued? is its search over? which trials run?). Answered by scanning every ticket, they
cost O(trials) each, O(trials²) over a run: at 10,000 simulated trials the driver spent 296 ms
of CPU per trial against 77 ms at 1,000 (docs/measurements.md). Here every change updates the
counts, so each answer costs O(1) (:meth:`TicketBook.taken`: the size of one method's numbers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.results.schema import Phase


@dataclass(frozen=True)
class Ticket:
    """One Tune trial as the searcher issued it."""

    method: str
    phase: str
    number: int | None = None  # its study trial (search phase)
    selected_run_id: str | None = None  # final phase: the search row it re-runs
    seed: int | None = None


@dataclass
class TicketBook:
    """Tickets by Tune trial id; which have ended, which were lost to an infrastructure fault
    (ended, but no ticket of their method's budget); and the counts derived from them."""

    tickets: dict[str, Ticket] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    _counted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, phase), lost left out
    _ordinals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, phase), all
    _lost_by_method: Counter[str] = field(default_factory=Counter)
    _searching: Counter[str] = field(default_factory=Counter)  # search tickets not ended, by method
    _running: set[str] = field(default_factory=set)
    _numbers: dict[str, Counter[int]] = field(default_factory=dict)  # study numbers held, by method

    @classmethod
    def of(cls, tickets: dict[str, Ticket], ended: set[str], lost: set[str]) -> TicketBook:
        """A book holding these (a searcher state saved before the book existed)."""
        book = cls()
        for trial_id, ticket in tickets.items():
            book.issue(trial_id, ticket)
        for trial_id in ended & tickets.keys():
            book.end(trial_id)
        for trial_id in lost & tickets.keys():
            book.lose(trial_id)
        return book

    # --- changes ----------------------------------------------------------------------------

    def issue(self, trial_id: str, ticket: Ticket) -> None:
        """A new ticket (running), or a ticket's study number changed (the same trial)."""
        old = self.tickets.get(trial_id)
        if old is not None:
            self._hold(trial_id, old, -1)
            self.tickets[trial_id] = ticket
            self._hold(trial_id, ticket, +1)
            return
        self.tickets[trial_id] = ticket
        key = (ticket.method, ticket.phase)
        self._counted[key] += 1
        self._ordinals[key] += 1
        self._running.add(trial_id)
        if ticket.phase == Phase.SEARCH.value:
            self._searching[ticket.method] += 1
        self._hold(trial_id, ticket, +1)

    def end(self, trial_id: str) -> None:
        if trial_id in self.ended or trial_id not in self.tickets:
            return
        self.ended.add(trial_id)
        self._running.discard(trial_id)
        ticket = self.tickets[trial_id]
        if ticket.phase == Phase.SEARCH.value:
            self._searching[ticket.method] -= 1

    def reopen(self, trial_id: str) -> None:
        """An ended trial runs again (a failed trial restarted by ``--retry-failed``)."""
        if trial_id not in self.ended:
            return
        self.ended.discard(trial_id)
        self._running.add(trial_id)
        ticket = self.tickets[trial_id]
        if ticket.phase == Phase.SEARCH.value:
            self._searching[ticket.method] += 1

    def lose(self, trial_id: str) -> None:
        """Lost to an infrastructure fault: its ticket leaves its method's budget and study number."""
        if trial_id in self.lost or trial_id not in self.tickets:
            return
        ticket = self.tickets[trial_id]
        self._hold(trial_id, ticket, -1)
        self.lost.add(trial_id)
        self._counted[(ticket.method, ticket.phase)] -= 1
        self._lost_by_method[ticket.method] += 1

    def _hold(self, trial_id: str, ticket: Ticket, sign: int) -> None:
        if ticket.number is None or trial_id in self.lost:
            return
        numbers = self._numbers.setdefault(ticket.method, Counter())
        numbers[ticket.number] += sign
        if numbers[ticket.number] <= 0:
            del numbers[ticket.number]

    # --- questions ------------------------------------------------------------------------------

    def issued(self, method: str, phase: Phase) -> int:
        """Tickets of the method's budget in ``phase``: a lost trial's is none."""
        return self._counted[(method, phase.value)]

    def ordinal(self, method: str, phase: Phase) -> int:
        """Tickets ever issued for the method in ``phase``, lost ones included."""
        return self._ordinals[(method, phase.value)]

    def running(self) -> list[str]:
        return list(self._running)

    def search_ended(self, method: str) -> bool:
        """Every search ticket of the method has ended (true when it has none)."""
        return self._searching[method] == 0

    def taken(self, method: str) -> set[int]:
        """The study numbers the method's tickets hold (a lost trial's is free again)."""
        return set(self._numbers.get(method, {}))

    def lost_count(self, method: str) -> int:
        return self._lost_by_method[method]
