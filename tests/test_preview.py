"""``sharpbench run --dry-run``: the plan printed from the run's own plan, an estimate from perf
figures by hand arithmetic, and nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.catalog import load_benchmark
from bench.data import load_dataset
from bench.plan import plan_methods
from bench.preview import PreviewError, StepFigure, lines, preview, read_perf
from tests.runner import sharpbench

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def _figure(method: str, samples_per_second: float, model: str = "mlp") -> dict:
    return {
        "model": model,
        "method": method,
        "device": "cpu",
        "batch_size": 64,
        "samples_per_second": samples_per_second,
    }


def test_the_plan_is_the_runs_plan_and_the_estimate_is_its_arithmetic(tmp_path: Path) -> None:
    config = load_benchmark(SMOKE)
    perf = tmp_path / "perf.json"
    perf.write_text(json.dumps([_figure("erm", 1000.0), _figure("sam", 500.0), _figure("erm", 1.0, model="cnn")]))
    got = preview(config, perf=read_perf(perf), perf_source=str(perf), num_cpus=2)
    plans = plan_methods(config)
    assert [(m.method, m.search_trials, m.epochs, m.passes_per_step) for m in got.methods] == [
        (p.regularizer, p.budget.trials, p.budget.epochs, p.passes_per_step) for p in plans
    ]
    assert all(m.final_runs == 2 for m in got.methods) and got.trials == 2 * (2 + 2)
    assert got.concurrency == 2  # 2 CPUs, 1 per trial, no max_concurrent_trials
    train = len(load_dataset(config.dataset).train)
    assert got.train_samples == train
    # per trial: epochs × train / samples per second; search and finals over 2 slots
    erm, sam = 2 * train / 1000.0, 2 * train / 500.0
    search, finals = got.estimate_seconds()
    assert search == pytest.approx((2 * erm + 2 * sam) / 2) and finals == pytest.approx((2 * erm + 2 * sam) / 2)
    text = "\n".join(lines(got, config))
    steps = math.ceil(train / 64)
    assert f"{train} training samples = {steps} steps per epoch" in text
    assert f"{2 * steps * 2:,}" in text and f"{2 * steps * 4:,}" in text  # passes per trial: erm, sam
    assert "concurrency: 2 trials at once (2 CPUs here)" in text and f"time estimate (from {perf})" in text


def test_missing_figures_say_how_to_measure(tmp_path: Path) -> None:
    config = load_benchmark(SMOKE)
    text = "\n".join(lines(preview(config, num_cpus=1), config))
    assert "concurrency: 1 trial at once" in text
    hint = "time estimate: none (no step figures); measure with: OMP_NUM_THREADS=1 sharpbench perf --model mlp"
    assert hint + " --method erm" in text
    partial = preview(config, perf=[read_perf_figure()], perf_source="p.json", num_cpus=1)
    assert partial.estimate_seconds() is None
    assert "p.json has no figures for mlp with sam" in "\n".join(lines(partial, config))


def read_perf_figure():
    from bench.preview import StepFigure

    return StepFigure("mlp", "erm", "cpu", 64, 1000.0)


def test_bad_perf_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(PreviewError, match="cannot read perf figures"):
        read_perf(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"model": "mlp"}]')
    with pytest.raises(PreviewError, match="is not the output of `sharpbench perf --format json`"):
        read_perf(bad)


def test_cli_dry_run_prints_and_writes_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = sharpbench("run", str(SMOKE), "--results", str(results), "--dry-run", "--num-cpus", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("smoke: dry run, nothing started or written. 2 methods, 8 trials")
    assert "erm" in done.stdout and "sam" in done.stdout and "resources per trial: 1 CPU, no GPU" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no results folder, no Ray or MLflow files
    # the run folder's perf.json is used when present
    results.mkdir()
    (results / "perf.json").write_text(json.dumps([_figure("erm", 1000.0), _figure("sam", 500.0)]))
    done = sharpbench("run", str(SMOKE), "--results", str(results), "--dry-run", cwd=tmp_path)
    assert done.returncode == 0 and f"time estimate (from {results / 'perf.json'})" in done.stdout
    assert sorted(p.name for p in results.iterdir()) == ["perf.json"]
    # bad input: one line, exit 2
    for args in (["--dry-run", "--perf", str(tmp_path / "nope.json")], ["--perf", str(results / "perf.json")]):
        done = sharpbench("run", str(SMOKE), "--results", str(results), *args, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    # a results "folder" that is a file: refused as the run itself would refuse it
    done = sharpbench("run", str(SMOKE), "--results", str(results / "perf.json"), "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and done.stderr.count("\n") == 1


def test_slots_are_the_trials_the_resources_hold() -> None:
    from bench.config import ResourcesConfig

    assert ResourcesConfig(cpus_per_trial=1).slots(2, 0) == 2
    assert ResourcesConfig(cpus_per_trial=1.5).slots(4, 0) == 2  # whole trials only
    assert ResourcesConfig(cpus_per_trial=4).slots(2, 0) == 1  # at least one: Ray queues it
    assert ResourcesConfig(cpus_per_trial=1, gpus_per_trial=0.25).slots(16, 2) == 8  # the GPUs bound it
    assert ResourcesConfig(cpus_per_trial=1, gpus_per_trial=0.5).slots(16, 0) == 1
    # a trial on several workers holds all of them
    assert ResourcesConfig(cpus_per_trial=2, workers_per_trial=3).slots(13, 0) == 2
    assert ResourcesConfig(cpus_per_trial=1, gpus_per_trial=1, workers_per_trial=2).slots(64, 7) == 3


def test_passes_are_those_the_trials_run(tmp_path: Path) -> None:
    """Steps per epoch drop the short last batch as the loader does; passes per step count the
    model's BatchNorm (MSAM's clean forward) and periods (LookSAM's mean); SWA adds one forward
    sweep of the training split per snapshot with BatchNorm."""
    path = tmp_path / "b.yaml"
    path.write_text(
        "benchmark: b\nmodel: {name: cnn}\ntraining: {epochs: 4, batch_size: 64}\nsearch: {asha: {enabled: false}}\n"
        "regularizers: [erm, msam, looksam, {name: sam+swa, fixed: {swa_start: 0.5}}]\n"
    )
    config = load_benchmark(path)
    got = preview(config, num_cpus=2)
    samples = len(load_dataset(config.dataset).train)
    steps = samples // 64  # 1079 training digits: 16 full batches, the 55 left over dropped
    assert samples % 64 and got.steps_per_epoch(64) == steps == 16
    by_method = {m.method: m for m in got.methods}
    assert by_method["msam"].passes_per_step == 3  # 2 forward + 1 backward with BatchNorm
    assert by_method["looksam"].passes_per_step == pytest.approx(2.4)
    # SWA with swa_start fixed at 0.5: snapshots after epochs 3 and 4, each sweep ⌈1079/64⌉ = 17
    # batches (the in-order sweep keeps the short last batch).
    assert by_method["sam+swa"].extra_forward_passes == 2 * 17
    printed = "\n".join(lines(got, config))
    assert f"{4 * 4 * steps + 2 * 17:,}" in printed.splitlines()[5]  # sam+swa's passes per trial
    assert "ASHA" not in printed and "with SWA's BatchNorm sweeps" in printed


def test_passes_per_step_are_the_most_a_searched_trial_can_cost(tmp_path: Path) -> None:
    """NSO draws k ∈ 1…3 noise samples per step (2k passes, + 1 clean forward with BatchNorm), AMP
    takes 1…2 inner steps: the plan's "at most" is at the top of those ranges, as trials can run them."""
    import regularizers

    path = tmp_path / "b.yaml"
    path.write_text(
        "benchmark: b\nmodel: {name: cnn}\ntraining: {epochs: 4}\nsearch: {asha: {enabled: false}}\n"
        "regularizers: [nso, amp]\n"
    )
    config = load_benchmark(path)
    by_method = {m.method: m for m in preview(config, num_cpus=2).methods}
    plans = {plan.regularizer: plan for plan in plan_methods(config)}
    for name, key in (("nso", "num_samples"), ("amp", "inner_steps")):
        (domain,) = [p.domain for p in plans[name].params if p.name == key]
        top = regularizers.create(name, **{key: domain.high}).cost(has_batchnorm=True).per_step
        bottom = regularizers.create(name, **{key: domain.low}).cost(has_batchnorm=True).per_step
        assert top > bottom and by_method[name].passes_per_step == top


def test_a_trial_on_several_workers_is_said_so(tmp_path: Path) -> None:
    """Its resources are N workers' (the slots count them all), and the estimate is one worker's."""
    config = load_benchmark(SMOKE)
    config = config.model_copy(update={"resources": config.resources.model_copy(update={"workers_per_trial": 2})})
    perf = [
        StepFigure(model="mlp", method=m, device="cpu", batch_size=64, samples_per_second=500.0) for m in ("erm", "sam")
    ]
    text = "\n".join(lines(preview(config, perf=perf, perf_source="p.json", num_cpus=4), config))
    assert "resources per trial: 2 workers × (1 CPU, no GPU), one Ray Train run; concurrency: 2 trials" in text
    assert "at one worker's speed (2 workers' is not measured)" in text
