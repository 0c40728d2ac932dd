"""Bad input exits 2 with one line on stderr and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

GOOD = {"benchmark": "t", "regularizers": ["erm", "sam"], "model": {"name": "mlp"}}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _config(tmp_path: Path, raw) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return str(path)


CASES = {
    "unknown key": ({**GOOD, "trainig": {}}, ["unknown key 'trainig'", "training"]),
    "unknown nested key": ({**GOOD, "training": {"epoch": 3}}, ["unknown key 'training.epoch'", "epochs"]),
    "unknown regularizer": ({**GOOD, "regularizers": ["erm", "samm"]}, ["unknown regularizer 'samm'", "did you mean 'sam'", "asam"]),
    "unknown dataset": ({**GOOD, "dataset": {"name": "digitz"}}, ["unknown dataset 'digitz'", "digits"]),
    "unknown model": ({**GOOD, "model": {"name": "cnnn"}}, ["unknown model 'cnnn'", "mlp"]),
    "bad range": ({**GOOD, "search": {"space": {"learning_rate": {"low": 0.5, "high": 0.1}}}}, ["bad range", "learning_rate"]),
    "log range through zero": ({**GOOD, "search": {"space": {"learning_rate": {"low": 0, "high": 0.1, "log": True}}}}, ["log range needs low > 0"]),
    "unknown hyperparameter": ({**GOOD, "regularizers": [{"name": "sam", "fixed": {"rho": 0.1}}]}, ["unknown hyperparameter 'rho'", "perturbation_radius"]),
    "bad hyperparameter value": ({**GOOD, "regularizers": [{"name": "sam", "fixed": {"perturbation_radius": -1.0}}]}, ["perturbation_radius must be >= 0"]),
    "unknown search space key": ({**GOOD, "search": {"space": {"learning_rat": {"low": 0.1, "high": 0.2}}}}, ["unknown search space key 'learning_rat'", "learning_rate"]),
    "unknown sampler": ({**GOOD, "search": {"sampler": "tpee"}}, ["search.sampler.name", "'tpe'", "'cmaes'"]),
    "negative startup trials": ({**GOOD, "search": {"sampler": {"name": "tpe", "n_startup_trials": -1}}}, ["n_startup_trials"]),
    "unknown budget": ({**GOOD, "search": {"budget": "flops"}}, ["search.budget.kind", "'passes'"]),
    "passes scaling epochs with epochs searched": (
        {**GOOD, "search": {"budget": {"kind": "passes", "scale": "epochs"}, "space": {"epochs": {"low": 1, "high": 3}}}},
        ["cannot be combined with epochs in search.space"],
    ),
    "repeated final seeds": ({**GOOD, "final": {"seeds": [1, 2, 1]}}, ["final.seeds", "repeated: 1"]),
    "top_k of zero": ({**GOOD, "final": {"seeds": [1], "top_k": 0}}, ["final.top_k"]),
    "renamed flatness key": ({**GOOD, "flatness": {"trace_probes": 20}}, ["flatness: trace_probes was replaced by trace_rel_stderr"]),
    "flatness probe range": ({**GOOD, "flatness": {"trace_min_probes": 50, "trace_max_probes": 20}}, ["trace_max_probes (20) must be >= trace_min_probes (50)"]),
    "invalid yaml": ("benchmark: [unclosed\n", ["invalid YAML"]),
    "not a mapping": ("- just\n- a list\n", ["expected a mapping"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_2_with_one_line(tmp_path, case):
    raw, fragments = CASES[case]
    done = _run("run", _config(tmp_path, raw), "--results", str(tmp_path / "results"))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


def test_missing_config_file(tmp_path):
    done = _run("run", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "config file not found" in done.stderr and "Traceback" not in done.stderr


def test_leaderboard_on_missing_folder(tmp_path):
    done = _run("leaderboard", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "results folder not found" in done.stderr


def test_list_json_describes_every_hyperparameter():
    import json

    import regularizers

    done = _run("list", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert set(listed) == set(regularizers.available())
    radius = next(h for h in listed["sam"]["hyperparameters"] if h["name"] == "perturbation_radius")
    assert radius["domain"] == {"type": "float", "low": 0.01, "high": 0.5, "scale": "log"}
    assert radius["default"] == 0.05


def test_help_explains_commands():
    done = _run("--help")
    assert done.returncode == 0
    for command in ("run", "leaderboard", "list"):
        assert command in done.stdout


def test_perf_json_rows_carry_medians_and_spreads():
    import json

    done = _run("perf", "--model", "mlp", "--method", "sam", "--method", "nso", "--batch-size", "16", "--warmup", "1", "--repeats", "4", "--format", "json")
    assert done.returncode == 0, done.stderr
    timings = {t["method"]: t for t in json.loads(done.stdout)}
    assert set(timings) == {"erm", "sam", "nso"}  # erm always joins as the reference
    assert (timings["sam"]["forward_passes"], timings["sam"]["backward_passes"]) == (2, 2)
    assert (timings["nso"]["forward_passes"], timings["nso"]["backward_passes"]) == (2, 2)  # no BatchNorm in the MLP
    # erm's per-round ratios are t / t: exactly 1.0, so its quartiles are exactly 1 (and survive JSON)
    assert timings["erm"]["ratio_to_erm"] == {"median": 1.0, "q1": 1.0, "q3": 1.0, "iqr": 0.0, "n": 4}
    for t in timings.values():
        for name in ("step_seconds", "ratio_to_erm", "overhead"):
            spread = t[name]
            assert spread["n"] == 4 and spread["q1"] <= spread["median"] <= spread["q3"]
            # iqr is q3 - q1 of the same float64 values; JSON round-trips float64 exactly
            assert abs(spread["iqr"] - (spread["q3"] - spread["q1"])) <= 1e-14 * spread["q3"]
        scale = t["pass_equivalents"] / timings["erm"]["pass_equivalents"]
        # per-round overhead = per-round ratio / scale; the median commutes with the scaling
        assert abs(t["overhead"]["median"] - t["ratio_to_erm"]["median"] / scale) <= 1e-14 * t["overhead"]["median"]
        assert isinstance(t["reliable"], bool) and (t["reason"] is None) is t["reliable"]


def test_perf_table_marks_unreliable_figures_and_explains_them():
    # 2 rounds are below the 4 needed for a spread: every row must be marked, whatever the load.
    done = _run("perf", "--model", "mlp", "--method", "l1", "--batch-size", "8", "--warmup", "0", "--repeats", "2")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ mlp")]
    assert len(rows) == 2 and all(line.count(" ?") >= 3 for line in rows), done.stdout
    assert "± is the interquartile range" in done.stdout and "unreliable ('?')" in done.stdout
    assert "? mlp/erm: 2 rounds < 4" in done.stdout and "? mlp/l1: 2 rounds < 4" in done.stdout
    assert "1-minute load average" in done.stdout


def test_perf_rejects_unknown_model():
    done = _run("perf", "--model", "resnet19")
    assert done.returncode == 2 and "unknown model 'resnet19' (did you mean 'resnet18'?)" in done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "fragment"),
    [("nonsense", "expected 'auto', HOST:PORT or ray://HOST:PORT"), (f"127.0.0.1:{_free_port()}", "no Ray cluster answers at 127.0.0.1:")],
)
def test_unreachable_ray_address_fails_fast(tmp_path, repo_root, address, fragment):
    done = _run("run", str(repo_root / "configs/smoke.yaml"), "--results", str(tmp_path / "results"), "--address", address)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_unusable_tracking_uri_fails_before_any_trial(tmp_path, repo_root):
    done = _run("run", str(repo_root / "configs/smoke.yaml"), "--results", str(tmp_path / "results"), "--tracking-uri", "ftp://nowhere")
    assert done.returncode == 2, done.stderr
    assert "cannot use MLflow tracking URI ftp://nowhere" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results" / "ray").exists()  # Ray never started


@pytest.mark.parametrize("option", ["--repeats", "--block-steps", "--batch-size"])
def test_bad_option_value_exits_2(option):
    done = _run("perf", option, "0")
    assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr and "Traceback" not in done.stderr


def test_perf_help_states_the_reliability_rule():
    from bench.perf import EFFECT_IN_IQRS, MAX_RELATIVE_STEP_IQR, MIN_ROUNDS, OVERHEAD_RESOLUTION, TARGET_OVERHEAD

    done = _run("perf", "--help")
    text = " ".join(done.stdout.split())  # click re-wraps the docstring
    assert done.returncode == 0
    for fragment in (f"fewer than {MIN_ROUNDS} rounds", f"exceeds {MAX_RELATIVE_STEP_IQR:.0%} of its median",
                     f"exceeds both {OVERHEAD_RESOLUTION:.2f} and |overhead - 1| / {EFFECT_IN_IQRS}.", f"<= {TARGET_OVERHEAD}"):
        assert fragment in text, fragment


def test_perf_rejects_unknown_device_and_method():
    done = _run("perf", "--device", "tpu")
    assert done.returncode == 2 and "unknown device 'tpu'" in done.stderr and done.stderr.count("\n") == 1
    done = _run("perf", "--method", "samm")
    assert done.returncode == 2 and "unknown regularizer 'samm'" in done.stderr and done.stderr.count("\n") == 1


def _results_with(tmp_path: Path, methods: tuple[str, ...]) -> Path:
    from bench.results.parquet import ParquetSink
    from tests.results.conftest import make_row

    sink = ParquetSink(tmp_path)
    sink.write([make_row(regularizer=m) for m in methods])
    return tmp_path


def test_leaderboard_unknown_baseline_lists_the_methods(tmp_path):
    results = _results_with(tmp_path, ("erm", "sam"))
    done = _run("leaderboard", str(results), "--baseline", "samm")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--baseline 'samm'" in lines[0] and "methods present: erm, sam" in lines[0]
    bad_alpha = _run("leaderboard", str(results), "--alpha", "1.5")
    assert bad_alpha.returncode == 2 and "--alpha must lie strictly between 0 and 1" in bad_alpha.stderr
    assert "Traceback" not in done.stderr + bad_alpha.stderr


def test_leaderboard_baseline_and_alpha_reach_the_board(tmp_path):
    import json

    results = _results_with(tmp_path, ("erm", "sam"))
    done = _run("leaderboard", str(results), "--baseline", "sam", "--alpha", "0.1", "--format", "json")
    assert done.returncode == 0, done.stderr
    (board,) = json.loads(done.stdout)
    assert (board["baseline"], board["alpha"]) == ("sam", 0.1)
    # the default baseline erm is absent here: a note, not an error
    only_sam = _results_with(tmp_path / "only_sam", ("sam",))
    done = _run("leaderboard", str(only_sam), "--format", "json")
    assert done.returncode == 0, done.stderr
    (board,) = json.loads(done.stdout)
    assert board["baseline"] is None and "no rows of baseline 'erm'" in board["baseline_note"]
