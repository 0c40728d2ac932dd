"""The conformance suite catches each way a method can break the contract."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from regularizers import PassCost, Regularizer, StepReport, gradients, perturbed_weights, zero_grads
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


@dataclass
class EveryOtherStepSAM(Regularizer):
    """SAM on odd steps with a radius growing with the step count, ERM on even ones: a period-2
    cost, and a step counter as state."""

    state = ("steps_taken",)
    period_declared: int = 2

    def __post_init__(self):
        super().__post_init__()
        self.steps_taken = 0

    def step(self, closure):
        clean = closure(update_bn=True)
        if self.steps_taken % 2 == 1:
            g = gradients(closure.parameters)
            torch._foreach_mul_(g, 0.05 * (1 + self.steps_taken))
            with perturbed_weights(closure.parameters):
                with torch.no_grad():
                    torch._foreach_add_(closure.parameters, g)
                zero_grads(closure.parameters)
                closure()
        self.steps_taken += 1
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return PassCost(3, 3, period=self.period_declared)


@dataclass
class ForgetsToDeclareItsState(EveryOtherStepSAM):
    state = ()


@dataclass
class KeepsAnObjectAsState(Regularizer):
    """State the checkpoint cannot read back with weights_only=True."""

    state = ("memo",)

    def __post_init__(self):
        super().__post_init__()
        self.memo = Memo()

    def step(self, closure):
        return self.report(closure, closure(update_bn=True).loss)

    def cost(self, has_batchnorm):
        return PassCost(1, 1)


class Memo:
    pass


def test_a_declared_period_and_state_pass():
    check_regularizer(EveryOtherStepSAM())


def test_undeclared_state_is_caught_by_the_round_trip():
    with pytest.raises(AssertionError, match="after a state round trip.*`state`"):
        check_regularizer(ForgetsToDeclareItsState())


def test_a_wrong_period_is_caught():
    with pytest.raises(AssertionError, match=r"per 1 step\(s\) but step 1 ran \(1, 1\)"):
        check_regularizer(EveryOtherStepSAM(period_declared=1))


def test_state_that_a_checkpoint_cannot_read_is_caught():
    with pytest.raises(AssertionError, match=r"weights_only=True"):
        check_regularizer(KeepsAnObjectAsState())


def test_state_dict_round_trip_and_refusals():
    method = EveryOtherStepSAM()
    method.steps_taken = 7
    saved = method.state_dict()
    assert saved == {"steps_taken": 7}
    fresh = EveryOtherStepSAM()
    fresh.load_state_dict(saved)
    assert fresh.steps_taken == 7
    with pytest.raises(ValueError, match=r"checkpoint state has keys \['other'\]"):
        fresh.load_state_dict({"other": 1})
    with pytest.raises(ValueError, match="period must be at least 1"):
        PassCost(1, 1, period=0)
    assert PassCost(6, 6, period=5).per_step == pytest.approx(2.4)


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
