"""The Python door (``sharpbench.run`` / ``leaderboard`` / ``rows``): the same session as the CLI,
so the smoke config gives the same rows and the same board through either."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sharpbench
from bench.results.parquet import read_rows
from bench.results.schema import SCHEMA
from tests.runner import sharpbench as cli

#: What the example of docs/api.md leaves, saved for the test to compare.
_SAVE = """
assert result.all_failed is None and result.outcome.report is not None
rows.to_parquet("rows.parquet")
board.to_json("board.json", orient="records")
"""


def _documented_example(repo_root: Path) -> str:
    """The first Python block of docs/api.md: the example a user copies."""
    text = (repo_root / "docs" / "api.md").read_text(encoding="utf-8")
    return text.split("```python\n", 1)[1].split("```", 1)[0]


#: What a trial is: the same trials must appear through either door.
_KEY = ["regularizer", "phase", "seed", "regularizer_hparams", "training_hparams", "suggestion_kind"]


def _by_trial(frame: pd.DataFrame) -> dict[tuple, dict]:
    records = frame.to_dict(orient="records")
    keyed = {tuple(row[k] for k in _KEY): row for row in records}
    assert len(keyed) == len(records), "two rows describe the same trial"
    return keyed


@pytest.mark.slow
def test_api_run_gives_the_rows_and_board_of_the_cli(smoke_results, tmp_path, repo_root):
    """The documented example, run as it is (in a child process, for its own Ray runtime) from a
    folder that holds the repository's configs."""
    (tmp_path / "configs").symlink_to(repo_root / "configs")
    results = tmp_path / "runs" / "smoke"
    done = subprocess.run(
        [sys.executable, "-c", _documented_example(repo_root) + _SAVE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Leaderboard: sharpbench leaderboard" in done.stdout  # quiet: the board and the commands only
    assert "results →" not in done.stdout  # quiet: no banner, no progress lines

    api_rows = pd.read_parquet(tmp_path / "rows.parquet")
    assert list(api_rows.columns) == SCHEMA.names
    on_disk = read_rows(results).to_pandas()
    assert sorted(api_rows["run_id"]) == sorted(on_disk["run_id"])  # what it returned is what it recorded

    cli_rows = read_rows(smoke_results).to_pandas()
    api, shell = _by_trial(api_rows), _by_trial(cli_rows)
    assert api.keys() == shell.keys() and len(api) == 2 * 2 + 2 * 2  # erm, sam: 2 search + 2 final seeds each
    for key, row in api.items():
        assert row["status"] == shell[key]["status"]
        for metric in ("val_accuracy", "val_loss", "test_accuracy"):
            assert row[metric] == pytest.approx(shell[key][metric], abs=1e-9), (key, metric)

    board = pd.read_json(tmp_path / "board.json", orient="records")
    shell_board = json.loads(cli("leaderboard", str(smoke_results), "--format", "json", cwd=repo_root).stdout)
    standings = shell_board[0]["standings"]
    assert list(board["regularizer"]) == [s["regularizer"] for s in standings]
    assert list(board["test_accuracy"]) == pytest.approx([s["test_accuracy"] for s in standings], abs=1e-9)
    assert set(board["benchmark"]) == {"smoke"}


def test_api_refuses_bad_input_with_one_line(tmp_path):
    with pytest.raises(sharpbench.BadInput, match="config file not found") as error:
        sharpbench.run(tmp_path / "missing.yaml", results=tmp_path / "r")
    assert "\n" not in str(error.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: b\nregularizers: [samm]\n")
    with pytest.raises(sharpbench.BadInput, match=r"unknown regularizer 'samm' \(did you mean 'sam'\?\)"):
        sharpbench.run(bad, results=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(sharpbench.BadInput, match="results folder not found"):
        sharpbench.leaderboard(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sharpbench.BadInput, match="no results"):
        sharpbench.leaderboard(tmp_path / "empty")
