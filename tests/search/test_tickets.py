"""The ticket book's kept counts against the scans over every ticket that they replace."""

from __future__ import annotations

import pickle
import random

import pytest

from bench.results.schema import Phase
from bench.search.tickets import Ticket, TicketBook

METHODS = ["erm", "sam", "nso"]


def _scanned(book: TicketBook) -> dict:
    """Each answer as the searcher computed it before the book: a scan over every ticket."""
    tickets, ended, lost = book.tickets, book.ended, book.lost
    answers: dict = {"running": sorted(t for t in tickets if t not in ended)}
    for method in METHODS:
        for phase in Phase:
            answers[("issued", method, phase)] = sum(
                t.method == method and t.phase == phase.value and i not in lost for i, t in tickets.items()
            )
            answers[("ordinal", method, phase)] = sum(
                t.method == method and t.phase == phase.value for t in tickets.values()
            )
        answers[("search_ended", method)] = all(
            i in ended for i, t in tickets.items() if t.method == method and t.phase == Phase.SEARCH.value
        )
        answers[("taken", method)] = {
            t.number for i, t in tickets.items() if t.method == method and t.number is not None and i not in lost
        }
        answers[("lost", method)] = sum(tickets[i].method == method for i in lost)
    return answers


def _kept(book: TicketBook) -> dict:
    answers: dict = {"running": sorted(book.running())}
    for method in METHODS:
        for phase in Phase:
            answers[("issued", method, phase)] = book.issued(method, phase)
            answers[("ordinal", method, phase)] = book.ordinal(method, phase)
        answers[("search_ended", method)] = book.search_ended(method)
        answers[("taken", method)] = book.taken(method)
        answers[("lost", method)] = book.lost_count(method)
    return answers


@pytest.mark.parametrize("seed", range(20))
def test_kept_counts_equal_the_scans_after_any_sequence_of_changes(seed: int) -> None:
    rng = random.Random(seed)
    book = TicketBook()
    for step in range(300):
        ids = list(book.tickets)
        action = rng.choice(["issue", "issue", "renumber", "end", "end", "reopen", "lose"])
        if action == "issue" or not ids:
            phase = rng.choice([Phase.SEARCH, Phase.FINAL])
            number = rng.randrange(40) if phase == Phase.SEARCH else None  # numbers repeat: orphans
            book.issue(f"t{step}", Ticket(rng.choice(METHODS), phase.value, number))
        elif action == "renumber":  # a study told the trial under another number
            trial_id = rng.choice(ids)
            old = book.tickets[trial_id]
            book.issue(trial_id, Ticket(old.method, old.phase, rng.randrange(40)))
        elif action == "end":
            book.end(rng.choice(ids))
        elif action == "reopen":
            book.reopen(rng.choice(ids))
        else:  # lost to an infrastructure fault: ended first, as the searcher does
            trial_id = rng.choice(ids)
            book.end(trial_id)
            book.lose(trial_id)
        assert _kept(book) == _scanned(book), (seed, step, action)
    # A state saved by an older searcher (tickets, ended and lost apart) gives the same answers.
    rebuilt = TicketBook.of(dict(book.tickets), set(book.ended), set(book.lost))
    assert _kept(rebuilt) == _kept(book)
    assert _kept(pickle.loads(pickle.dumps(book))) == _kept(book)
