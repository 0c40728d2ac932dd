"""sharpbench's benchmark harness: config → search → trial → metrics → sinks → leaderboard."""

__version__ = "0.1.0"
