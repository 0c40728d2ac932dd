"""The GPU acceptance program, in its reduced CPU mode (run for real, JSON read back), its answers
to bad flags, its time budget, and a part's failure recorded as one line. No figure's value is
asserted beyond being a positive number: timings depend on the machine."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import regularizers
from bench.benchmarks import acceptance, smoke
from bench.benchmarks.acceptance import PARTS, REDUCED, Budget, main, run_part
from bench.benchmarks.packing import PackingLevel, TrialFigure, suggested_gpus_per_trial
from bench.benchmarks.throughput import GridSizes, find_cifar10
from bench.config import BenchmarkConfig


def _run(*flags: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.benchmarks.acceptance", *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=850,  # under pytest-timeout's 900 s, above the 800-s budget and its overrun
        stdin=subprocess.DEVNULL,
    )


def _positive(spread: dict) -> bool:
    return spread["n"] >= 1 and spread["median"] > 0


@pytest.mark.slow
def test_reduced_mode_runs_every_part_and_writes_what_it_printed(tmp_path: Path, repo_root: Path) -> None:
    output = tmp_path / "out" / "acceptance.json"
    empty = tmp_path / "no-data"  # no CIFAR-10 here, whatever the machine's cache holds
    empty.mkdir()
    # A budget no loaded CI machine reaches (the budget's own test is below): every part must run.
    flags = ("--cpu-smoke", "--budget", "800", "--output", str(output), "--data-dir", str(empty))
    done = _run(*flags, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text())

    assert report["mode"] == "reduced" and report["mode_reason"] == "--cpu-smoke"
    assert report["environment"]["device"] == "cpu" and report["environment"]["device_name"]
    assert report["environment"]["torch"] and 0 < report["wall_seconds"] < report["budget_seconds"]
    assert report["data"]["kind"] == "synthetic" and str(empty) in report["data"]["reason"]
    assert list(report["parts"]) == list(PARTS)
    for name, part in report["parts"].items():
        # The reduced mode compiles nothing: that part says so instead of "ok".
        assert part["status"] == ("skipped" if name == "compile" else "ok"), (name, part["reason"])
        assert part["seconds"] >= 0 and part["result"] is not None
    assert report["parts"]["compile"]["reason"]

    # Throughput: every point has images/s > 0 or a reason (channels_last and compile need CUDA).
    cells = report["parts"]["throughput"]["result"]["cells"] + report["parts"]["compile"]["result"]["cells"]
    assert len(cells) == 8 and len({(c["bf16"], c["channels_last"], c["compile"]) for c in cells}) == 8
    for cell in cells:
        assert (cell["status"] == "ok" and _positive(cell["images_per_second"])) or (
            cell["status"] == "skipped" and cell["reason"]
        ), cell
    measured = [c for c in cells if c["status"] == "ok"]
    assert {(c["bf16"], c["compile"]) for c in measured} == {(True, False), (False, False)}
    assert all(c["speedup"] > 0 for c in measured)

    # Every registered regularizer, timed against ERM.
    methods = report["parts"]["regularizers"]["result"]["methods"]
    assert sorted(m["method"] for m in methods) == sorted(regularizers.available())
    for method in methods:
        assert _positive(method["step_seconds"]) and _positive(method["ratio_to_erm"]), method["method"]
    assert next(m for m in methods if m["method"] == "erm")["ratio_to_erm"]["median"] == 1.0

    packing = report["parts"]["packing"]["result"]
    assert [level["trials"] for level in packing["levels"]] == list(REDUCED.packing_levels)
    for level in packing["levels"]:
        assert level["status"] == "ok" and level["total_images_per_second"] > 0
        assert len(level["per_trial_images_per_second"]) == level["trials"]
        assert all(rate > 0 for rate in level["per_trial_images_per_second"])
    assert packing["suggested_gpus_per_trial"] is None  # CPU processes share cores, not a GPU

    runs = {run["config"]: run for run in report["parts"]["smoke"]["result"]["runs"]}
    assert set(runs) == {"digits", "cifar10"} and runs["cifar10"]["dataset"] == "synthetic_cifar10"
    for run in runs.values():
        assert run["exit_code"] == 0 and run["wall_seconds"] > 0, run
        assert run["rows"] == run["completed_rows"] == run["expected_rows"] == len(smoke.METHODS)

    # The table: every part with its status, the figures, where the JSON went.
    printed = done.stdout
    for name in PARTS:
        status = "skipped" if name == "compile" else "ok"
        assert any(line.split()[:2] == [name, status] for line in printed.splitlines()), name
    assert "images/s" in printed and "suggested: resources.gpus_per_trial" not in printed
    assert "synthetic_cifar10" in printed and printed.rstrip().endswith(f"wrote {output}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget", "0"], "--budget must be a positive number"),
        (["--budget", "soon"], "invalid float value"),
        (["--part", "everything"], "invalid choice"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line_and_exit_status_2(flags, message, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(flags)
    captured = capsys.readouterr()
    assert stopped.value.code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], captured.err


def test_an_output_that_is_a_folder_is_refused_before_anything_runs(tmp_path: Path, repo_root: Path) -> None:
    done = _run("--output", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a folder" in lines[0] and "--help" in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_spent_budget_skips_every_part_with_its_reason(tmp_path: Path, capsys) -> None:
    output = tmp_path / "acceptance.json"
    assert main(["--cpu-smoke", "--budget", "1e-9", "--output", str(output), "--data-dir", str(tmp_path)]) == 0
    report = json.loads(output.read_text())
    assert list(report["parts"]) == list(PARTS)
    for part in report["parts"].values():
        assert part["status"] == "skipped" and part["reason"].startswith("time budget of 1e-09 s spent")
    assert "time budget of 1e-09 s spent" in capsys.readouterr().out


def test_a_failing_part_and_point_are_recorded_as_one_line(tmp_path: Path) -> None:
    source = find_cifar10(str(tmp_path))
    budget = Budget(300)
    # A model that does not exist: the whole part fails, as one line.
    part = run_part("regularizers", dataclasses.replace(REDUCED, ratio_model="no_such_model"), source, budget, print)
    assert part.status == "failed" and "no_such_model" in part.reason and "\n" not in part.reason
    assert part.seconds is not None and part.seconds >= 0
    # A batch size no config accepts: each measured point fails, the others are still recorded.
    bad_sizes = dataclasses.replace(REDUCED, grid=GridSizes(batch_size=0, warmup_steps=0, steps_per_block=1, repeats=1))
    part = run_part("throughput", bad_sizes, source, budget, print)
    assert part.status == "failed" and part.reason.startswith("2 of 4 points failed; first: ValidationError")
    statuses = sorted(cell["status"] for cell in part.result["cells"])
    assert statuses == ["failed", "failed", "skipped", "skipped"]
    assert all(cell["reason"] and "\n" not in cell["reason"] for cell in part.result["cells"])


def test_the_packing_suggestion_takes_the_fewest_trials_within_five_percent_of_the_best() -> None:
    def level(trials: int, rate_each: float) -> PackingLevel:
        return PackingLevel(trials, "ok", figures=[TrialFigure(int(rate_each * 10), 10.0, None)] * trials)

    assert suggested_gpus_per_trial([level(1, 100), level(2, 90), level(4, 44)]) == 0.5  # 180 is the best
    assert suggested_gpus_per_trial([level(1, 100), level(2, 51), level(4, 26)]) == 1.0  # 102, 104: within 5%
    assert suggested_gpus_per_trial([PackingLevel(1, "failed", "oom"), level(2, 10)]) == 0.5
    assert suggested_gpus_per_trial([PackingLevel(1, "skipped", "budget")]) is None


@pytest.mark.parametrize("mode", [acceptance.FULL, acceptance.REDUCED])
def test_the_smoke_configs_are_valid_and_sized_for_their_mode(mode, tmp_path: Path) -> None:
    sizes = smoke.SmokeSizes(epochs=mode.smoke_epochs, reduced=mode is acceptance.REDUCED)
    source = find_cifar10(str(tmp_path))
    digits = BenchmarkConfig.model_validate(smoke.digits_config(sizes))
    cifar = BenchmarkConfig.model_validate(smoke.cifar_config(sizes, source))
    assert digits.dataset.name == "digits" and cifar.dataset.name == "synthetic_cifar10"
    assert cifar.model.name == "resnet18" and digits.training.epochs == cifar.training.epochs == mode.smoke_epochs
    assert [entry.name for entry in cifar.regularizers] == list(smoke.METHODS) and cifar.final.seeds == []
    assert cifar.resources.gpus_per_trial == (0 if sizes.reduced else 0.5)


def test_speedups_of_both_grid_halves_are_over_the_fp32_eager_point() -> None:
    def cell(label: str, median: float | None) -> dict:
        spread = None if median is None else {"median": median, "q1": median, "q3": median, "iqr": 0.0, "n": 1}
        return {"label": label, "status": "ok" if median else "skipped", "images_per_second": spread}

    eager = [cell("fp32/contiguous/eager", 100.0), cell("bf16/channels_last/eager", 250.0)]
    compiled = [cell("bf16/channels_last/compiled", 400.0), cell("fp32/contiguous/compiled", None)]
    parts = {"throughput": {"result": {"cells": eager}}, "compile": {"result": {"cells": compiled}}}
    acceptance.add_speedups(parts)
    # IEEE division is correctly rounded and 2.5 and 4 are representable: the ratios are exact.
    assert [c["speedup"] for c in eager + compiled] == [1.0, 2.5, 4.0, None]
    parts["throughput"] = {"result": None}  # no baseline measured: no speed-up anywhere
    acceptance.add_speedups(parts)
    assert [c["speedup"] for c in compiled] == [None, None]
