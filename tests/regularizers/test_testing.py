"""The conformance suite catches each way a method can break the contract."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from regularizers import PassCost, Regularizer, StepReport, gradients, zero_grads
from regularizers.testing import check_regularizer


@dataclass
class SubtractsToRestore(Regularizer):
    """SAM that undoes its perturbation by subtraction."""

    def step(self, closure):
        clean = closure(update_bn=True)
        g = gradients(closure.parameters)
        e = torch._foreach_mul(g, 0.37)
        with torch.no_grad():
            torch._foreach_add_(closure.parameters, e)
        zero_grads(closure.parameters)
        closure()
        with torch.no_grad():
            torch._foreach_sub_(closure.parameters, e)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(2, 2)


@dataclass
class UpdatesBatchNormTwice(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(2, 2)


@dataclass
class AddsOntoTheLoopsGradient(Regularizer):
    """Breaks the gradient rule: keeps what p.grad held when step() began and adds it back."""

    def step(self, closure):
        stale = [None if p.grad is None else p.grad.clone() for p in closure.parameters]
        clean = closure(update_bn=True)
        with torch.no_grad():
            for p, old in zip(closure.parameters, stale, strict=True):
                if old is not None:
                    p.grad.add_(old)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(1, 1)


@dataclass
class MiscountsPasses(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(2, 2)


@dataclass
class ForgesItsReport(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        return StepReport(loss=clean.loss, forward_passes=2, backward_passes=2)

    def cost(self, has_batchnorm):
        return PassCost(2, 2)


@dataclass
class KeepsTheGraph(Regularizer):
    def step(self, closure):
        loss, _ = closure.loss_and_logits(update_bn=True)
        loss.backward(retain_graph=True)
        return self.report(closure, loss)  # not detached

    def cost(self, has_batchnorm):
        return PassCost(1, 0)


@dataclass
class SyncsToHost(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        return self.report(closure, clean.loss, grad_norm=float(clean.loss.item()))

    def cost(self, has_batchnorm):
        return PassCost(1, 1)


@dataclass
class DropsAGradient(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        closure.parameters[0].grad = None
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(1, 1)


@dataclass
class ProducesNaN(Regularizer):
    def step(self, closure):
        clean = closure(update_bn=True)
        closure.parameters[-1].grad.fill_(float("nan"))
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(1, 1)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (SubtractsToRestore, "changed during step"),
        (UpdatesBatchNormTwice, "running statistics of normalization layers"),
        (AddsOntoTheLoopsGradient, "started from stale gradients in p.grad differs"),
        (MiscountsPasses, r"cost\(has_batchnorm=False\)"),
        (ForgesItsReport, "closure counted"),
        (KeepsTheGraph, "detached"),
        (SyncsToHost, "must be a torch.Tensor"),
        (DropsAGradient, "has no gradient"),
        (ProducesNaN, "not finite"),
    ],
)
def test_suite_catches(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_regularizer(broken())


def test_suite_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_regularizer("nso")
    assert torch.equal(torch.rand(3), expected)
