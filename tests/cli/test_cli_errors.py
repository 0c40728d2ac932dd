"""Bad input exits 2 with one line on stderr and no traceback, before anything starts or is written."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.plugins import env_with_site, install_distribution
from tests.runner import sharpbench

GOOD = {"benchmark": "t", "regularizers": ["erm", "sam"], "model": {"name": "mlp"}}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return sharpbench(*args, timeout=120, env=env)


def _config(tmp_path: Path, raw) -> str:
    path = tmp_path / "bad.yaml"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return str(path)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Each malformed input: the config (a mapping, YAML text or raw bytes), the fragments its one
# error line must contain, and the extra `run` options it is given.
CASES = {
    "unknown key": ({**GOOD, "trainig": {}}, ["unknown key 'trainig'", "training"]),
    "unknown nested key": ({**GOOD, "training": {"epoch": 3}}, ["unknown key 'training.epoch'", "epochs"]),
    # a typo'd required key is named as a typo, not as the required key it left missing
    "misspelt required key": (
        {k if k != "regularizers" else "regularisers": v for k, v in GOOD.items()},
        ["unknown key 'regularisers'", "did you mean 'regularizers'"],
    ),
    "unknown regularizer": (
        {**GOOD, "regularizers": ["erm", "samm"]},
        ["unknown regularizer 'samm'", "did you mean 'sam'", "asam"],
    ),
    "unknown dataset": ({**GOOD, "dataset": {"name": "digitz"}}, ["unknown dataset 'digitz'", "digits"]),
    "unknown model": ({**GOOD, "model": {"name": "cnnn"}}, ["unknown model 'cnnn'", "mlp"]),
    "bad range": (
        {**GOOD, "search": {"space": {"learning_rate": {"low": 0.5, "high": 0.1}}}},
        ["bad range", "learning_rate"],
    ),
    "log range through zero": (
        {**GOOD, "search": {"space": {"learning_rate": {"low": 0, "high": 0.1, "log": True}}}},
        ["log range needs low > 0"],
    ),
    "unknown hyperparameter": (
        {**GOOD, "regularizers": [{"name": "sam", "fixed": {"rho": 0.1}}]},
        ["unknown hyperparameter 'rho'", "perturbation_radius"],
    ),
    "bad hyperparameter value": (
        {**GOOD, "regularizers": [{"name": "sam", "fixed": {"perturbation_radius": -1.0}}]},
        ["perturbation_radius must be >= 0"],
    ),
    "unknown search space key": (
        {**GOOD, "search": {"space": {"learning_rat": {"low": 0.1, "high": 0.2}}}},
        ["unknown search space key 'learning_rat'", "learning_rate"],
    ),
    "unknown sampler": ({**GOOD, "search": {"sampler": "tpee"}}, ["search.sampler.name", "'tpe'", "'cmaes'"]),
    "negative startup trials": (
        {**GOOD, "search": {"sampler": {"name": "tpe", "n_startup_trials": -1}}},
        ["n_startup_trials"],
    ),
    "unknown budget": ({**GOOD, "search": {"budget": "flops"}}, ["search.budget.kind", "'passes'"]),
    "passes scaling epochs with epochs searched": (
        {
            **GOOD,
            "search": {"budget": {"kind": "passes", "scale": "epochs"}, "space": {"epochs": {"low": 1, "high": 3}}},
        },
        ["cannot be combined with epochs in search.space"],
    ),
    "repeated final seeds": ({**GOOD, "final": {"seeds": [1, 2, 1]}}, ["final.seeds", "repeated: 1"]),
    "final seeds [1, 1]": ({**GOOD, "final": {"seeds": [1, 1]}}, ["final.seeds", "repeated: 1"]),
    "top_k of zero": ({**GOOD, "final": {"seeds": [1], "top_k": 0}}, ["final.top_k"]),
    "renamed flatness key": (
        {**GOOD, "flatness": {"trace_probes": 20}},
        ["flatness: trace_probes was replaced by trace_rel_stderr"],
    ),
    "flatness probe range": (
        {**GOOD, "flatness": {"trace_min_probes": 50, "trace_max_probes": 20}},
        ["trace_max_probes (20) must be >= trace_min_probes (50)"],
    ),
    "invalid yaml": ("benchmark: [unclosed\n", ["invalid YAML"]),
    "not a mapping": ("- just\n- a list\n", ["expected a mapping"]),
    "empty config": ("# nothing yet\n", ["the config is empty", "benchmark, regularizers"]),
    "a key given twice": (
        "benchmark: t\nregularizers: [erm]\ntraining:\n  epochs: 50\n  epochs: 5\n",
        ["invalid YAML (line 5)", "'epochs' appears twice"],
    ),
    "a boolean for a number": (
        {**GOOD, "training": {"epochs": True}},
        ["training.epochs: expected a number, got the boolean true"],
    ),
    "a boolean for a seed": (
        {**GOOD, "final": {"seeds": [1, False]}},
        ["final.seeds: expected a number, got the boolean false"],
    ),
    # bytes that are not UTF-8 (0xff never occurs in UTF-8): a binary file given as the config
    "binary config file": (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary", ["cannot read config", "not UTF-8 text"]),
    "unknown model option": (
        {**GOOD, "model": {"name": "mlp", "options": {"bogus": 3}}},
        ["model.options", "'bogus'", "valid: depth, hidden"],
    ),
    "misspelled model option": (
        {**GOOD, "model": {"name": "mlp", "options": {"hiden": 64}}},
        ["did you mean 'hidden'?"],
    ),
    "negative model width": (
        {**GOOD, "model": {"name": "mlp", "options": {"hidden": -4}}},
        ["model.options {hidden: -4} do not build model 'mlp'", "negative dimension"],
    ),
    "model option of the wrong type": (
        {**GOOD, "model": {"name": "mlp", "options": {"depth": "two"}}},
        ["model.options {depth: 'two'} do not build model 'mlp'"],
    ),
    "impossible model depth": (
        {**GOOD, "model": {"name": "wrn16_8", "options": {"dropout": 1.5}}},
        ["do not build model 'wrn16_8'", "dropout must be in [0, 1)"],
    ),
    "words as learning-rate choices": (
        {**GOOD, "search": {"space": {"learning_rate": {"choices": ["fast", "slow"]}}}},
        ["choices for learning_rate must be numbers", "'fast'"],
    ),
    "fractional epoch choices": (
        {**GOOD, "search": {"space": {"epochs": {"choices": [1.5, 3]}}}},
        ["choices for epochs must be whole numbers"],
    ),
    "L2 twice": (
        {**GOOD, "regularizers": ["erm", "weight_decay"], "training": {"weight_decay": 5.0e-4}},
        ["training.weight_decay (0.0005)", "both apply an L2 penalty", "set training.weight_decay: 0"],
    ),
    "L2 searched twice": (
        {
            **GOOD,
            "regularizers": ["weight_decay"],
            "search": {"space": {"weight_decay": {"low": 1.0e-5, "high": 1.0e-3, "log": True}}},
        },
        ["searched in search.space", "both apply an L2 penalty"],
    ),
    "more CPUs per trial than this machine": (
        {**GOOD, "resources": {"cpus_per_trial": 64}},
        ["resources.cpus_per_trial is 64", "at most 2 CPUs", "no trial could ever start"],
        ["--num-cpus", "2"],
    ),
    "a fraction of several GPUs": (
        {**GOOD, "resources": {"gpus_per_trial": 1.5}},
        ["resources.gpus_per_trial is 1.5", "whole number"],
    ),
    # no test machine has 1024 GPUs on one node, so this can never be placed anywhere
    "more GPUs per trial than this machine": (
        {**GOOD, "resources": {"gpus_per_trial": 1024}},
        ["resources.gpus_per_trial is 1024", "no trial could ever start"],
    ),
    "unroutable tracking server": (
        GOOD,
        ["no MLflow tracking server answers at http://127.0.0.1:1 within 3 s"],
        ["--tracking-uri", "http://127.0.0.1:1"],
    ),
    # MLflow 3 refuses its file store (a paragraph, after Ray started); one line before anything
    "tracking URI that is a folder": (
        GOOD,
        [
            "cannot use MLflow tracking URI /nonexistent-sharpbench/mlruns",
            "MLFLOW_ALLOW_FILE_STORE=true",
            "e.g. sqlite:////nonexistent-sharpbench/mlruns.db",
        ],
        ["--tracking-uri", "/nonexistent-sharpbench/mlruns"],
    ),
    "tracking URI of no store": (
        GOOD,
        ["cannot use MLflow tracking URI ftp://nowhere", "scheme 'ftp'", "sqlite"],
        ["--tracking-uri", "ftp://nowhere"],
    ),
    # loopback only: a port nobody listens on refuses at once (never send traffic off this machine)
    "no Ray cluster at the address": (
        GOOD,
        ["no Ray cluster answers at 127.0.0.1:"],
        ["--address", f"127.0.0.1:{_free_port()}"],
    ),
    "malformed address": (GOOD, ["expected 'auto', HOST:PORT or ray://HOST:PORT"], ["--address", "nonsense"]),
    # ":1234:" is one of rich's emoji codes (🔢): printed as written (loopback, a port nobody uses)
    "an address that reads as an emoji code": (
        GOOD,
        ["no Ray cluster answers at 127.0.0.1:1234: "],
        ["--address", "127.0.0.1:1234"],
    ),
    "a results folder with [markup]": (
        GOOD,
        ["cannot create results folder", "/[bold]x"],
        ["--results", f"{Path(__file__).resolve()}/[bold]x"],
    ),
    "quiet and verbose": (GOOD, ["--quiet and --verbose exclude each other"], ["--quiet", "--verbose"]),
    # Path("") is "."; the run would fill the working folder
    "empty results folder name": (GOOD, ["--results is empty"], ["--results", ""]),
    "empty tracking URI": (GOOD, ["--tracking-uri is empty"], ["--tracking-uri", ""]),
    "Optuna storage that is no URL": (
        GOOD,
        ["cannot use Optuna storage 'optuna.db'", "neither a SQLAlchemy URL", "nor an Optuna journal file"],
        ["--optuna-storage", "optuna.db"],
    ),
    "Optuna journal in no folder": (
        GOOD,
        ["cannot use Optuna storage", "/nonexistent-sharpbench is not an existing folder"],
        ["--optuna-storage", "/nonexistent-sharpbench/optuna.journal"],
    ),
    # no test machine installs MySQLdb: a database whose driver is missing is named before anything runs
    "Optuna storage without its driver": (
        GOOD,
        ["cannot use Optuna storage 'mysql+mysqldb://u@127.0.0.1/db'", "MySQLdb"],
        ["--optuna-storage", "mysql+mysqldb://u@127.0.0.1/db"],
    ),
    "Optuna storage in the config": ({**GOOD, "optuna_storage": "nowhere"}, ["cannot use Optuna storage 'nowhere'"]),
    "Optuna sqlite file under a file": (
        GOOD,
        ["is not an existing folder"],
        ["--optuna-storage", f"sqlite:///{Path(__file__).resolve()}/o.db"],
    ),
    # this very test file: a file that is not an SQLite database
    "Optuna sqlite storage that is not a database": (
        GOOD,
        ["is not an SQLite database"],
        ["--optuna-storage", f"sqlite:///{Path(__file__).resolve()}"],
    ),
    "Optuna sqlite storage that is a folder": (
        GOOD,
        ["is a folder, not a database file"],
        ["--optuna-storage", f"sqlite:///{Path(__file__).resolve().parent}"],
    ),
    "MLflow sqlite store in no folder": (
        GOOD,
        ["cannot use MLflow tracking URI", "/nonexistent-sharpbench is not an existing folder"],
        ["--tracking-uri", "sqlite:////nonexistent-sharpbench/mlflow.db"],
    ),
    "infinite learning rate": (
        {**GOOD, "training": {"learning_rate": float("inf")}},
        ["training.learning_rate", "finite number"],
    ),
    "seed beyond 64 bits": ({**GOOD, "seed": 2**70}, ["seed", "less than or equal to 9223372036854775807"]),
    # the schedule would never reach its learning rate: refused, not trained
    "warm-up longer than training": (
        {**GOOD, "training": {"epochs": 3, "warmup_epochs": 5}},
        ["training: warmup_epochs (5) is longer than epochs (3)"],
    ),
    "split leaving no training data": (
        {**GOOD, "dataset": {"name": "digits", "val_fraction": 0.7, "test_fraction": 0.5}},
        ["val_fraction (0.7) + test_fraction (0.5) must stay below 1"],
    ),
}

#: Refusals must come within this many seconds of starting the command. A bound on a hang (the
#: failures this table guards against took 39-264 s, or forever), not a speed target: a refusal
#: costs a Python start and the imports of torch and the config: 2-3 s idle, up to 15 s measured with
#: two test suites on the 2 cores (load 7-9).
REFUSED_WITHIN_S = 30.0


def _assert_refused(done: subprocess.CompletedProcess, elapsed: float, fragments: list[str]) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert elapsed < REFUSED_WITHIN_S, f"refused after {elapsed:.1f} s"


def _timed_run(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = _run(*args, env=env)
    return done, time.monotonic() - started


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_before_anything_starts(tmp_path, case):
    raw, fragments, *options = CASES[case]
    results = tmp_path / "results"
    done, elapsed = _timed_run(
        "run", _config(tmp_path, raw), "--results", str(results), *(options[0] if options else [])
    )
    _assert_refused(done, elapsed, fragments)
    assert not results.exists()  # nothing started, nothing written


def test_distinct_malformed_inputs_cover_the_issue():
    # the table plus the tests below (cuda device, results folders x3, a failing plug-in, a missing
    # config file, an existing results folder left untouched)
    assert len(CASES) + 7 >= 30


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: device cuda is valid here")
def test_cuda_device_without_cuda_exits_2(tmp_path):
    results = tmp_path / "results"
    done, elapsed = _timed_run(
        "run", _config(tmp_path, {**GOOD, "training": {"device": "cuda"}}), "--results", str(results)
    )
    _assert_refused(done, elapsed, ["training.device is 'cuda' but this machine has no CUDA device"])
    assert not results.exists()


def _unusable_results(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A --results path that can never be a writable folder (tests run as root, which ignores
    permission bits: a regular file in the way, or a kernel file system, blocks it for root too)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    if kind == "under a file":
        return blocker / "results", f"{blocker} is a file, not a folder"
    if kind == "a file":
        return blocker, f"results folder {blocker} is a file, not a folder"
    return Path("/proc/sharpbench-results"), "cannot create results folder /proc/sharpbench-results"


@pytest.mark.parametrize("kind", ["under a file", "a file", "in /proc"])
def test_unusable_results_folder_exits_2(tmp_path, kind):
    results, fragment = _unusable_results(tmp_path, kind)
    config = _config(tmp_path, GOOD)
    before = sorted(p.name for p in tmp_path.iterdir())
    done, elapsed = _timed_run("run", config, "--results", str(results))
    _assert_refused(done, elapsed, [fragment])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    assert not results.exists() or results.is_file()


def test_existing_results_folder_is_left_untouched(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("earlier work\n")
    done, elapsed = _timed_run(
        "run", _config(tmp_path, {**GOOD, "model": {"name": "mlp", "options": {"bogus": 3}}}), "--results", str(results)
    )
    _assert_refused(done, elapsed, ["'bogus'"])
    assert [p.name for p in results.iterdir()] == ["keep.txt"]


def test_plugin_that_fails_to_import_exits_2(tmp_path):
    # a real distribution on sys.path whose entry point raises on import, with a two-line message
    site = install_distribution(
        tmp_path / "site",
        "broken_plugin",
        'raise ImportError("needs libfoo 2.0\\nsecond line of the message")\n',
        {"sharpbench.regularizers": {"broken": "broken_plugin:Broken"}},
    )
    env = env_with_site(site)
    results = tmp_path / "results"
    expected = ["plugin 'broken' (broken_plugin:Broken) failed to load: ImportError: needs libfoo 2.0"]
    done, elapsed = _timed_run("run", _config(tmp_path, GOOD), "--results", str(results), env=env)
    _assert_refused(done, elapsed, expected)
    assert not results.exists()
    listed, elapsed = _timed_run("list", env=env)
    _assert_refused(listed, elapsed, expected)


def test_missing_config_file(tmp_path):
    done, elapsed = _timed_run("run", str(tmp_path / "nope.yaml"), "--results", str(tmp_path / "results"))
    _assert_refused(done, elapsed, ["config file not found"])
    assert not (tmp_path / "results").exists()


def test_leaderboard_on_missing_folder(tmp_path):
    done = _run("leaderboard", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "results folder not found" in done.stderr
    done = _run("leaderboard", "/dev/null")  # exists, but is no folder: not "not found"
    assert (
        done.returncode == 2
        and done.stderr.strip() == "error: /dev/null is not a folder: give the --results folder of `sharpbench run`"
    )
    from tests.report.results_folder import write_results

    results = write_results(tmp_path / "results")  # its dataset folder given instead of it
    done = _run("leaderboard", str(results / "leaderboard"))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: {results}/leaderboard is the Parquet dataset of the results folder {results}: give {results}"
    )


def test_list_json_describes_every_hyperparameter():
    import json

    import regularizers

    done = _run("list", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert set(listed) == {*regularizers.available(), "<method>+swa", "<method>+ema"}
    assert [h["name"] for h in listed["<method>+ema"]["hyperparameters"]] == ["ema_decay"]
    radius = next(h for h in listed["sam"]["hyperparameters"] if h["name"] == "perturbation_radius")
    assert radius["domain"] == {"type": "float", "low": 0.01, "high": 0.5, "scale": "log"}
    assert radius["default"] == 0.05


def test_list_table_names_the_averaging_suffixes():
    done = _run("list")
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 3}
    assert "swa_start" in rows["<method>+swa"] and "ema_decay" in rows["<method>+ema"]
    assert "looksam" in rows and "mesa" in rows


def test_help_explains_commands():
    done = _run("--help")
    assert done.returncode == 0
    for command in ("run", "leaderboard", "list"):
        assert command in done.stdout


def test_every_option_that_takes_a_value_names_it_in_words():
    # Typer's fallbacks (<str>, <list[int]>, <int range>) tell a reader nothing; choices may stay.
    import re

    import click
    from typer.main import get_command

    from bench.cli import app

    for name, command in get_command(app).commands.items():
        assert not re.search(r"\bbench/|\.py\b", command.help or ""), (
            f"{name}: its help sends the reader to a source file"
        )
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag and param.name != "help":
                shown = param.get_help_record(click.Context(command))[0]
                assert not re.search(r"<(str|int|float|path|list\[\w+\]|int range)>", shown), (name, shown)
                assert param.help, f"{name} {shown}: no help text"


def test_perf_json_rows_carry_medians_and_spreads():
    import json

    done = _run(
        "perf",
        "--model",
        "mlp",
        "--method",
        "sam",
        "--method",
        "nso",
        "--batch-size",
        "16",
        "--warmup",
        "1",
        "--repeats",
        "4",
        "--format",
        "json",
    )
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


#: Errors Click finds while parsing the command line: args, what the line says, the help it names.
USAGE_ERRORS = {
    "an extra argument": (["list", "extra"], "unexpected extra argument", "list"),
    "an option's value below its minimum": (["perf", "--repeats", "0"], "Invalid value for '--repeats'", "perf"),
    "an unknown option": (["leaderboard", "--bogus"], "No such option: --bogus", "leaderboard"),
    "an unknown command": (["bogus"], "No such command 'bogus'", ""),
    "a missing argument": (["run"], "Missing argument 'CONFIG'", "run"),
    "a choice not offered": (["leaderboard", "--format", "xml"], "'xml' is not one of", "leaderboard"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_are_one_line_naming_the_help_to_read(case):
    args, fragment, command = USAGE_ERRORS[case]
    done = _run(*args)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and fragment in line, line
    assert line.endswith(f"(see {' '.join(['sharpbench', command]).strip()} --help)"), line


def test_sharpbench_alone_prints_its_help():
    done = _run()
    assert done.returncode == 2  # Click's status for a command line without a command
    assert done.stderr.startswith("Usage: sharpbench [OPTIONS] COMMAND [ARGS]...") and "Commands:" in done.stderr


@pytest.mark.parametrize("option", ["--repeats", "--block-steps", "--batch-size"])
def test_bad_option_value_exits_2(option):
    done = _run("perf", option, "0")
    assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr and "Traceback" not in done.stderr


def test_perf_help_states_the_reliability_rule():
    from bench.measure.timing import (
        EFFECT_IN_IQRS,
        MAX_RELATIVE_STEP_IQR,
        MIN_ROUNDS,
        OVERHEAD_RESOLUTION,
        TARGET_OVERHEAD,
    )

    done = _run("perf", "--help")
    text = " ".join(done.stdout.split())  # click re-wraps the docstring
    assert done.returncode == 0
    for fragment in (
        f"fewer than {MIN_ROUNDS} rounds",
        f"exceeds {MAX_RELATIVE_STEP_IQR:.0%} of its median",
        f"exceeds both {OVERHEAD_RESOLUTION:.2f} and |overhead - 1| / {EFFECT_IN_IQRS}.",
        f"<= {TARGET_OVERHEAD}",
    ):
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


@pytest.mark.parametrize("command", ["leaderboard", "report", "sync-mlflow", "final"])
def test_every_reader_of_a_results_folder_refuses_a_missing_or_empty_one_in_the_same_words(tmp_path, command):
    from bench.results.parquet import no_results_folder, no_rows

    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    done = _run(command, str(missing))
    assert done.returncode == 2 and done.stderr == f"error: {no_results_folder(missing)}\n", done.stderr
    done = _run(command, str(empty))
    # `final` needs the run's record, which an empty folder lacks: said in the same form
    expected = (
        f"no recorded run in {empty}: run `sharpbench run CONFIG --results {empty}` first"
        if command == "final"
        else no_rows(empty)
    )
    assert done.returncode == 2 and done.stderr == f"error: {expected}\n", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any(empty.iterdir())
