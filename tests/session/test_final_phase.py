"""The final phase through the real CLI: `run` re-runs the configs the selection rule picks
(recorded in `selected_from_run_id`), `sharpbench final` reproduces them from a results folder,
and searched epochs run to their own end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench import selection
from bench.results.parquet import read_rows
from tests.runner import sharpbench

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return sharpbench(*args, cwd=cwd)


def _config(tmp_path: Path, name: str, seeds: list[int]) -> Path:
    raw = {
        "benchmark": "finals",
        "dataset": {"name": "digits", "max_train_samples": 256},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        # epochs is searched (a degenerate range: every trial plans 3) while the recipe says 1:
        # ASHA's horizon must follow the space, or every trial is cut at epoch 1 and "stopped".
        "training": {"epochs": 1, "batch_size": 64},
        "search": {
            "trials_per_method": 3,
            "seed": 0,
            "max_concurrent_trials": 1,
            "asha": {"enabled": True, "grace_period": 3, "reduction_factor": 2},
            "space": {"learning_rate": {"low": 0.02, "high": 0.2, "log": True}, "epochs": {"low": 3, "high": 3}},
        },
        "final": {"seeds": seeds, "top_k": 2},
        "regularizers": ["erm"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _finals(results: Path) -> dict[tuple[str, int], dict]:
    """Final rows keyed by (the config they re-run, seed): trial ids differ between runs."""
    rows = read_rows(results).to_pylist()
    search = {r["run_id"]: r for r in rows if r["phase"] == "search"}
    return {
        (search[r["selected_from_run_id"]]["training_hparams"], r["seed"]): r for r in rows if r["phase"] == "final"
    }


def test_final_phase_of_run_and_final_command_agree(tmp_path, repo_root):
    full, searched_only = tmp_path / "full", tmp_path / "searched"
    done = _cli("run", str(_config(tmp_path, "full", [1, 2])), "--results", str(full), "--num-cpus", "2", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rows = read_rows(full).to_pylist()
    search = [r for r in rows if r["phase"] == "search"]
    # searched epochs ran to their own end: completed, 3 of 3, none cut at the recipe's 1
    assert [(r["status"], r["epochs_run"], r["epochs_planned"]) for r in search] == [("completed", 3, 3)] * 3
    # top_k=2 x 2 seeds, each naming the search trial it re-runs: the rule's top 2
    top = selection.top_k([selection.candidate_from_row(r) for r in search], 2, "val_accuracy")
    finals = [r for r in rows if r["phase"] == "final"]
    assert sorted((r["selected_from_run_id"], r["seed"]) for r in finals) == sorted(
        (c.run_id, seed) for c in top for seed in (1, 2)
    )
    by_id = {r["run_id"]: r for r in search}
    for r in finals:
        assert r["regularizer_hparams"] == by_id[r["selected_from_run_id"]]["regularizer_hparams"]
        assert r["training_hparams"] == by_id[r["selected_from_run_id"]]["training_hparams"]
        assert r["search_metric"] == "val_accuracy"
    client = MlflowClient(tracking_uri=f"sqlite:///{full / 'mlflow.db'}")
    for r in finals:
        assert (
            client.get_run(r["mlflow_run_id"]).data.tags["sharpbench.selected_from_run_id"] == r["selected_from_run_id"]
        )

    # The same search without final seeds, then `sharpbench final` on its folder.
    done = _cli(
        "run", str(_config(tmp_path, "searched", [])), "--results", str(searched_only), "--num-cpus", "2", cwd=repo_root
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not [r for r in read_rows(searched_only).to_pylist() if r["phase"] == "final"]
    done = _cli("final", str(searched_only), "--seed", "1", "--seed", "2", "--num-cpus", "2", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "── final · 1 method · seeds per method (the best config): erm 4" in done.stdout

    expected, got = _finals(full), _finals(searched_only)
    assert set(got) == set(expected)
    for key, row in expected.items():
        # same seed, same machine: the same training run (accuracy is a count, compared exactly)
        assert got[key]["test_accuracy"] == row["test_accuracy"]
        assert got[key]["val_accuracy"] == row["val_accuracy"]
        assert got[key]["test_loss"] == pytest.approx(row["test_loss"], rel=1e-9)
    # a second call finds every final run recorded and re-runs nothing
    before = read_rows(searched_only).num_rows
    done = _cli("final", str(searched_only), "--num-cpus", "2", "--quiet", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_rows(searched_only).num_rows == before


def test_final_command_errors(tmp_path, repo_root):
    done = _cli("final", str(tmp_path / "missing"), cwd=repo_root)
    assert done.returncode == 2 and "results folder not found" in done.stderr
    (tmp_path / "empty").mkdir()
    done = _cli("final", str(tmp_path / "empty"), cwd=repo_root)
    assert done.returncode == 2 and "no recorded run" in done.stderr and "Traceback" not in done.stderr
    from tests.report.results_folder import write_results

    results = write_results(tmp_path / "results")  # its Parquet sub-folder given instead of it
    done = _cli("final", str(results / "leaderboard"), cwd=repo_root)
    assert (
        done.returncode == 2
        and f"is the Parquet dataset of the results folder {results}: give {results}" in done.stderr
    )
    # A run recorded but its searches unfinished (interrupted before any trial ended): refused,
    # since the best config of a partial search is not the search's best.
    from bench.run_record import RunRecord

    partial = tmp_path / "partial"
    from bench.config import load_config

    RunRecord.new(load_config(_config(tmp_path, "partial", [1]))).save(partial)
    done = _cli("final", str(partial), "--seed", "1", cwd=repo_root)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "searches in" in lines[0] and "unfinished" in lines[0] and "erm 0/" in lines[0]
    assert not (partial / "ray").exists()  # nothing started
