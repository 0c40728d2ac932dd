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
    """A head (1 CPU, no GPU) and one worker per entry of ``worker_cpus``, all on this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
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


GROWING_DRIVER = """
import sys
from pathlib import Path
from bench.benchmarks.orchestration import Setup, SimulatedTraining
from bench.config import parse_config
from bench.plan import plan_methods
from bench.results.mlflow_sink import default_tracking_uri
from bench.search import init_ray, run_benchmark

address, results = sys.argv[1], Path(sys.argv[2])
# Trials of 6 s (ERM) and 12 s (SAM): long beside a new node's worker start-up on a busy machine.
setup = Setup(methods=("erm", "sam"), trials_per_method=6, epochs=3, epoch_seconds=2.0, seeds=(1,), grace_period=3)
# Random search: a model-based sampler's trials wait for its startup trials (the startup rule),
# which would leave slots idle by design and hide what this test measures.
raw = setup.config("growing").model_dump(mode="json")
raw["search"]["sampler"] = {"name": "random"}
config = parse_config(raw)
trial = SimulatedTraining(setup.epoch_seconds, {p.regularizer: p.passes_per_step for p in plan_methods(config)})
init_ray(address)
run_benchmark(config, results_dir=results, tracking_uri=default_tracking_uri(results), trial_function=trial)
"""


def test_nodes_added_mid_run_get_trials_within_seconds(tmp_path, repo_root):
    """An autoscaling cluster: the run starts with one GPU (one slot); two more GPUs join while it
    runs. The searcher re-reads the cluster's resources, so the new slots fill within seconds,
    and before they joined no more trials ran than the one slot held (it asks only for slots
    that exist). Simulated trials (sleeps, bench.benchmarks.orchestration): the figure is the
    scheduler's, not this machine's cores."""
    import time

    from bench.benchmarks.orchestration import intervals_from_rows

    results = tmp_path / "results"
    with _loopback_cluster() as cluster:
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        driver = subprocess.Popen(
            [sys.executable, "-c", GROWING_DRIVER, cluster.address, str(results)],
            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while read_rows(results, problems=[]).num_rows < 1 and driver.poll() is None:
            assert time.monotonic() < deadline, "no trial ended in 5 minutes"
            time.sleep(0.2)  # a trial ended on the one slot first
        cluster.add_node(num_cpus=2, num_gpus=2)  # Ray's own test cluster: a node's processes start here
        cluster.wait_for_nodes()
        joined = time.time()
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, output[-3000:]
        (tmp_path / "driver.log").write_text(output)
    rows = read_rows(results).to_pylist()
    assert len(rows) == 2 * (6 + 1)
    intervals = intervals_from_rows(rows)

    def running(at: float) -> int:
        return sum(i.start <= at < i.end for i in intervals)

    starts = sorted(i.start for i in intervals)
    before = [t for t in starts if t < joined]
    assert before and max(running(t) for t in before) == 1  # one slot, one trial at a time
    full = [t for t in starts if t >= joined and running(t) >= 3]
    timeline = sorted((round(i.start - joined, 1), round(i.end - joined, 1), i.node[:6]) for i in intervals)
    assert full, f"the two new slots were never used: {timeline}\n{(tmp_path / 'driver.log').read_text()[-4000:]}"
    assert full[0] - joined < 30, f"the new slots filled {full[0] - joined:.1f} s after the nodes joined"
    print(f"new slots filled {full[0] - joined:.1f} s after the nodes joined")
