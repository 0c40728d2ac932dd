"""The address of a benchmark's training runs in MLflow's UI, and hostile run names in that UI:
a real ``mlflow server`` on loopback rendered by headless chromium (Debian's)."""

from __future__ import annotations

import pytest

from bench.results.mlflow_sink import MlflowSink, default_tracking_uri
from bench.results.mlflow_ui import LOCAL_UI, runs_view_url, served, ui_of
from bench.results.schema import Phase
from bench.results.sinks import MlflowTrialSink, TrialStart
from bench.results.vocabulary import ParentRun, TrialRun
from tests.report.test_browser import CHROMIUM, chromium

#: Method names that would mark the page if the UI ran them (no "/": a run name's part keeps none).
IMG = "<img src=x onerror=document.body.dataset.pwned=1>"
SCRIPT = "<script>document.body.dataset.pwned=2</script>"


def test_the_runs_view_address():
    assert runs_view_url("http://127.0.0.1:5000/", "12") == (
        "http://127.0.0.1:5000/#/experiments/12/runs"
        "?workflowType=machine_learning&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    )
    assert runs_view_url("https://host/mlflow", "a/b").startswith("https://host/mlflow/#/experiments/a%2Fb/runs?")


@pytest.mark.parametrize(
    ("uri", "ui"),
    [
        ("sqlite:////tmp/r/mlflow.db", LOCAL_UI),  # served by `mlflow ui --backend-store-uri ...`
        ("file:///tmp/r/mlruns", LOCAL_UI),
        ("postgresql://db.example/mlflow", LOCAL_UI),
        ("http://127.0.0.1:5917", "http://127.0.0.1:5917"),  # a server is its own UI
        ("https://mlflow.example/prefix", "https://mlflow.example/prefix"),
        ("databricks", None),  # its UI is the workspace's
        ("databricks://profile", None),
    ],
)
def test_where_a_stores_ui_is(uri, ui):
    assert ui_of(uri) == ui
    assert served(uri) == uri.startswith("http")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`)")
def test_hostile_run_names_show_as_text_in_the_runs_view(tmp_path, mlflow_servers):
    store = tmp_path / "store"
    sink = MlflowTrialSink(MlflowSink(default_tracking_uri(store), experiment_name="unit"))
    for i, method in enumerate((IMG, SCRIPT)):
        parent = ParentRun(f"unit-{i}-search", "unit", method, Phase.SEARCH, {}, None)
        trial = TrialRun(f"unit-{i}-search/t", "unit", method, Phase.SEARCH, 0, "{}", "{}", ordinal=0)
        sink.start(TrialStart(trial, parent))
    server = mlflow_servers(store)
    dom = chromium(runs_view_url(server.url, sink.sink.experiment_id), "--dump-dom", "--window-size=1400,1000")
    assert "data-pwned" not in dom  # neither payload ran
    # Each name is on the page as text, whole: the trial's and its parent's.
    assert "unit/&lt;img src=x onerror=document.body.dataset.pwned=1&gt;/search/t000" in dom
    assert "unit/&lt;img src=x onerror=document.body.dataset.pwned=1&gt;/search<" in dom
    assert "unit/&lt;script&gt;document.body.dataset.pwned=2&lt;_script&gt;/search/t000" in dom
