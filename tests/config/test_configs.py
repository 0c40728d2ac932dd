"""Every shipped config validates against the registries (no dataset files needed)."""

from __future__ import annotations

import pytest

from bench.config import ConfigError, load_config, parse_config
from bench.plan import plan_methods

SHIPPED = ["digits", "digits_noisy", "smoke", "cifar10_resnet18", "cifar100_wrn28_10", "cifar10_quick"]
SUITES = ["suite_cpu", "suite_gpu"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_is_valid(repo_root, name):
    config = load_config(repo_root / "configs" / f"{name}.yaml")
    plans = plan_methods(config)
    assert [p.regularizer for p in plans] == [entry.name for entry in config.regularizers]
    # every method that has hyperparameters searches at least one of them
    for plan in plans:
        assert plan.params or plan.regularizer == "erm"


def test_configs_folder_has_no_untested_config(repo_root):
    shipped = {path.stem for path in (repo_root / "configs").glob("*.yaml")}
    assert shipped == set(SHIPPED) | set(SUITES)


@pytest.mark.parametrize("name", SUITES)
def test_shipped_suite_is_valid_and_every_benchmark_tunes_the_same_methods(repo_root, name):
    from bench.catalog import load_any

    suite = load_any(repo_root / "configs" / f"{name}.yaml")
    methods = [[entry.name for entry in config.regularizers] for config in suite.benchmarks]
    assert len(suite.benchmarks) >= 4 and all(m == methods[0] for m in methods)  # one method list: one suite
    assert len(methods[0]) >= 8 and any(m.endswith("+swa") for m in methods[0])
    budgets = {(config.search.trials_per_method, tuple(config.final.seeds)) for config in suite.benchmarks}
    assert len(budgets) == 1  # the same budget on every benchmark


def test_cpu_suite_covers_label_noise_a_reduced_train_set_and_a_tabular_task(repo_root):
    from bench.catalog import load_any

    suite = load_any(repo_root / "configs" / "suite_cpu.yaml")
    digits = [c for c in suite.benchmarks if c.dataset.name == "digits"]
    assert sorted(c.dataset.label_noise for c in digits if c.dataset.train_fraction == 1.0) == [0.0, 0.2, 0.4]
    assert any(c.dataset.train_fraction < 1.0 for c in digits)
    assert any(c.dataset.name == "breast_cancer" and c.model.name == "mlp" for c in suite.benchmarks)
    assert all(c.flatness.when == "final" and c.resources.gpus_per_trial == 0 for c in suite.benchmarks)


def test_gpu_suite_has_the_seed_papers_workloads(repo_root):
    from bench.catalog import load_any

    suite = load_any(repo_root / "configs" / "suite_gpu.yaml")
    pairs = {(c.dataset.name, c.model.name) for c in suite.benchmarks}
    assert {("cifar10", "resnet18"), ("cifar100", "wrn28_10"), ("cifar100", "pyramidnet110")} <= pairs
    assert any(name == "svhn" for name, _ in pairs)
    for config in suite.benchmarks:
        assert (config.training.momentum, config.training.weight_decay, config.training.schedule) == (
            0.9,
            5e-4,
            "cosine",
        )
        assert config.dataset.crop_padding == 4 and config.dataset.download is False
        assert config.dataset.horizontal_flip is (config.dataset.name != "svhn")


def test_digits_noisy_compares_every_built_in_method_on_noisy_labels(repo_root):
    import regularizers

    config = load_config(repo_root / "configs" / "digits_noisy.yaml")
    built_in = {
        name
        for name in regularizers.available()
        if type(regularizers.create(name)).__module__.startswith("regularizers.")
    }
    names = {entry.name for entry in config.regularizers}
    assert built_in <= names and len(built_in) >= 22
    assert {"sam+swa", "erm+ema"} <= names  # averaging, alone and on SAM (WASAM)
    assert config.dataset.label_noise > 0 and len(config.final.seeds) == 5 and config.flatness.when == "final"


def test_paper_recipe_in_cifar_configs(repo_root):
    for name in ("cifar10_resnet18", "cifar100_wrn28_10"):
        training = load_config(repo_root / "configs" / f"{name}.yaml").training
        assert (
            training.momentum,
            training.learning_rate,
            training.weight_decay,
            training.batch_size,
            training.epochs,
            training.schedule,
        ) == (0.9, 0.1, 5e-4, 128, 200, "cosine")


@pytest.mark.parametrize(
    ("flatness", "fragment"),
    [
        ({"eigen_tolerance": 0}, "flatness.eigen_tolerance: Input should be greater than 0"),
        ({"eigen_tolerance": 1.5}, "flatness.eigen_tolerance: Input should be less than 1"),
        ({"eigen_max_iterations": 0}, "flatness.eigen_max_iterations: Input should be greater than 0"),
        ({"trace_rel_stderr": -0.1}, "flatness.trace_rel_stderr: Input should be greater than or equal to 0"),
        ({"trace_min_probes": 1}, "flatness.trace_min_probes: Input should be greater than or equal to 2"),
        ({"trace_min_probes": 30, "trace_max_probes": 20}, "trace_max_probes (20) must be >= trace_min_probes (30)"),
        ({"eigen_iterations": 20}, "eigen_iterations was replaced by eigen_max_iterations"),
    ],
)
def test_flatness_stopping_rules_are_validated(flatness, fragment):
    with pytest.raises(ConfigError) as error:
        parse_config({"benchmark": "t", "regularizers": ["erm"], "flatness": flatness})
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_yaml_merge_keys_still_load_and_a_merged_key_may_be_overridden(tmp_path):
    # A key given twice is refused, but a mapping overriding a key merged from ``<<: *anchor`` is YAML as designed.
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "benchmark: t\nregularizers:\n  - &sam {name: sam, fixed: {perturbation_radius: 0.05}}\n"
        "  - {<<: *sam, name: asam}\n"
    )
    entries = load_config(merged).regularizers
    assert [(e.name, e.fixed["perturbation_radius"]) for e in entries] == [("sam", 0.05), ("asam", 0.05)]
    twice = tmp_path / "twice.yaml"
    twice.write_text("benchmark: t\nregularizers:\n  - {name: sam, name: asam}\n")
    with pytest.raises(ConfigError, match=r"line 3\): the key 'name' appears twice"):
        load_config(twice)
