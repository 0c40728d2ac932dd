"""``<method>+swa`` / ``<method>+ema``: composed from the registry, the method's hyperparameters
plus the averaging's, the method's step unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from reg_helpers import closure_for, grads, make_batch, make_model

import regularizers
from regularizers import PassCost, RegistryError, Regularizer
from regularizers.averaging import EMA, SWA
from regularizers.testing import check_regularizer


@pytest.mark.parametrize("kind", ["swa", "ema"])
@pytest.mark.parametrize("base", ["erm", "sam", "nso"])
def test_a_composed_name_is_the_method_plus_the_averagings_hyperparameters(base, kind):
    composed = regularizers.get(f"{base}+{kind}")
    assert issubclass(composed, regularizers.get(base)) and composed.name == f"{base}+{kind}"
    averaging = {"swa": SWA, "ema": EMA}[kind]
    names = [hp.name for hp in regularizers.hyperparameters_of(composed.name)]
    own = [hp.name for hp in regularizers.hyperparameters_of(base)]
    added = [hp.name for hp in regularizers.space.hyperparameters(averaging)]
    assert names == own + added and added
    assert regularizers.get(composed.name) is composed  # made once
    assert f"{base}+{kind}" not in regularizers.available()  # composed, not registered
    method = regularizers.create(composed.name)
    assert isinstance(method.averaging, averaging) and regularizers.create(base).averaging is None
    assert method.cost(False) == regularizers.create(base).cost(False)
    check_regularizer(method)


def test_the_averaging_hyperparameters_are_validated_and_passed_on():
    method = regularizers.create("sam+swa", perturbation_radius=0.1, swa_start=0.6, swa_lr=0.2)
    assert method.averaging == SWA(swa_start=0.6, swa_lr=0.2) and method.perturbation_radius == 0.1
    assert regularizers.create("erm+ema", ema_decay=0.9).averaging == EMA(ema_decay=0.9)
    with pytest.raises(RegistryError, match=r"ema_decay must lie in \[0, 1\]"):
        regularizers.create("erm+ema", ema_decay=1.5)
    with pytest.raises(RegistryError, match="unknown hyperparameter 'ema_decay'"):
        regularizers.create("erm+swa", ema_decay=0.9)


def test_the_composed_step_is_the_methods_own():
    batch = make_batch()
    plain, composed = make_model(), make_model()
    regularizers.create("sam").step(closure_for(plain, batch))
    regularizers.create("sam+ema").step(closure_for(composed, batch))
    for a, b in zip(grads(plain), grads(composed), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sam+sw", r"unknown weight averaging 'sw' \(did you mean 'swa'\?\)"),
        ("sam+swa+ema", "already averages its weights; one averaging per method"),
        ("nope+swa", "unknown regularizer 'nope'"),
    ],
)
def test_bad_compositions_are_one_line_errors(name, message):
    with pytest.raises(RegistryError, match=message):
        regularizers.get(name)
    assert not regularizers.is_known(name)


def test_a_plus_sign_is_reserved_in_registered_names():
    @dataclass
    class Plain(Regularizer):
        def step(self, closure):
            return self.report(closure, closure(update_bn=True).loss)

        def cost(self, has_batchnorm):
            return PassCost(1, 1)

    with pytest.raises(RegistryError, match="reserved for weight averaging"):
        regularizers.register("my+method")(Plain)


def test_swa_start_epoch_leaves_at_least_one_snapshot():
    assert SWA(swa_start=0.55).start_epoch(300) == 165
    assert SWA(swa_start=1.0).start_epoch(10) == 9 and SWA(swa_start=0.0).start_epoch(10) == 0
