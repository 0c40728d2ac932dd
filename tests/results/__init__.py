"""Tests of bench.results (Parquet dataset, MLflow sink) and bench.leaderboard."""
