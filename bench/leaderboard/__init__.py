"""The leaderboard: per benchmark, one standing per regularizer, ranked with its uncertainty.

``board`` builds the standings from the rows (the rules are in its docstring), ``verdict`` says in
one line what the tests found, ``render`` writes a board as a terminal table, JSON, CSV, Markdown
or LaTeX (``latex``).
"""

from bench.leaderboard.board import (
    DEFAULT_BASELINE,
    FLATNESS_COLUMNS,
    RANKED_BY_FINAL,
    RANKED_BY_NONE,
    RANKED_BY_SEARCH,
    RULE_INTERVALS,
    RULE_TESTS,
    BenchmarkBoard,
    FinalGroup,
    RankRule,
    Standing,
    board_notes,
    build_leaderboard,
    infra_line,
    methods_present,
    pooled_line,
)
from bench.leaderboard.render import (
    CSV_COLUMNS,
    FORMATS,
    NARROW_WIDTH,
    Format,
    interval_notes,
    legend,
    rank_rule_line,
    render,
    to_rich,
)
from bench.leaderboard.verdict import verdict_line

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_BASELINE",
    "FLATNESS_COLUMNS",
    "FORMATS",
    "NARROW_WIDTH",
    "RANKED_BY_FINAL",
    "RANKED_BY_NONE",
    "RANKED_BY_SEARCH",
    "RULE_INTERVALS",
    "RULE_TESTS",
    "BenchmarkBoard",
    "FinalGroup",
    "Format",
    "RankRule",
    "Standing",
    "board_notes",
    "build_leaderboard",
    "infra_line",
    "pooled_line",
    "interval_notes",
    "legend",
    "methods_present",
    "rank_rule_line",
    "render",
    "to_rich",
    "verdict_line",
]
