"""configs/smoke.yaml through the real CLI: a real Ray runtime, Optuna, MLflow sqlite, Parquet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.compute as pc
import pytest
from mlflow.tracking import MlflowClient

from bench.results.mlflow_ui import runs_view_url
from bench.results.parquet import read_rows, run_key
from bench.results.schema import REQUIRED_COLUMNS, SCHEMA
from tests.runner import sharpbench

pytestmark = pytest.mark.slow


#: Third-party lines that say nothing to a user and must not reach the console.
_NOISE = (
    "snapshotting has been triggered",  # Ray Tune's excessive-sync warning (3 lines a time)
    "Configuration for experiment",  # Tune's boxes
    "tensorboard",
    "View detailed results here",
    "A new study created",  # Optuna's INFO line
    "ExperimentalWarning",
    "Token authentication is enabled",
    "Started a local Ray instance",
    "Creating initial MLflow database tables",
    "Wrote the latest version of all result files",
)


def test_console_is_quiet_and_informative(smoke_results):
    """What a user sees: method k/M, trials done/planned, the sampled values, an ETA, the
    leaderboard once, and the commands on lines of their own; no third-party noise."""
    out = (smoke_results.parent / "stdout.txt").read_text()
    err = (smoke_results.parent / "stderr.txt").read_text()
    for noise in _NOISE:
        assert noise.lower() not in (out + err).lower(), noise
    lines = out.splitlines()
    # one header per phase, in order, before that phase's first trial line
    headers = [line for line in lines if re.match(r"── (search|final) · ", line)]
    assert headers == [
        "── search · 2 methods · trials per method: erm 2, sam 2",
        "── final · 2 methods · seeds per method (the best config): erm 2, sam 2",
    ], out
    first_final = next(i for i, line in enumerate(lines) if re.match(r"^\[\d/2 \w+ final ", line))
    assert lines.index(headers[0]) < lines.index(headers[1]) < first_final
    pattern = re.compile(
        r"^\[(?P<k>\d)/2 (?P<method>erm|sam) (?P<phase>search|final) (?P<done>\d)/2\] completed 2/2 ep"
        r" \| (?P<sampled>[^|]+) \| val_acc=0\.\d{4} test_acc=0\.\d{4} \| [\d.]+m?s \| all (?P<all>\d)/8, ETA "
        r"(?P<eta>\S+)$"
    )
    trials = [m for m in map(pattern.match, lines) if m]
    assert len(trials) == 8, out
    assert [int(m["all"]) for m in trials] == list(range(1, 9))
    assert all(re.fullmatch(r"(\d+h)?(\d+m)?\d+s", m["eta"]) for m in trials)  # a time once a trial finished
    for m in trials:
        assert m["k"] == ("1" if m["method"] == "erm" else "2")
        if m["phase"] == "final":
            assert re.fullmatch(r"seed=[12] from=\w+", m["sampled"])  # the seed and the search trial it re-runs
        else:
            assert "learning_rate=" in m["sampled"]
            assert ("perturbation_radius=" in m["sampled"]) == (m["method"] == "sam")
    assert out.count("smoke (digits, mlp)") == 1  # the leaderboard, once
    board = out[out.index("smoke (digits, mlp)") : out.index("Leaderboard:")]
    assert max(len(line) for line in board.splitlines()) <= 100 and "Verdict vs erm (Holm, α = 0.05): sam" in board
    # smoke's 2 trials are both TPE startup trials: the run says so, once, with the fix, on stderr.
    warned = [line for line in err.splitlines() if "mostly random" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: search of smoke is mostly random: 2 of 2 trials"), warned
    assert not any("mostly random" in line for line in lines)
    uri = f"sqlite:///{smoke_results / 'mlflow.db'}"
    assert f"MLflow UI  : mlflow ui --backend-store-uri {uri}" in lines  # whole, on one line
    assert f"Leaderboard: sharpbench leaderboard {smoke_results}" in lines


def test_parquet_rows_are_complete(smoke_results):
    table = read_rows(smoke_results)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.num_rows == 8  # 2 methods x (2 search trials + the best config x 2 final seeds)
    rows = table.to_pylist()
    for column in REQUIRED_COLUMNS:
        assert table.column(column).null_count == 0, column
    assert {r["status"] for r in rows} == {"completed"}
    assert pc.min(table.column("test_accuracy")).as_py() > 0.1  # better than chance on 10 classes
    search = [r for r in rows if r["phase"] == "search"]
    final = [r for r in rows if r["phase"] == "final"]
    assert (
        sorted(r["regularizer"] for r in search)
        == sorted(r["regularizer"] for r in final)
        == ["erm", "erm", "sam", "sam"]
    )
    assert {r["seed"] for r in search} == {0} and sorted(r["seed"] for r in final) == [1, 1, 2, 2]
    # Two trials, two startup trials per method: the papers' default, then one random draw.
    for method in ("erm", "sam"):
        kinds = sorted(r["suggestion_kind"] for r in search if r["regularizer"] == method)
        assert kinds == ["default", "startup"], (method, kinds)
    assert {r["suggestion_kind"] for r in final} == {None}
    for method in ("erm", "sam"):
        # the final runs re-use the best search config of their method: highest validation
        # accuracy, ties to the lower validation loss, then the earlier trial
        candidates = [r for r in search if r["regularizer"] == method]
        best = min(candidates, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["run_id"]))
        for r in final:
            if r["regularizer"] == method:
                assert r["regularizer_hparams"] == best["regularizer_hparams"]
                assert (
                    json.loads(r["training_hparams"])["learning_rate"]
                    == json.loads(best["training_hparams"])["learning_rate"]
                )
    # passes per trial: epochs x steps x passes per step; SAM costs twice ERM on the same data
    passes = {r["regularizer"]: r["forward_passes"] for r in search}
    assert passes["sam"] == 2 * passes["erm"] > 0
    versions = json.loads(rows[0]["package_versions"])
    assert {"torch", "ray", "optuna", "mlflow", "pyarrow"} <= set(versions)
    assert all(
        0.01 <= json.loads(r["regularizer_hparams"])["perturbation_radius"] <= 0.5
        for r in rows
        if r["regularizer"] == "sam"
    )
    # one file per run id, in a folder per benchmark and regularizer (see bench.results.parquet)
    files = sorted((smoke_results / "leaderboard").rglob("*.parquet"))
    assert [f.parent.relative_to(smoke_results / "leaderboard").parts for f in files].count(("smoke", "sam")) == 4
    assert sorted(f.name for f in files) == sorted(run_key(r["run_id"]) for r in rows)


def test_mlflow_store_has_parent_and_child_runs(smoke_results):
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 4 and len(children) == 8  # a parent per method x phase
    parent_ids = {p.info.run_id for p in parents}
    table = read_rows(smoke_results)
    assert {c.info.run_id for c in children} == set(table.column("mlflow_run_id").to_pylist())
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] in parent_ids
        assert child.info.status == "FINISHED"
        assert "training.learning_rate" in child.data.params
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]  # one point per epoch
        assert "test_accuracy" in child.data.metrics
    assert sorted(p.data.tags["sharpbench.phase"] for p in parents) == ["final", "final", "search", "search"]
    # the report's figures and the leaderboard ride on every parent run (written at the end of run)
    for parent in parents:
        names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
        assert "report/leaderboard.md" in names and any(n.endswith(".png") for n in names), names
    assert (smoke_results / "report.html").is_file()


def test_leaderboard_names_both_methods(smoke_results, repo_root):
    done = sharpbench("leaderboard", str(smoke_results), "--format", "json", cwd=repo_root)
    assert done.returncode == 0, done.stderr
    boards = json.loads(done.stdout)
    standings = {s["regularizer"]: s for s in boards[0]["standings"]}
    assert set(standings) == {"erm", "sam"}
    for standing in standings.values():
        assert standing["ranked_by"] == "final" and standing["n_seeds"] == 2
    plain = sharpbench("leaderboard", str(smoke_results), cwd=repo_root)
    assert plain.returncode == 0 and "erm" in plain.stdout and "sam" in plain.stdout


def test_rerun_resumes_without_duplicating(smoke_results, repo_root):
    """Running the same config again restores the finished searches: no new rows or runs, and the
    run says at once that there is nothing to do."""
    before = read_rows(smoke_results).num_rows
    done = sharpbench(
        "run",
        str(repo_root / "configs/smoke.yaml"),
        "--results",
        str(smoke_results),
        "--num-cpus",
        "2",
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("nothing to do: 8 trials already recorded in ")]
    assert len(said) == 1 and str(smoke_results) in lines[said[0]], done.stdout
    assert said[0] < lines.index("smoke (digits, mlp)")  # before the board
    assert "[1/2" not in done.stdout and "── search ·" not in done.stdout
    assert done.stdout.count("smoke (digits, mlp)") == 1
    assert "MLflow UI  : mlflow ui" in done.stdout
    assert read_rows(smoke_results).num_rows == before
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert len(client.search_runs([experiment.experiment_id], max_results=100)) == 12


def test_run_logs_to_a_tracking_server(mlflow_server, tmp_path, repo_root):
    """--tracking-uri sends the runs to a real `mlflow server`; nothing goes to a local store."""
    results = tmp_path / "results"
    done = sharpbench(
        "run",
        str(repo_root / "configs/smoke.yaml"),
        "--results",
        str(results),
        "--num-cpus",
        "2",
        "--tracking-uri",
        mlflow_server,
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (results / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 12 and len(children) == 8
    assert {c.info.run_id for c in children} == set(read_rows(results).column("mlflow_run_id").to_pylist())
    # The server is its own UI: the address of the training runs there, no `mlflow ui` to start.
    assert f"MLflow runs: {runs_view_url(mlflow_server, experiment.experiment_id)}" in done.stdout.splitlines()
    assert "mlflow ui" not in done.stdout


def test_mlflow_reads_as_a_training_benchmark(smoke_results, tmp_path):
    """Read back from the run's sqlite store: the experiment kind, each trial's resolved config,
    provenance and the precision/device it used, and parent metrics equal to the leaderboard's."""
    from bench.leaderboard import build_leaderboard

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    rows = {r["mlflow_run_id"]: r for r in read_rows(smoke_results).to_pylist()}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {c.info.run_id for c in children} == set(rows)
    for child in children:
        row = rows[child.info.run_id]
        config = json.loads(
            Path(client.download_artifacts(child.info.run_id, "config.json", str(tmp_path))).read_text()
        )
        assert config["training"] == json.loads(row["training_hparams"])
        assert config["regularizer_hparams"] == json.loads(row["regularizer_hparams"])
        assert (config["seed"], config["regularizer"], config["benchmark"]) == (
            row["seed"],
            row["regularizer"],
            row["benchmark"],
        )
        assert (config["dataset"]["name"], config["model"]["name"]) == (row["dataset"], row["model"])
        tags = child.data.tags
        dirty = tags["mlflow.source.git.dirty"] == "true"
        assert tags["mlflow.source.git.commit"] + ("-dirty" if dirty else "") == row["git_commit"]
        assert tags["mlflow.source.name"] == "sharpbench"
        versions = {
            k.removeprefix("sharpbench.package."): v for k, v in tags.items() if k.startswith("sharpbench.package.")
        }
        assert versions == json.loads(row["package_versions"])
        # As used, on this CPU-only run: "auto" resolved to float32 on the CPU; the params keep the request.
        assert child.data.params["training.precision"] == "auto" and child.data.params["training.device"] == "auto"
        assert tags["sharpbench.precision"] == row["precision"] == "float32"
        assert tags["sharpbench.device"] == row["device"] == "cpu"
    board = build_leaderboard(read_rows(smoke_results))[0]
    # parent runs are keyed by search name within a run instance (bench.run_record): "<search>@<instance>"
    parents = {
        p.data.tags["sharpbench.search_name"].split("@")[0]: p for p in runs if "mlflow.parentRunId" not in p.data.tags
    }
    for standing in board.standings:
        search = parents[f"smoke-{standing.regularizer}-search"].data.metrics
        final = parents[f"smoke-{standing.regularizer}-final"].data
        # The same float64 computation on the same rows, stored as doubles: equal up to the
        # last bits a storage round trip could touch.
        expected = {
            "best_val_accuracy": standing.best_val_accuracy,
            "final_test_accuracy_mean": standing.test_accuracy,
            "final_test_accuracy_ci_low": standing.test_accuracy_ci_low,
            "final_test_accuracy_ci_high": standing.test_accuracy_ci_high,
            "n_seeds": standing.n_seeds,
            "search_trials": standing.trials_total,
        }
        assert {key: final.metrics.get(key) for key in expected} == pytest.approx(expected, rel=1e-12)
        assert standing.n_seeds == 2 and final.metrics["trials_completed"] == 2
        assert final.tags["sharpbench.best_run_id"] == standing.best_run_id
        # the search parent carries the search's numbers only (also after the resumed re-run)
        assert search["best_val_accuracy"] == pytest.approx(standing.best_val_accuracy, rel=1e-12)
        assert "final_test_accuracy_mean" not in search and "n_seeds" not in search
        final_id = parents[f"smoke-{standing.regularizer}-final"].info.run_id
        standing_json = json.loads(
            Path(client.download_artifacts(final_id, "standing.json", str(tmp_path))).read_text()
        )
        assert standing_json["standings"][0]["test_accuracy"] == pytest.approx(standing.test_accuracy, rel=1e-12)
