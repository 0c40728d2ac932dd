"""``--format latex``: booktabs, the best mean in bold, ties marked, hostile names escaped."""

from __future__ import annotations

import re

from bench.leaderboard import render
from bench.leaderboard.latex import escape

from .conftest import board_of

ERM = {1: 0.90, 2: 0.91, 3: 0.905}


def test_booktabs_best_in_bold_and_ties_marked() -> None:
    board = board_of({"erm": ERM, "sam": {1: 0.95, 2: 0.962, 3: 0.954}, "asam": {1: 0.902, 2: 0.909, 3: 0.907}})
    text = render([board], "latex")
    assert "\\usepackage{booktabs}" in text
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert text.count(rule) == 1
    rows = text.split("\\midrule\n")[1].split("\n\\bottomrule")[0].splitlines()
    assert [row.split(" & ")[:2] for row in rows] == [["1", "sam"], ["2=", "asam"], ["2=", "erm"]]
    assert "\\textbf{95.53}" in rows[0] and "\\textbf" not in rows[2]
    assert rows[0].endswith("\\\\") and "(3)" in rows[0]  # n seeds
    assert "Verdict vs erm (Holm, $\\alpha$ = 0.05)" in text


def test_hostile_names_are_literal_text() -> None:
    hostile = "x_&%$#{}~^\\input{/etc/passwd}"
    board = board_of({"erm": ERM, hostile: {1: 0.5, 2: 0.6, 3: 0.7}})
    text = render([board], "latex")
    assert "\\input{" not in text
    assert escape(hostile) in text
    # after removing our own escapes, no special character is left bare in the names' cells
    row = next(line for line in text.splitlines() if line.startswith(("1 &", "2 &")) and "x\\_" in line)
    name = row.split(" & ")[1]
    stripped = re.sub(r"\\textbackslash\{\}|\\textasciitilde\{\}|\\textasciicircum\{\}|\\[&%$#_{}]", "", name)
    assert not set(stripped) & set("&%$#_{}~^\\"), stripped


def test_exact_ties_are_all_bold_and_a_rounded_zero_has_no_minus() -> None:
    twin = {1: 0.95, 2: 0.962, 3: 0.954}
    board = board_of({"erm": ERM, "sam": twin, "asam": dict(twin), "l1": {s: v - 1e-9 * s for s, v in ERM.items()}})
    rows = render([board], "latex").split("\\midrule\n")[1].split("\n\\bottomrule")[0].splitlines()
    bold = [row.split(" & ")[1] for row in rows if "\\textbf{95.53}" in row]
    assert sorted(bold) == ["asam", "sam"]
    (l1,) = [row for row in rows if " & l1 & " in row]
    assert "$+0.00$" in l1 and "$-0.00$" not in "".join(rows)  # Δ = -2e-9: rounds to zero, shown unsigned
