"""What the connected cluster can hold: live nodes, and the node types its autoscaler may add."""

from __future__ import annotations

import pytest
from ray.core.generated import autoscaler_pb2

from bench.config import parse_config
from bench.preflight import NodeResources, PreflightError, check_placeable
from bench.search.runtime import autoscaling_node_types, init_ray, node_resources, node_types_of


def _gpu_config():
    return parse_config(
        {"benchmark": "b", "model": {"name": "mlp"}, "resources": {"gpus_per_trial": 1}, "regularizers": ["erm"]}
    )


def test_an_autoscaler_node_type_makes_a_pool_with_no_workers_placeable() -> None:
    config = autoscaler_pb2.ClusterConfig(
        node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="gpu", resources={"CPU": 8, "GPU": 2}, min_count=0, max_count=4),
            autoscaler_pb2.NodeGroupConfig(name="off", resources={"CPU": 64, "GPU": 8}, min_count=0, max_count=0),
            autoscaler_pb2.NodeGroupConfig(name="cpu", resources={"CPU": 4}, min_count=1, max_count=-1),
        ]
    )
    types = node_types_of(config)
    assert types == [NodeResources(cpus=8.0, gpus=2.0), NodeResources(cpus=4.0, gpus=0.0)]  # max_count 0: never
    head = [NodeResources(cpus=4.0, gpus=0.0)]
    with pytest.raises(PreflightError, match="no trial could ever start"):
        check_placeable(_gpu_config(), head)  # the pool has no worker yet
    check_placeable(_gpu_config(), head + types)  # but the autoscaler can add one that fits
    assert node_types_of(None) == []


def test_a_runtime_without_an_autoscaler_has_its_live_nodes_only() -> None:
    import ray

    init_ray(None, num_cpus=1)
    try:
        assert autoscaling_node_types() == []
        assert node_resources() == [NodeResources(cpus=1.0, gpus=0.0)]
    finally:
        ray.shutdown()
