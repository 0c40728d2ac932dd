"""Tests of bench.leaderboard's views: the narrow board, the verdict line, the rank rule, LaTeX."""
