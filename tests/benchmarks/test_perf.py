"""`bench.benchmarks.perf`: spreads (median, quartiles), the reliability rule, interleaved rounds.

No test here asserts a speed: timings depend on the machine and its load. They check the
arithmetic that turns timings into figures, the rule that marks figures unreliable (on hand-made
spreads), and the order in which steps run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec

import regularizers
from bench.benchmarks.perf import benchmark_steps
from bench.measure.timing import MIN_ROUNDS, Reliability, Spread, judge
from regularizers import PassCost, Regularizer

# float64 quantiles are a sort and one linear interpolation: a few roundings of relative size
# 2**-53 each, so 1e-14 relative leaves a wide margin on any CPU.
REL = 1e-14


# ------------------------------------------------------------------------------ Spread


def test_spread_of_known_samples() -> None:
    # Linear interpolation at position p·(n − 1) of the sorted samples [1, 2, 3, 4]:
    # q1 at 0.75 → 1.75, median at 1.5 → 2.5, q3 at 2.25 → 3.25.
    spread = Spread.of([4.0, 1.0, 3.0, 2.0])
    assert (spread.q1, spread.median, spread.q3) == pytest.approx((1.75, 2.5, 3.25), rel=REL)
    assert spread.iqr == pytest.approx(1.5, rel=REL) and spread.n == 4
    odd = Spread.of([5.0, 1.0, 3.0])  # odd count: the median is the middle sample itself
    assert (
        odd.median == pytest.approx(3.0, rel=REL)
        and odd.q1 == pytest.approx(2.0, rel=REL)
        and odd.q3 == pytest.approx(4.0, rel=REL)
    )
    single = Spread.of([0.25])
    assert (single.q1, single.median, single.q3, single.iqr) == (0.25, 0.25, 0.25, 0.0)


def test_spread_matches_torch_benchmark_measurement() -> None:
    rng = random.Random(0)
    for n in (2, 5, 10, 33):
        samples = [rng.lognormvariate(-5, 1) for _ in range(n)]
        spread = Spread.of(samples)
        reference = Measurement(number_per_run=1, raw_times=samples, task_spec=TaskSpec(stmt="", setup=""))
        assert spread.median == pytest.approx(reference.median, rel=REL)
        assert spread.iqr == pytest.approx(reference.iqr, rel=REL, abs=REL * spread.median)
        assert spread.q1 <= spread.median <= spread.q3


def test_spread_dict_carries_median_quartiles_and_iqr() -> None:
    record = Spread.of([3.0, 1.0, 2.0, 10.0]).to_dict()
    assert set(record) == {"median", "q1", "q3", "iqr", "n"}
    assert record["iqr"] == record["q3"] - record["q1"]


@pytest.mark.parametrize("samples", [[], [1.0, math.nan], [math.inf]])
def test_spread_rejects_no_or_non_finite_samples(samples: list[float]) -> None:
    with pytest.raises(ValueError):
        Spread.of(samples)


# ------------------------------------------------------------------------------ the rule


def _spread(median: float, iqr: float, n: int = 10) -> Spread:
    return Spread(median=median, q1=median - iqr / 2, q3=median + iqr / 2, n=n)


STEADY = _spread(0.100, 0.005)  # a step time with a 5% IQR


def test_precise_figures_are_reliable() -> None:
    verdict = judge(STEADY, _spread(1.00, 0.003))  # costs exactly its passes, measured precisely
    assert verdict == Reliability(step_time=None, ratio=None) and verdict.reliable and verdict.reason is None


def test_too_few_rounds_make_every_figure_unreliable() -> None:
    verdict = judge(_spread(0.1, 0.0, n=MIN_ROUNDS - 1), _spread(1.0, 0.0, n=MIN_ROUNDS - 1))
    assert verdict.step_time is not None and verdict.ratio is not None
    assert verdict.reason == f"{MIN_ROUNDS - 1} rounds < {MIN_ROUNDS}"  # said once, not twice
    assert judge(_spread(0.1, 0.0, n=MIN_ROUNDS), _spread(1.0, 0.0, n=MIN_ROUNDS)).reliable


def test_step_time_spread_above_ten_percent_of_median() -> None:
    assert judge(_spread(0.100, 0.009), _spread(1.0, 0.0)).reliable
    verdict = judge(_spread(0.100, 0.011), _spread(1.0, 0.0))
    assert verdict.step_time is not None and verdict.ratio is None and "11%" in verdict.reason


@pytest.mark.parametrize(
    ("overhead", "iqr", "reliable"),
    [
        (0.39, 0.80, False),  # the weight decay "at 0.39× ERM": the spread exceeds the effect
        (3.82, 0.30, True),  # far from 1: the 2.82 effect is over 9 IQRs
        (3.82, 1.60, False),  # an effect of less than 2 IQRs
        (2.45, 1.36, False),  # measured on a loaded machine: the effect (1.45) is not 2 IQRs
        (1.03, 0.06, False),  # wider than the 0.05 margin of the target and than half the effect
        (1.03, 0.04, True),  # within the target's margin
        (1.40, 0.15, True),  # wider than 0.05, but the 0.40 effect is over 2 IQRs
        (1.20, 0.15, False),  # the 0.20 effect is under 2 IQRs
        (1.00, 0.00, True),  # erm itself
    ],
)
def test_overhead_spread_against_its_effect(overhead: float, iqr: float, reliable: bool) -> None:
    verdict = judge(STEADY, _spread(overhead, iqr))
    assert verdict.step_time is None
    assert (verdict.ratio is None) is reliable, verdict.ratio


# ------------------------------------------------------------------------------ timing runs


STEP_LOG: list[str] = []


def _probe(label: str) -> type[Regularizer]:
    @dataclass
    class Probe(Regularizer):
        """Plain gradient that logs each step, to see the order in which methods run."""

        def step(self, closure):
            STEP_LOG.append(label)
            clean = closure(update_bn=True)
            return self.report(closure, clean.loss)

        def cost(self, has_batchnorm):
            return PassCost(forward=1, backward=1)

    return Probe


@pytest.fixture
def probes():
    names = ["perf_probe_a", "perf_probe_b"]
    for name in names:
        regularizers.register(name)(_probe(name))
    STEP_LOG.clear()
    yield names
    for name in names:
        regularizers.unregister(name)


def test_methods_are_interleaved_in_blocks(probes: list[str]) -> None:
    a, b = probes
    timings = benchmark_steps(["mlp"], [a, b], batch_size=8, warmup=1, repeats=3, steps_per_block=2)
    # warm-up: one step each in turn; then every round runs a block of 2 steps of each method,
    # starting one method later each round: (erm, a, b), (a, b, erm), (b, erm, a)
    assert STEP_LOG == [a, b] + [a, a, b, b] + [a, a, b, b] + [b, b, a, a]
    assert [t.method for t in timings] == ["erm", a, b]
    assert all(t.rounds == 3 and t.steps_per_block == 2 and t.step_seconds.n == 3 for t in timings)


def test_figures_are_consistent() -> None:
    batch = 8
    timings = benchmark_steps(
        ["mlp"], ["sam", "nso"], batch_size=batch, warmup=1, repeats=MIN_ROUNDS, epoch_samples=1000
    )
    by_method = {t.method: t for t in timings}
    assert list(by_method) == ["erm", "sam", "nso"]  # erm joins first, as the reference
    erm = by_method["erm"]
    # Each round's ratio for erm is t / t, exactly 1.0 in IEEE arithmetic, so every quartile of
    # it is exactly 1 and its spread exactly 0: bit-exactness is the contract here.
    assert (erm.ratio_to_erm.q1, erm.ratio_to_erm.median, erm.ratio_to_erm.q3, erm.ratio_to_erm.iqr) == (
        1.0,
        1.0,
        1.0,
        0.0,
    )
    assert erm.overhead == erm.ratio_to_erm
    assert (by_method["sam"].forward_passes, by_method["sam"].backward_passes) == (2, 2)
    assert by_method["nso"].pass_equivalents == 2.0  # no BatchNorm in the MLP: no extra clean forward
    for t in timings:
        for spread in (t.step_seconds, t.ratio_to_erm, t.overhead):
            assert spread.n == MIN_ROUNDS and spread.q1 <= spread.median <= spread.q3
            assert spread.iqr == pytest.approx(spread.q3 - spread.q1, rel=REL, abs=REL * spread.q3)
        # overhead per round = ratio per round / a constant; quantiles commute with that scaling
        scale = t.pass_equivalents / erm.pass_equivalents
        for name in ("q1", "median", "q3"):
            assert getattr(t.overhead, name) == pytest.approx(getattr(t.ratio_to_erm, name) / scale, rel=REL)
        assert t.samples_per_second == pytest.approx(batch / t.step_seconds.median, rel=REL)
        assert t.epoch_seconds == pytest.approx(1000 / t.samples_per_second, rel=REL)
        assert t.reliability == judge(t.step_seconds, t.overhead)
        record = t.to_dict()
        assert record["reliable"] is t.reliable and (record["reason"] is None) is t.reliable
        assert record["step_seconds"] == t.step_seconds.to_dict()


def test_a_method_with_a_period_is_timed_over_whole_periods() -> None:
    """LookSAM (k = 5 by default): each block runs whole periods, so its passes per step are the
    mean over them, 6/5, whichever step of its period the warm-up left it at."""
    assert regularizers.create("looksam").cost(False) == PassCost(6, 6, period=5)
    timings = benchmark_steps(["mlp"], ["looksam"], batch_size=8, warmup=1, repeats=MIN_ROUNDS, steps_per_block=1)
    looksam = next(t for t in timings if t.method == "looksam")
    assert (looksam.forward_passes, looksam.backward_passes) == (pytest.approx(6 / 5), pytest.approx(6 / 5))
    assert looksam.pass_equivalents == pytest.approx(6 / 5) and looksam.step_seconds.n == MIN_ROUNDS


@pytest.mark.parametrize("bad", [{"repeats": 0}, {"steps_per_block": 0}, {"warmup": -1}])
def test_bad_counts_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        benchmark_steps(["mlp"], ["erm"], **bad)
