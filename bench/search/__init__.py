"""Equal-budget searches with Ray Tune + Optuna: the only package that imports ray and optuna.

One Tune experiment runs the whole benchmark (:mod:`.driver`): a routing searcher asks one
persisted Optuna study per method (:mod:`.searcher`, :mod:`.studies`, :mod:`.space`) and queues
each method's final seeds when its own search ends (:mod:`.finals`); each method's trials get
their own ASHA (:mod:`.scheduler`); one trainable runs any trial (:mod:`.trainable`) and reports
at ASHA's rungs, its checkpoints and its end, and in batches in between (:mod:`.reporting`); one
driver-side callback is the single writer of Parquet and MLflow (:mod:`.sink`), bound to the
live run (:mod:`.live`), so trials on other nodes need no access to the results folder or the
tracking store.

The names below are imported on first use (PEP 562): a Tune worker unpickles
:func:`.trainable.run_trial`, which imports this package first, and must not pay for the
driver's imports (MLflow, Optuna, SciPy: about a second per worker process, measured).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchInterrupted": "bench.search.driver",
    "experiment_name": "bench.search.driver",
    "run_benchmark": "bench.search.driver",
    "select_for_final": "bench.search.finals",
    "init_ray": "bench.search.runtime",
    "node_resources": "bench.search.runtime",
    "DefineByRun": "bench.search.space",
    "make_sampler": "bench.search.space",
    "sampler_settings": "bench.search.space",
    "absolute_storage": "bench.search.studies",
    "default_storage": "bench.search.studies",
    "load_study": "bench.search.studies",
    "study_name": "bench.search.studies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
