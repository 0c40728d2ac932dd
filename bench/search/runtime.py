"""Starting or joining the Ray runtime, and what its nodes hold."""

from __future__ import annotations

import logging
import os

import ray

from bench.config import ResourcesConfig
from bench.preflight import NodeResources


def node_resources() -> list[NodeResources]:
    """CPUs and GPUs of every live node of the connected Ray runtime, for
    :func:`bench.preflight.check_placeable` (a trial must fit on one node: the cluster's totals
    in ``ray.cluster_resources()`` do not say whether it does)."""
    return [
        NodeResources(cpus=float(node["Resources"].get("CPU", 0.0)), gpus=float(node["Resources"].get("GPU", 0.0)))
        for node in ray.nodes()
        if node.get("Alive")
    ]


def init_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join ``address`` (a running cluster) or start a local runtime.

    ``ray.init`` resets the level of the ``ray`` logger: pass it here, so that Ray's INFO lines
    (instance started, results written) show only with ``verbose``; its warnings always do.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        # "local": always a fresh runtime, never a cluster that another process on this machine
        # started (Ray would otherwise join it, and refuse num_cpus).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=level)


def trial_slots(resources: ResourcesConfig) -> int:
    """How many trials the connected cluster runs at once now (:meth:`ResourcesConfig.slots` of
    its live nodes' resources; the searcher re-reads it while a run goes)."""
    available = ray.cluster_resources()
    return resources.slots(available.get("CPU", 1), available.get("GPU", 0))
