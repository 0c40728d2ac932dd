"""Equal-budget searches with Ray Tune + Optuna: the only package that imports ray and optuna.

One Tune experiment runs the whole benchmark (:mod:`.driver`): a routing searcher asks one
persisted Optuna study per method (:mod:`.searcher`, :mod:`.studies`, :mod:`.space`) and queues
each method's final seeds when its own search ends (:mod:`.finals`); each method's trials get
their own ASHA (:mod:`.scheduler`); one trainable runs any trial (:mod:`.trainable`); one
driver-side callback is the single writer of Parquet and MLflow (:mod:`.sink`), bound to the
live run (:mod:`.live`), so trials on other nodes need no access to the results folder or the
tracking store.
"""

from bench.search.driver import SearchInterrupted, experiment_name, run_benchmark
from bench.search.finals import select_for_final
from bench.search.runtime import init_ray, node_resources
from bench.search.space import DefineByRun, make_sampler, sampler_settings
from bench.search.studies import default_storage, study_name

__all__ = [
    "DefineByRun",
    "SearchInterrupted",
    "default_storage",
    "experiment_name",
    "init_ray",
    "make_sampler",
    "node_resources",
    "run_benchmark",
    "sampler_settings",
    "select_for_final",
    "study_name",
]
