"""Suite files: defaults laid over each benchmark, every benchmark a whole config, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from bench.catalog import load_any, load_benchmark
from bench.config import ConfigError, load_config
from bench.config.load import load_workload
from bench.config.suite import SuiteConfig, laid_over
from bench.plan import plan_methods
from bench.run_record import config_hash

SUITE = {
    "suite": "two",
    "defaults": {
        "dataset": {"name": "digits", "max_train_samples": 256, "val_fraction": 0.25},
        "model": {"name": "cnn", "options": {"width": 8}},
        "training": {"epochs": 3, "batch_size": 32},
        "regularizers": ["erm", "sam"],
    },
    "benchmarks": [
        {"benchmark": "clean"},
        {"benchmark": "noisy", "dataset": {"label_noise": 0.2}, "training": {"epochs": 5}},
        {"benchmark": "tab", "dataset": {"name": "breast_cancer"}, "model": {"name": "mlp"}},
    ],
}


def _write(tmp_path, document, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_each_benchmark_is_the_defaults_with_its_entry_laid_over(tmp_path):
    suite = load_any(_write(tmp_path, SUITE))
    assert isinstance(suite, SuiteConfig) and suite.suite == "two"
    clean, noisy, tab = suite.benchmarks
    assert [c.benchmark for c in suite.benchmarks] == ["clean", "noisy", "tab"]
    # nested mappings merge: the entry's keys win, the defaults' others stay
    assert (noisy.dataset.label_noise, noisy.dataset.max_train_samples, noisy.dataset.val_fraction) == (0.2, 256, 0.25)
    assert (noisy.training.epochs, noisy.training.batch_size) == (5, 32)
    assert clean.dataset.label_noise == 0.0 and clean.training.epochs == 3
    # another dataset keeps the shared split settings; another model does not inherit the CNN's width
    assert (tab.dataset.name, tab.dataset.val_fraction, tab.dataset.max_train_samples) == ("breast_cancer", 0.25, 256)
    assert tab.model.name == "mlp" and tab.model.options == {}
    # every benchmark is an ordinary one: the same config as its standalone file, the same identity
    standalone = {key: value for key, value in SUITE["defaults"].items()}
    standalone = laid_over(standalone, SUITE["benchmarks"][1])
    alone = load_config(_write(tmp_path, standalone, "noisy.yaml"))
    assert alone == noisy and config_hash(alone) == config_hash(noisy)
    assert [p.regularizer for p in plan_methods(noisy)] == ["erm", "sam"]


def test_lists_and_scalars_replace_the_defaults():
    merged = laid_over({"regularizers": ["erm", "sam"], "seed": 0}, {"regularizers": ["erm"], "seed": 3})
    assert merged == {"regularizers": ["erm"], "seed": 3}
    base = {"a": {"b": {"c": 1, "d": 2}}}
    assert laid_over(base, {"a": {"b": {"c": 5}}}) == {"a": {"b": {"c": 5, "d": 2}}}
    assert base == {"a": {"b": {"c": 1, "d": 2}}}  # the defaults are not changed for the next entry


def test_one_benchmark_of_a_suite_by_name(tmp_path):
    path = _write(tmp_path, SUITE)
    assert load_benchmark(path, "noisy").dataset.label_noise == 0.2
    with pytest.raises(
        ConfigError, match="is a suite of benchmarks \\(clean, noisy, tab\\); name one with --benchmark"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown benchmark 'nosy'.*did you mean 'noisy'"):
        load_config(path, "nosy")


def test_a_single_config_with_another_benchmark_name_is_refused(repo_root):
    path = repo_root / "configs" / "smoke.yaml"
    assert load_config(path, "smoke").benchmark == "smoke"
    with pytest.raises(ConfigError, match="holds one benchmark, 'smoke', not 'digits'"):
        load_config(path, "digits")


def _broken(**changes):
    document = {**SUITE, **changes}
    return {key: value for key, value in document.items() if value is not None}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_broken(suites="x"), "a suite file has only suite, defaults, benchmarks; unknown key 'suites'"),
        (_broken(suite=None), "suite: a name of letters"),
        (_broken(suite="a/b"), "suite: a name of letters"),
        (_broken(benchmarks=[{"benchmark": "one"}]), "benchmarks: a list of at least 2"),
        (_broken(benchmarks=[{"benchmark": "a"}, {"dataset": {}}]), "benchmarks\\[1\\]: a mapping with a 'benchmark'"),
        (_broken(benchmarks=[{"benchmark": "a"}, {"benchmark": "a"}]), "benchmark 'a' appears twice"),
        (_broken(defaults={"benchmark": "x"}), "defaults: 'benchmark' names one benchmark"),
        (_broken(defaults=[1]), "defaults: expected a mapping"),
        (
            _broken(benchmarks=[{"benchmark": "a"}, {"benchmark": "b", "training": {"epochs": -1}}]),
            "benchmarks\\[1\\]: training.epochs: Input should be greater than 0",
        ),
        (
            _broken(benchmarks=[{"benchmark": "a"}, {"benchmark": "b", "trainig": {}}]),
            "benchmarks\\[1\\]: unknown key 'trainig'.*did you mean 'training'",
        ),
    ],
)
def test_a_broken_suite_is_one_line_naming_the_place(tmp_path, document, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_workload(_write(tmp_path, document))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(tmp_path))


def test_a_typo_in_the_defaults_is_said_of_the_defaults_not_of_the_first_benchmark(tmp_path):
    document = _broken(defaults={**SUITE["defaults"], "trainig": {"epochs": 2}})
    with pytest.raises(ConfigError, match="suite.yaml: defaults: unknown key 'trainig'.*did you mean 'training'"):
        load_workload(_write(tmp_path, document))
    document = _broken(benchmarks=[{"benchmark": "a", "trainig": {}}, {"benchmark": "b"}])
    with pytest.raises(ConfigError, match="suite.yaml: benchmarks\\[0\\]: unknown key 'trainig'"):
        load_workload(_write(tmp_path, document))


def test_names_that_live_in_registries_are_checked_per_benchmark(tmp_path):
    document = _broken(benchmarks=[{"benchmark": "a"}, {"benchmark": "b", "regularizers": ["erm", "samm"]}])
    with pytest.raises(ConfigError, match="\\(b\\): .*'samm'.*did you mean 'sam'"):
        load_any(_write(tmp_path, document))
    document = _broken(benchmarks=[{"benchmark": "a"}, {"benchmark": "b", "model": {"options": {"widht": 4}}}])
    with pytest.raises(ConfigError, match="\\(b\\): model.options: .*widht.*did you mean .width."):
        load_any(_write(tmp_path, document))
