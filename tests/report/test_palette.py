"""The palette: one colour and marker per method, fixed by its name alone (bench/report/palette.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.colors
from matplotlib.markers import MarkerStyle

import regularizers
from bench.report import palette

#: The style slot each built-in method was given when the palette was introduced. A method's colour
#: is part of how readers recognize it across reports and papers: it must never move. A failure here
#: means a built-in now registers in another place: import a new method's module last
#: (regularizers/__init__.py), after every method already shipped.
PINNED_SLOTS = {
    "sam": 0,
    "asam": 1,
    "amp": 2,
    "coherent_l2": 3,
    "coherent_l1": 4,
    "erm": 5,
    "gnp": 6,
    "l1": 7,
    "nrs": 8,
    "nso": 9,
    "rwp": 10,
    "weight_decay": 11,
    "gsam": 12,
    "looksam": 13,
    "gam": 14,
    "msam": 15,
    "esam": 16,
    "vasso": 17,
    "fisher_sam": 18,
    "fsam": 19,
    "saf": 20,
    "mesa": 21,
}


def test_the_palette_holds_at_least_30_different_valid_pairs():
    pairs = {(s.color, s.marker) for s in palette.PALETTE}
    assert len(pairs) == len(palette.PALETTE) >= 30
    assert [s.slot for s in palette.PALETTE] == list(range(len(palette.PALETTE)))
    for style in palette.PALETTE:
        assert matplotlib.colors.is_color_like(style.color)
        assert MarkerStyle(style.marker).is_filled()  # a search trial is the same marker hollow
    # Neighbouring slots differ in colour and in marker: methods next to each other in the
    # registry (sam, asam) never share either.
    for a, b in zip(palette.PALETTE, palette.PALETTE[1:], strict=False):
        assert a.color != b.color and a.marker != b.marker


def test_built_in_methods_keep_their_slots():
    assert {name: palette.slot_of(name) for name in regularizers.builtin()} == PINNED_SLOTS
    styles = [palette.style_of(name) for name in PINNED_SLOTS]
    assert len({(s.color, s.marker) for s in styles}) == len(styles)  # every built-in looks different


def test_a_style_depends_on_the_name_alone():
    everything = palette.styles([*PINNED_SLOTS, "my_plugin", "old-method"])
    for subset in (["erm", "sam"], ["weight_decay"], ["old-method", "asam"], ["my_plugin"]):
        assert palette.styles(subset) == {name: everything[name] for name in subset}


def test_other_names_hash_stably_past_the_built_in_slots():
    names = ["my_plugin", "old-method", "<script>alert(1)</script>", "ünïcode"]
    slots = [palette.slot_of(name) for name in names]
    assert all(palette.BUILTIN_SLOTS <= s < len(palette.PALETTE) for s in slots)
    # The same slots in a fresh interpreter with another str-hash salt (Python's hash() would differ).
    code = f"from bench.report import palette; print([palette.slot_of(n) for n in {names!r}])"
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert done.stdout.strip() == str(slots)
    assert palette.slot_of("my_plugin") == 129  # and the same in every version: a SHA-256, pinned
