"""One colour and marker per method, the same in every figure, run and report.

A method's style depends on its name alone, never on which other methods a figure shows: the
built-in methods take the first slots of :data:`PALETTE` in registration order
(:func:`regularizers.builtin`), and any other name (a plug-in, a method of an older row) takes a
slot past :data:`BUILTIN_SLOTS` chosen by a SHA-256 of its name (Python's ``hash()`` is salted per
process). The marker makes each method readable in greyscale too. Plain data: no matplotlib here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import regularizers

#: Matplotlib's tab10 qualitative colours (distinguishable on screen and in print, widely known),
#: then Paul Tol's "muted" scheme (its pale grey replaced by near-black): 20 colours, so every
#: built-in method of today has a colour of its own, not only a marker.
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#332288",
    "#88ccee",
    "#44aa99",
    "#117733",
    "#999933",
    "#ddcc77",
    "#cc6677",
    "#882255",
    "#aa4499",
    "#222222",
)
#: Filled marker shapes (all of them can be drawn hollow: the figures draw search results hollow).
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class Style:
    """How one method is drawn: ``color`` a hex RGB, ``marker`` a matplotlib marker code."""

    slot: int
    color: str
    marker: str


# Slot i pairs colour i mod 20 with marker i mod 7: as 20 and 7 share no factor, the 140 slots are
# 140 different pairs, and neighbouring slots differ in both colour and marker.
PALETTE: tuple[Style, ...] = tuple(
    Style(i, COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i in range(len(COLORS) * len(MARKERS))
)
#: Slots kept for the built-in methods: a new built-in never moves a plug-in's colour. The rest
#: (110) are hashed into, so two plug-ins may share a style (one chance in 110 for a given pair).
BUILTIN_SLOTS = 30


def hashed_slot(name: str) -> int:
    """The slot of a name that is not a built-in method: a stable hash into the slots after
    :data:`BUILTIN_SLOTS`."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return BUILTIN_SLOTS + digest % (len(PALETTE) - BUILTIN_SLOTS)


def slot_of(name: str) -> int:
    """``name``'s slot in :data:`PALETTE`."""
    builtin = regularizers.builtin()
    if name in builtin:
        # More built-ins than reserved slots would share styles; 30 leaves room for 18 more.
        return builtin.index(name) % BUILTIN_SLOTS
    return hashed_slot(name)


def style_of(name: str) -> Style:
    """The colour and marker ``name`` is drawn with, in every figure."""
    return PALETTE[slot_of(name)]


def styles(methods: Iterable[str]) -> dict[str, Style]:
    """The style of each method; each depends on its own name only."""
    return {name: style_of(name) for name in methods}


__all__ = ["BUILTIN_SLOTS", "COLORS", "MARKERS", "PALETTE", "Style", "hashed_slot", "slot_of", "style_of", "styles"]
