"""Issue 20's bad-input table: malformed paths, names, YAML types, plug-ins, resources and URIs each
end in one line on stderr and exit 2, before anything is written. Run in-process (typer's runner):
every case is refused before Ray, MLflow or a trial starts, so no subprocess is needed."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

import regularizers
from bench.cli import app
from regularizers.erm import ERM

GOOD = {
    "benchmark": "t",
    "regularizers": ["erm"],
    "model": {"name": "mlp"},
    "dataset": {"name": "digits", "max_train_samples": 64},
}
LONG = "b" * 250

# name: (config: mapping or YAML text, fragments of the one error line, extra `run` options)
CASES: dict[str, tuple] = {
    # names and paths against the file system
    "benchmark name making a 269-byte file name": (
        {**GOOD, "benchmark": LONG},
        ["names too long for the file system", "over the limit of 255 bytes"],
    ),
    "benchmark name of 255 bytes": ({**GOOD, "benchmark": "c" * 255}, ["names too long", "255 bytes"]),
    "benchmark name with a slash": ({**GOOD, "benchmark": "a/b"}, ["benchmark"]),
    "benchmark name with a space": ({**GOOD, "benchmark": "my bench"}, ["benchmark"]),
    "benchmark name with unicode": ({**GOOD, "benchmark": "dígitos"}, ["benchmark"]),
    "empty benchmark name": ({**GOOD, "benchmark": ""}, ["benchmark"]),
    "results folder name over 255 bytes": (
        GOOD,
        ["results folder", "File name too long"],
        ["--results", "{tmp}/" + "r" * 300],
    ),
    "Optuna store in a folder name over 255 bytes": (
        GOOD,
        ["Optuna storage"],
        ["--optuna-storage", "sqlite:///{tmp}/" + "o" * 300 + "/optuna.db"],
    ),
    "MLflow store in a folder name over 255 bytes": (
        GOOD,
        ["MLflow tracking URI"],
        ["--tracking-uri", "sqlite:///{tmp}/" + "m" * 300 + "/mlflow.db"],
    ),
    # YAML types
    "regularizers as one string": ({**GOOD, "regularizers": "erm"}, ["regularizers"]),
    "no regularizers": ({**GOOD, "regularizers": []}, ["regularizers"]),
    "a regularizer listed twice": ({**GOOD, "regularizers": ["erm", "erm"]}, ["erm"]),
    "a number as a regularizer": ({**GOOD, "regularizers": [7]}, ["regularizers"]),
    "epochs as a word": ({**GOOD, "training": {"epochs": "twelve"}}, ["training.epochs"]),
    "zero epochs": ({**GOOD, "training": {"epochs": 0}}, ["training.epochs"]),
    "negative batch size": ({**GOOD, "training": {"batch_size": -32}}, ["training.batch_size"]),
    "no learning rate": ({**GOOD, "training": {"learning_rate": None}}, ["training.learning_rate"]),
    "zero trials per method": ({**GOOD, "search": {"trials_per_method": 0}}, ["search.trials_per_method"]),
    "label noise of 100%": ({**GOOD, "dataset": {"name": "digits", "label_noise": 1.0}}, ["dataset.label_noise"]),
    "negative training-set size": (
        {**GOOD, "dataset": {"name": "digits", "max_train_samples": -5}},
        ["dataset.max_train_samples"],
    ),
    "seed as a word": ({**GOOD, "seed": "abc"}, ["seed"]),
    "a hyperparameter as a word": (
        {**GOOD, "regularizers": [{"name": "sam", "fixed": {"perturbation_radius": "big"}}]},
        ["perturbation_radius"],
    ),
    "a range bound as a word": (
        {**GOOD, "search": {"space": {"learning_rate": {"low": "small", "high": 0.1}}}},
        ["learning_rate"],
    ),
    "a tab in the YAML indentation": ("benchmark: t\nregularizers: [erm]\ntraining:\n\tepochs: 3\n", ["invalid YAML"]),
    "a section that is a list": ({**GOOD, "training": [1, 2]}, ["training"]),
    # resources
    "no CPU per trial": ({**GOOD, "resources": {"cpus_per_trial": 0}}, ["resources.cpus_per_trial"]),
    "negative GPUs per trial": ({**GOOD, "resources": {"gpus_per_trial": -1}}, ["resources.gpus_per_trial"]),
    "negative concurrency": ({**GOOD, "search": {"max_concurrent_trials": -2}}, ["search.max_concurrent_trials"]),
    # URIs and addresses
    "a port beyond 65535": (GOOD, ["--address", "port"], ["--address", "127.0.0.1:99999"]),
    "a Ray client address without a host": (GOOD, ["--address"], ["--address", "ray://:10001"]),
    "an HTTP tracking URI without a host": (
        GOOD,
        ["MLflow tracking URI http://: no host"],
        ["--tracking-uri", "http://"],
    ),
    "an Optuna URL of an unknown database": (
        GOOD,
        ["Optuna storage"],
        ["--optuna-storage", "nosuchdb://u@127.0.0.1/x"],
    ),
}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _assert_one_line_exit_2(result, fragments: list[str]) -> None:
    assert result.exit_code == 2, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_exits_2_with_one_line(tmp_path, case):
    raw, fragments, *options = CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    results = tmp_path / "results"
    extra = [o.replace("{tmp}", str(tmp_path)) for o in (options[0] if options else [])]
    if "--results" not in extra:
        extra += ["--results", str(results)]
    before = sorted(p.name for p in tmp_path.iterdir())
    _assert_one_line_exit_2(_invoke("run", str(config), *extra), fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_the_table_holds_at_least_25_new_inputs():
    assert len(CASES) + len(PLUGIN_NAMES) >= 25


# plug-ins whose names cannot become file names or one console line
PLUGIN_NAMES = {
    "a plug-in name of 300 bytes": ("p" * 300, ["names too long for the file system"]),
    "a plug-in name with a newline": ("two\nlines", ["control character"]),
}


@pytest.mark.parametrize("case", sorted(PLUGIN_NAMES))
def test_plugin_with_an_unusable_name_exits_2(tmp_path, case):
    name, fragments = PLUGIN_NAMES[case]
    regularizers.registry._add(name, type("Hostile", (ERM,), {"__module__": __name__}))
    try:
        config = tmp_path / "plugin.yaml"
        config.write_text(yaml.safe_dump({**GOOD, "regularizers": ["erm", name]}))
        _assert_one_line_exit_2(_invoke("run", str(config), "--results", str(tmp_path / "results")), fragments)
        assert not (tmp_path / "results").exists()
    finally:
        regularizers.registry.unregister(name)


# Found by a fresh-user check: refused now, with one line and nothing written.
CASES.update(
    {
        "benchmark name of dots": ({**GOOD, "benchmark": ".."}, ["only dots"]),
        "an in-memory MLflow store": (GOOD, ["in-memory database keeps nothing"], ["--tracking-uri", "sqlite://"]),
        "an in-memory Optuna store": (
            GOOD,
            ["in-memory database keeps nothing"],
            ["--optuna-storage", "sqlite:///:memory:"],
        ),
        "a tracking database without its driver": (
            GOOD,
            ["MLflow tracking URI mysql+mysqldb://", "MySQLdb"],
            ["--tracking-uri", "mysql+mysqldb://u:p@127.0.0.1:1/db"],
        ),
        "a results folder with a newline": (GOOD, ["control character"], ["--results", "{tmp}/two\nlines"]),
    }
)
