"""Where MLflow's UI shows a benchmark's training runs: the address ``sharpbench run`` prints.

MLflow 3.17's UI (``mlflow/server/js``) chooses an experiment's navigation by a *workflow*,
"GenAI" or "Model training", not by the experiment's ``mlflow.experimentKind`` tag: its
workflow-based navigation is always on, and the workflow is the ``workflowType`` query
parameter of the page, else the one the browser last chose (``localStorage``), GenAI at first.
So ``#/experiments/<id>`` lands a new user on the GenAI overview ("Traces 0"), whatever the tag
says. The address below is what 3.17 honours:

* the runs route ``#/experiments/<id>/runs`` (the bare experiment route redirects to the
  workflow's default tab and drops the query);
* ``workflowType=machine_learning``: the "Model training" navigation (Runs, Models, Traces);
* ``orderByKey=tags.`mlflow.runName```, ascending: the UI's own "Run Name" sort. The UI nests
  child runs under their parent (collapsed) only when sorted by start time with no filter;
  sorted by name, the runs table lists every trial, grouped by the run names
  (:func:`bench.results.vocabulary.run_name`): ``digits/sam/search``, then
  ``digits/sam/search/t000``, ... A user can still re-sort.

Checked in headless chromium against a real ``mlflow server`` (``tests/session/test_mlflow_view.py``).
"""

from __future__ import annotations

import urllib.parse
from typing import Final

#: Where ``mlflow ui`` serves when given no ``--host``/``--port`` (MLflow 3.17: 127.0.0.1:5000).
LOCAL_UI: Final = "http://127.0.0.1:5000"

#: The query of the runs view (see the module docstring), in the order the UI writes it.
RUNS_VIEW_QUERY: Final = {
    "workflowType": "machine_learning",
    "orderByKey": "tags.`mlflow.runName`",
    "orderByAsc": "true",
}


def runs_view_url(ui: str, experiment_id: str) -> str:
    """The page of ``experiment_id``'s training runs in the MLflow UI served at ``ui``:
    ``http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&...``."""
    query = urllib.parse.urlencode(RUNS_VIEW_QUERY)
    return f"{ui.rstrip('/')}/#/experiments/{urllib.parse.quote(experiment_id, safe='')}/runs?{query}"


def served(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` is an MLflow server (its own UI) rather than a store that
    ``mlflow ui --backend-store-uri`` serves."""
    return urllib.parse.urlparse(tracking_uri).scheme in ("http", "https")


def ui_of(tracking_uri: str) -> str | None:
    """Where the UI of ``tracking_uri`` is: the server itself, or :data:`LOCAL_UI` for a store
    (``mlflow ui``'s default address); None for Databricks, whose UI is its own workspace."""
    if served(tracking_uri):
        return tracking_uri
    if tracking_uri.split(":", 1)[0] == "databricks":
        return None
    return LOCAL_UI


__all__ = ["LOCAL_UI", "RUNS_VIEW_QUERY", "runs_view_url", "served", "ui_of"]
