"""A trial and the throughput benchmark on CIFAR-format files: the real torchvision loader, the
batched augmentation, a CIFAR ResNet and the flatness metrics, end to end on CPU."""

from __future__ import annotations

import math

from bench.benchmarks.perf import benchmark_steps
from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.training import TrialSpec, run_trial


def test_cifar_trial_with_augmentation_and_flatness(cifar10_dir):
    root, _ = cifar10_dir
    spec = TrialSpec(
        benchmark="cifar_unit",
        dataset=DataConfig(
            name="cifar10", data_dir=str(root), val_fraction=0.2, crop_padding=4, horizontal_flip=True, cutout=8
        ),
        model=ModelConfig(name="resnet18", options={"width": 4}),
        training=TrainingConfig(epochs=2, batch_size=16, learning_rate=0.05, weight_decay=5e-4),
        regularizer="sam",
        flatness=FlatnessConfig(
            when="final",
            subset_size=16,
            batch_size=8,
            eigen_max_iterations=3,
            trace_min_probes=2,
            trace_max_probes=2,
            sharpness_steps=2,
        ),
        seed=0,
    )
    result = run_trial(spec)
    steps = 80 // 16  # 100 training images, 20 held out for validation
    assert result.epochs[-1].forward_passes == 2 * steps * 2
    assert 0.0 <= result.test.test_accuracy <= 1.0 and math.isfinite(result.test.test_loss)
    assert set(result.epochs[-1].flatness) == {
        "hessian_top_eigenvalue",
        "hessian_eigen_iterations",
        "hessian_eigen_converged",
        "hessian_trace",
        "hessian_trace_stderr",
        "hessian_trace_probes",
        "epsilon_sharpness",
        "adaptive_sharpness",
    }


def test_perf_on_a_real_dataset_reports_epoch_time(cifar10_dir):
    root, _ = cifar10_dir
    timings = benchmark_steps(
        ["resnet18"], ["sam"], dataset="cifar10", data_dir=str(root), batch_size=8, warmup=1, repeats=2
    )
    assert [t.method for t in timings] == ["erm", "sam"]
    erm, sam = timings
    assert (erm.forward_passes, sam.forward_passes) == (1, 2)
    assert erm.ratio_to_erm.median == 1.0  # per round t / t: exactly 1 (no speed is asserted for sam)
    for timing in timings:
        # epoch time follows from the training split: 100 images less the 20% validation default
        # (the same divisions as bench/benchmarks/perf.py, so far inside math.isclose's 1e-9)
        assert math.isclose(timing.epoch_seconds, 80 / timing.samples_per_second)
        assert math.isclose(timing.samples_per_second, 8 / timing.step_seconds.median)
        assert not timing.reliable and timing.reliability.reason == "2 rounds < 4"
