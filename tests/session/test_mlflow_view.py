"""MLflow as a user opens it after ``sharpbench run`` (the smoke run): the printed address, served
by a real ``mlflow server`` on loopback over the run's own store and rendered by headless chromium,
shows the training runs, every trial by name; and what the run logged there, read back through the
MLflow client: run names, counters and costs as metric histories, the report on each parent run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.results.mlflow_sink import default_tracking_uri
from bench.results.mlflow_ui import LOCAL_UI, runs_view_url
from bench.results.parquet import read_rows
from tests.report.test_browser import CHROMIUM, chromium

pytestmark = pytest.mark.slow

METHODS, PHASES = ("erm", "sam"), ("search", "final")


def _printed(smoke_results: Path, label: str) -> str:
    """What the run printed after ``label:`` on a line of its own."""
    lines = (smoke_results.parent / "stdout.txt").read_text().splitlines()
    (line,) = [line for line in lines if line.startswith(f"{label}: ")]
    return line.split(": ", 1)[1]


def _runs(smoke_results: Path) -> tuple[MlflowClient, str, dict[str, object]]:
    """The client, the experiment id and the runs of the smoke run's store, by run name."""
    client = MlflowClient(tracking_uri=default_tracking_uri(smoke_results))
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = {run.info.run_name: run for run in client.search_runs([experiment], max_results=100)}
    return client, experiment, runs


def _history(client: MlflowClient, run_id: str, key: str) -> set[tuple[int, float]]:
    return {(m.step, m.value) for m in client.get_metric_history(run_id, key)}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`)")
def test_the_printed_address_opens_the_training_runs(smoke_results, mlflow_servers):
    client, experiment, runs = _runs(smoke_results)
    command = f"mlflow ui --backend-store-uri {default_tracking_uri(smoke_results)}"
    assert _printed(smoke_results, "MLflow UI  ") == command
    printed = _printed(smoke_results, "MLflow runs")
    assert printed == runs_view_url(LOCAL_UI, experiment)  # where `mlflow ui` serves by default

    server = mlflow_servers(smoke_results)  # the run's own store, as `mlflow ui` would serve it
    dom = chromium(server.url + printed.removeprefix(LOCAL_UI), "--dump-dom", "--window-size=1400,1200")
    shown = re.findall(r">(smoke/[^<]*)<", dom)
    # Every run by name, trials included (not folded under their parents), sorted by name:
    # each method's search then final parent, each followed by its trials.
    assert len(runs) == 12 and shown == sorted(runs)
    assert "Model training" in dom

    # The bare experiment address, what MLflow 3.17 opens without the query: its GenAI overview
    # (a fresh browser), no run in sight, although the experiment is tagged as model training.
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    bare = chromium(f"{server.url}/#/experiments/{experiment}", "--dump-dom", "--window-size=1400,1200")
    assert "Traces" in bare and not re.findall(r">(smoke/[^<]*)<", bare)


def test_run_names_carry_benchmark_method_phase_and_trial(smoke_results):
    _, _, runs = _runs(smoke_results)
    expected = {f"smoke/{m}/{p}" for m in METHODS for p in PHASES}
    expected |= {f"smoke/{m}/{p}/t{n:03d}" for m in METHODS for p in PHASES for n in range(2)}
    assert set(runs) == expected
    for name, run in runs.items():
        _, method, phase, *trial = name.split("/")
        tags = run.data.tags
        assert (tags["sharpbench.regularizer"], tags["sharpbench.phase"]) == (method, phase)
        if trial:  # nested under the parent of its method and phase
            assert tags["mlflow.parentRunId"] == runs[f"smoke/{method}/{phase}"].info.run_id


def test_counters_and_costs_are_metrics(smoke_results):
    """Parent runs: trials per status and the phase's passes and wall time, one point per ended
    trial (step = trials ended); trial runs: their passes and wall time, one point per epoch."""
    client, _, runs = _runs(smoke_results)
    rows = read_rows(smoke_results).to_pylist()
    for method in METHODS:
        for phase in PHASES:
            mine = [r for r in rows if (r["regularizer"], r["phase"]) == (method, phase)]
            parent = runs[f"smoke/{method}/{phase}"].info.run_id
            assert _history(client, parent, "trials_completed") == {(1, 1.0), (2, 2.0)}
            assert _history(client, parent, "trials_stopped") == {(1, 0.0), (2, 0.0)}
            assert _history(client, parent, "trials_failed") == {(1, 0.0), (2, 0.0)}
            last = client.get_run(parent).data.metrics  # each metric's latest value
            assert last["phase_forward_passes"] == sum(r["forward_passes"] for r in mine) > 0
            assert last["phase_backward_passes"] == sum(r["backward_passes"] for r in mine) > 0
            assert last["phase_wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in mine), rel=1e-9)
            assert {step for step, _ in _history(client, parent, "phase_forward_passes")} == {1, 2}
            for row in mine:
                trial = row["mlflow_run_id"]
                forward = sorted(_history(client, trial, "forward_passes"))
                assert [step for step, _ in forward] == [1, 2] and forward[0][1] < forward[1][1]
                assert forward[-1][1] == row["forward_passes"]
                assert sorted(_history(client, trial, "backward_passes"))[-1][1] == row["backward_passes"]
                assert {1, 2} <= {step for step, _ in _history(client, trial, "wall_seconds")}


def test_the_report_rides_on_every_parent_run(smoke_results, tmp_path):
    """report.html (figures inlined), the board and the figures of the benchmark and of the
    parent's own method, read back through the client: the files the run wrote."""
    client, _, runs = _runs(smoke_results)
    for method in METHODS:
        for phase in PHASES:
            parent = runs[f"smoke/{method}/{phase}"].info.run_id
            names = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
            figures = {name for name in names if name.endswith(".png")}
            assert names == {"report.html", "leaderboard.md", *figures}
            assert f"smoke-{method}-history.png" in figures and "smoke-compute.png" in figures
            assert not [name for name in figures for other in METHODS if other != method and f"-{other}-" in name]
            folder = tmp_path / f"{method}-{phase}"
            folder.mkdir()
            for name, local in [("report.html", smoke_results / "report.html")] + [
                (name, smoke_results / "figures" / name) for name in figures
            ]:
                attached = Path(client.download_artifacts(parent, f"report/{name}", str(folder)))
                assert attached.read_bytes() == local.read_bytes(), name
            page = (folder / "report.html").read_text()
            assert page.count("<img") >= len(figures) and "smoke" in page
