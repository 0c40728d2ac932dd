"""`sharpbench run --address` joins an existing multi-node Ray cluster (nodes on this machine), and
runs every method at once across its nodes; without --address it never joins one."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from bench.results.parquet import read_rows

# One loopback cluster at a time: a Cluster head takes fixed ports (tests/benchmarks/test_orchestration.py too).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loopback-cluster")]


@contextlib.contextmanager
def _loopback_cluster(*worker_cpus: int):
    """A head (1 CPU) and one worker per entry of ``worker_cpus``, all on this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for cpus in worker_cpus:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def two_node_cluster():
    with _loopback_cluster(1) as cluster:
        yield cluster


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


@pytest.fixture
def three_node_cluster():
    """A head and two workers on loopback; trials may land on any of them."""
    with _loopback_cluster(2, 2) as cluster:
        yield cluster


def _overlap(a: dict, b: dict) -> bool:
    """Whether two rows' trials ran at the same time: from the first start to the row's writing."""
    return a["started_at"] < b["timestamp"] and b["started_at"] < a["timestamp"]


def test_all_methods_search_at_once_across_nodes(three_node_cluster, tmp_path, repo_root):
    import ray
    import yaml

    from bench.run_record import load_records
    from bench.search import default_storage, load_study, study_name

    trials, seeds = 3, [1, 2]
    config = {
        "benchmark": "multinode",
        "dataset": {"name": "digits", "max_train_samples": 256},
        "model": {"name": "mlp", "options": {"hidden": 16}},
        "training": {"epochs": 3, "batch_size": 64},
        "search": {
            "trials_per_method": trials,
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "space": {"learning_rate": {"low": 0.02, "high": 0.3, "log": True}},
        },
        "final": {"seeds": seeds, "top_k": 1},
        "regularizers": ["erm", "sam"],
    }
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            str(path),
            "--results",
            str(results),
            "--address",
            three_node_cluster.address,
            "--quiet",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = read_rows(results).to_pylist()
    search = {m: [r for r in rows if r["regularizer"] == m and r["phase"] == "search"] for m in ("erm", "sam")}
    final = {m: [r for r in rows if r["regularizer"] == m and r["phase"] == "final"] for m in ("erm", "sam")}
    # Equal budgets, exactly: every method its trials, then top-1 × seeds.
    assert {m: len(v) for m, v in search.items()} == {"erm": trials, "sam": trials}
    assert {m: sorted(r["seed"] for r in v) for m, v in final.items()} == {"erm": seeds, "sam": seeds}
    # No barrier between methods: some ERM trial and some SAM trial ran at the same time.
    assert any(_overlap(a, b) for a in search["erm"] + final["erm"] for b in search["sam"] + final["sam"])
    # Trials landed on more than one node of the cluster.
    ray.init(address=three_node_cluster.address, log_to_driver=False)
    try:
        node_ids = {node["NodeID"] for node in ray.nodes()}
    finally:
        ray.shutdown()
    used = {r["node"] for r in rows}
    assert used <= node_ids and len(used) > 1, used
    # Each method's study holds each of its search trials once, with the state its row records.
    instance = load_records(results)["multinode"].instance
    expected_state = {"completed": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"}
    for method, mine in search.items():
        study = load_study(default_storage(results), study_name("multinode", method, instance))
        got = {t.user_attrs["run_id"]: t.state.name for t in study.trials}
        assert got == {r["run_id"]: expected_state[r["status"]] for r in mine}
        # Every epoch a trial ran reached its study (reports carry the epochs between ASHA's
        # rungs), and its value is its last epoch's: the row's.
        row_of = {r["run_id"]: r for r in mine}
        for trial in study.trials:
            row = row_of[trial.user_attrs["run_id"]]
            assert sorted(trial.intermediate_values) == list(range(1, row["epochs_run"] + 1)), (
                row["status"],
                trial.intermediate_values,
            )
            assert trial.value == pytest.approx(row["val_accuracy"], rel=1e-12)
