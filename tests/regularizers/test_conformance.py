"""Every registered method (and each variant switch) passes the shipped conformance suite."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import regularizers
from regularizers import Choice, Float, Int, PassCost, RegistryError
from regularizers.testing import check_regularizer

REGISTERED = regularizers.available()

# Options (searched=False switches) and edge values that change the control flow of a step.
VARIANTS = [
    ("amp", {"inner_steps": 0}),
    ("amp", {"inner_steps": 2, "projection": "global"}),
    ("coherent_l1", {"delay_epochs": 1}),
    ("coherent_l2", {"coherence_threshold": 0.5}),
    ("asam", {"adaptive_tensors": "all", "eta": 0.0}),
    ("gnp", {"perturbed_gradient_weight": 0.0}),
    ("gnp", {"perturbed_gradient_weight": 0.0, "normalize_clean_gradient": False}),
    ("gnp", {"perturbed_gradient_weight": 1.0}),
    ("gnp", {"normalize_clean_gradient": False, "norm_epsilon": 1e-12}),
    ("nrs", {"neighbour": "adversarial"}),
    ("nso", {"num_samples": 3}),
    ("nso", {"clean_gradient_weight": 0.3}),
    ("nso", {"estimator": "one_point", "num_samples": 2}),
    ("nso", {"estimator": "one_point", "clean_gradient_weight": 0.3}),
    ("rwp", {"perturbed_gradient_weight": 0.0}),
    ("rwp", {"perturbed_gradient_weight": 1.0}),
]


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_method_conforms(name):
    check_regularizer(name)


VARIANT_IDS = [name + "".join(f"-{key}={value}" for key, value in hparams.items()) for name, hparams in VARIANTS]


@pytest.mark.parametrize(("name", "hparams"), VARIANTS, ids=VARIANT_IDS)
def test_variant_conforms(name, hparams):
    check_regularizer(regularizers.create(name, **hparams))


@pytest.mark.parametrize("name", REGISTERED)
def test_declared_space_is_usable(name):
    cls = regularizers.get(name)
    assert cls.__doc__, f"{name} needs a docstring"
    declared = regularizers.hyperparameters_of(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert {hp.name for hp in declared} <= fields
    default = regularizers.create(name)
    for hp in declared:
        assert hp.help, f"{name}.{hp.name} needs a help line"
        assert hp.domain.contains(hp.default), f"{name}.{hp.name}: default {hp.default!r} outside its domain"
        assert getattr(default, hp.name) == hp.default
        # Every point of the search domain's corners must be a valid configuration.
        corners = hp.domain.options if isinstance(hp.domain, Choice) else (hp.domain.low, hp.domain.high)
        for value in corners:
            regularizers.create(name, **{hp.name: value})
    for has_batchnorm in (False, True):
        cost = default.cost(has_batchnorm)
        assert isinstance(cost, PassCost) and cost.forward >= 1 and 0 <= cost.backward <= cost.forward


@pytest.mark.parametrize("name", REGISTERED)
def test_invalid_values_are_rejected(name):
    for hp in regularizers.hyperparameters_of(name):
        if isinstance(hp.domain, Float) and hp.domain.low >= 0:
            bad = -10.0
        elif isinstance(hp.domain, Int) and hp.domain.low >= 0:
            bad = -10
        elif isinstance(hp.domain, Choice) and all(isinstance(o, str) for o in hp.domain.options):
            bad = "no-such-option"
        else:
            continue
        with pytest.raises(RegistryError):
            regularizers.create(name, **{hp.name: bad})


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_method_conforms_under_bf16_autocast(name):
    """float32 parameters, bf16 autocast on the CPU: the mixed-precision path of the training loop."""
    check_regularizer(name, dtype=torch.float32, autocast_dtype=torch.bfloat16)
