"""Starting or joining the Ray runtime, and what its nodes hold."""

from __future__ import annotations

import logging
import os

import ray

from bench.config import ResourcesConfig
from bench.preflight import NodeResources

_log = logging.getLogger(__name__)


def node_resources() -> list[NodeResources]:
    """CPUs and GPUs of every live node of the connected Ray runtime, and of every node type its
    autoscaler may still add (:func:`autoscaling_node_types`), for
    :func:`bench.preflight.check_placeable` (a trial must fit on one node: the cluster's totals
    in ``ray.cluster_resources()`` do not say whether it does)."""
    live = [
        NodeResources(cpus=float(node["Resources"].get("CPU", 0.0)), gpus=float(node["Resources"].get("GPU", 0.0)))
        for node in ray.nodes()
        if node.get("Alive")
    ]
    return live + autoscaling_node_types()


def autoscaling_node_types() -> list[NodeResources]:
    """The node types the cluster's autoscaler may add, from the config it publishes in the GCS
    (Ray's autoscaler v2, which KubeRay and ``ray up`` run with ``RAY_enable_autoscaler_v2=1``);
    empty without one. A pool that starts with no workers is then no reason to refuse the run:
    its first pending trial makes the autoscaler add a node."""
    try:
        from ray._private.state import state  # Ray Data reads the autoscaler's limits the same way

        config = state.get_cluster_config()
    except (ImportError, AttributeError, RuntimeError) as error:  # a private API: another Ray may lack it
        _log.debug("no autoscaler config read (%s): sizing from the live nodes alone", error)
        return []
    return node_types_of(config)


def node_types_of(config) -> list[NodeResources]:  # config: ray's autoscaler_pb2.ClusterConfig or None
    """The resources of each node group of an autoscaler's config that may have nodes."""
    if not config:
        return []
    return [
        NodeResources(cpus=float(group.resources.get("CPU", 0.0)), gpus=float(group.resources.get("GPU", 0.0)))
        for group in config.node_group_configs
        if group.max_count != 0 and group.resources
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
