"""`sharpbench run --address` joins an existing multi-node Ray cluster (two nodes on this machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.results.parquet import read_rows

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_run_joins_an_existing_cluster(two_node_cluster, tmp_path, repo_root):
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(repo_root / "configs/smoke.yaml"), "--results", str(results),
         "--address", two_node_cluster.address],
        cwd=repo_root, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = read_rows(results)
    assert table.num_rows == 8  # 4 search trials + 4 final runs
    assert set(table.column("status").to_pylist()) == {"completed"}


def test_local_run_starts_its_own_runtime_beside_a_running_cluster(two_node_cluster, repo_root):
    """Without --address a run starts a fresh local runtime, even though ray.init() alone would join
    the cluster this machine started last (here, the fixture's; on a shared box, anyone's)."""
    code = (
        "import ray; from bench.search import init_ray; init_ray(None, num_cpus=1); "
        "print(ray.get_runtime_context().gcs_address); ray.shutdown()"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] != two_node_cluster.address
