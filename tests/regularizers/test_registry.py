"""The name → class registry: registration, lookup errors, hyperparameter checks, plugins."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import pytest

import regularizers
from regularizers import Float, PassCost, RegistryError, Regularizer, hparam
from tests.plugins import install_distribution

BUILT_IN = [
    "amp",
    "asam",
    "coherent_l1",
    "coherent_l2",
    "erm",
    "esam",
    "fisher_sam",
    "fsam",
    "gam",
    "gnp",
    "gsam",
    "l1",
    "looksam",
    "mesa",
    "msam",
    "nrs",
    "nso",
    "rwp",
    "saf",
    "sam",
    "vasso",
    "weight_decay",
]


@pytest.fixture
def scratch_names():
    """Names a test registers; unregistered afterwards whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        regularizers.unregister(name)


def _toy_class(default: float = 0.1):
    @dataclass
    class Toy(Regularizer):
        strength: float = hparam(default, Float(0.0, 1.0), "how strong")

        def step(self, closure):
            clean = closure(update_bn=True)
            return self.report(closure, clean.loss)

        def cost(self, has_batchnorm):
            return PassCost(forward=1, backward=1)

    return Toy


def test_register_create_and_list(scratch_names):
    scratch_names.append("toy_registry_test")
    cls = regularizers.register("toy_registry_test")(_toy_class())
    assert cls.name == "toy_registry_test"
    assert "toy_registry_test" in regularizers.available()
    instance = regularizers.create("toy_registry_test", strength=0.3)
    assert isinstance(instance, cls) and instance.strength == 0.3
    assert [hp.name for hp in regularizers.hyperparameters_of("toy_registry_test")] == ["strength"]
    regularizers.unregister("toy_registry_test")
    assert "toy_registry_test" not in regularizers.available()


def test_listing_holds_every_built_in_sorted():
    names = regularizers.available()
    assert names == sorted(names)
    assert set(BUILT_IN) <= set(names)


def test_builtin_lists_the_shipped_methods_in_registration_order_and_no_plugin(plugin_path, scratch_names):
    scratch_names += ["sbtest_decorated", "sbtest_plain", "toy_registry_test"]
    regularizers.register("toy_registry_test")(_toy_class())  # defined here, in a test module
    _write_distribution(
        plugin_path,
        "sbtest_plugin_builtin",
        _DECORATED.format(name="sbtest_decorated"),
        {"sbtest_decorated": "sbtest_plugin_builtin:Decorated", "sbtest_plain": "sbtest_plugin_builtin:Plain"},
    )
    regularizers.load_entry_points(force=True)
    assert {"sbtest_decorated", "sbtest_plain", "toy_registry_test"} <= set(regularizers.available())
    builtin = regularizers.builtin()
    assert sorted(builtin) == BUILT_IN  # every shipped method, nothing else
    # Registration order, not sorted: sam and asam register first because amp imports their module.
    assert builtin[:3] == ["sam", "asam", "amp"]


def test_duplicate_name_is_an_error(scratch_names):
    scratch_names.append("toy_duplicate")
    first = regularizers.register("toy_duplicate")(_toy_class())
    regularizers.register("toy_duplicate")(first)  # the same class again is harmless
    with pytest.raises(RegistryError, match="already registered"):
        regularizers.register("toy_duplicate")(_toy_class())
    with pytest.raises(RegistryError, match="already registered"):
        regularizers.register("sam")(_toy_class())
    assert regularizers.get("sam").__name__ == "SAM"


def test_registering_a_non_dataclass_or_non_regularizer_fails():
    class NotADataclass(Regularizer):  # no @dataclass
        def step(self, closure): ...
        def cost(self, has_batchnorm): ...

    with pytest.raises(RegistryError, match="dataclass"):
        regularizers.register("toy_not_dataclass")(NotADataclass)
    with pytest.raises(RegistryError, match="not a Regularizer"):
        regularizers.register("toy_not_regularizer")(dict)
    assert "toy_not_dataclass" not in regularizers.available()


def test_unknown_name_suggests_the_closest():
    with pytest.raises(RegistryError, match="did you mean 'sam'") as error:
        regularizers.get("sma")
    assert "valid:" in str(error.value) and "nso" in str(error.value)
    with pytest.raises(RegistryError, match="did you mean 'coherent_l2'"):
        regularizers.create("coherent-l2")
    # The wrong case, stray spaces, and a composed name with a wrong method: the method is named first.
    with pytest.raises(RegistryError, match=r"unknown regularizer 'SAM' \(did you mean 'sam'\?\)"):
        regularizers.get("SAM+SWA")
    with pytest.raises(RegistryError, match=r"unknown regularizer 'sam ' \(did you mean 'sam'\?\)"):
        regularizers.get("sam + swa")


def test_unknown_hyperparameter_suggests_the_closest():
    with pytest.raises(RegistryError, match="did you mean 'perturbation_radius'"):
        regularizers.create("sam", perturbation_radus=0.1)
    with pytest.raises(RegistryError, match="did you mean 'noise_scale'"):
        regularizers.create("nso", noise_scales=0.1)


def test_wrong_type_is_an_error_and_ints_become_floats():
    with pytest.raises(RegistryError, match="perturbation_radius must be float"):
        regularizers.create("sam", perturbation_radius="0.1")
    with pytest.raises(RegistryError, match="num_samples must be int"):
        regularizers.create("nso", num_samples=2.0)
    with pytest.raises(RegistryError, match="num_samples must be int, got bool True"):
        regularizers.create("nso", num_samples=True)  # bool is an int subclass: still rejected
    with pytest.raises(RegistryError, match="perturbation_radius must be float, got bool"):
        regularizers.create("sam", perturbation_radius=True)
    sam = regularizers.create("sam", perturbation_radius=1)
    assert isinstance(sam.perturbation_radius, float)


def test_invalid_value_is_a_registry_error_with_the_reason():
    with pytest.raises(RegistryError, match="perturbation_radius must be >= 0"):
        regularizers.create("sam", perturbation_radius=-0.1)


# --- entry-point plugins, discovered through real importlib.metadata distributions --------------

_DECORATED = """
from dataclasses import dataclass
from regularizers import PassCost, Regularizer, register

@register("{name}")
@dataclass
class Decorated(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(forward=1, backward=1)

@dataclass
class Plain(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(forward=1, backward=1)
"""


def _write_distribution(root, module: str, source: str, entry_points: dict[str, str]) -> None:
    install_distribution(root, module, source, {regularizers.ENTRY_POINT_GROUP: entry_points})


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """tmp_path on sys.path; the plugin modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - before:
        if module.startswith("sbtest_plugin"):
            del sys.modules[module]
    monkeypatch.undo()
    importlib.invalidate_caches()
    regularizers.load_entry_points(force=True)  # back to the environment's own plugins


def test_entry_point_plugins_are_discovered(plugin_path, scratch_names):
    scratch_names += ["sbtest_decorated", "sbtest_plain"]
    _write_distribution(
        plugin_path,
        "sbtest_plugin_ok",
        _DECORATED.format(name="sbtest_decorated"),
        {"sbtest_decorated": "sbtest_plugin_ok:Decorated", "sbtest_plain": "sbtest_plugin_ok:Plain"},
    )
    assert "sbtest_plain" not in regularizers.available()
    regularizers.load_entry_points(force=True)
    names = regularizers.available()
    assert "sbtest_decorated" in names
    assert "sbtest_plain" in names  # the undecorated class, registered under its entry-point name
    plain = regularizers.create("sbtest_plain")
    assert type(plain).__name__ == "Plain" and type(plain).name == "sbtest_plain"
    assert type(regularizers.create("sbtest_decorated")).__name__ == "Decorated"
    regularizers.load_entry_points(force=True)  # loading twice is idempotent


def test_a_failing_plugin_raises_naming_it(plugin_path):
    _write_distribution(
        plugin_path,
        "sbtest_plugin_broken",
        "raise ImportError('missing dependency frobnicate')\n",
        {"sbtest_broken": "sbtest_plugin_broken:Method"},
    )
    with pytest.raises(RegistryError, match="plugin 'sbtest_broken'.*frobnicate"):
        regularizers.load_entry_points(force=True)
    assert "sbtest_broken" not in regularizers.available()


def test_a_plugin_that_is_not_a_regularizer_is_rejected(plugin_path):
    _write_distribution(
        plugin_path, "sbtest_plugin_wrong", "Method = 42\n", {"sbtest_wrong": "sbtest_plugin_wrong:Method"}
    )
    with pytest.raises(RegistryError, match="not a Regularizer"):
        regularizers.load_entry_points(force=True)


def test_space_is_the_module_and_hyperparameters_of_the_lookup():
    """``regularizers.space`` stays the domains module after ``import regularizers.space``."""
    import regularizers.space

    assert regularizers.space.Float is regularizers.Float
    assert regularizers.space.hparam is regularizers.hparam
    declared = regularizers.hyperparameters_of("asam")
    assert [hp.name for hp in declared] == [
        "perturbation_radius",
        "eta",
        "adaptive_tensors",
        "norm_epsilon",
        "micro_batch_size",
        "perturbed_layers",
    ]
    assert declared == regularizers.hyperparameters(regularizers.get("asam"))
    with pytest.raises(regularizers.RegistryError, match="unknown regularizer"):
        regularizers.hyperparameters_of("asma")
