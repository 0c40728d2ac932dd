"""`sharpbench report`: bad input exits 2 with one line; success prints the HTML path last."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.report.results_folder import own_trials, write_results
from tests.runner import sharpbench_command


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sharpbench_command("report", *args),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (lambda d: [str(d / "absent")], "results folder not found"),
        (lambda d: [str(d)], "no results in"),
        (
            lambda d: [str(write_results(d / "r")), "--baseline", "samm"],
            "--baseline 'samm' has no rows; methods present: asam, erm, sam",
        ),
        (lambda d: [str(write_results(d / "r")), "--out", str(d / "report.pdf")], "--out must name an .html file"),
        (lambda d: ["/dev/null"], "/dev/null is not a folder"),
        (
            lambda d: [str(write_results(d / "r") / "leaderboard")],
            "is the Parquet dataset of the results folder {d}/r: give {d}/r",
        ),
        # under a file, and in /proc (where even root cannot create a file): refused before any figure is drawn
        (
            lambda d: [str(write_results(d / "r")), "--out", str(Path(__file__).resolve() / "x.html")],
            "cannot write the report to",
        ),
        (
            lambda d: [str(write_results(d / "r")), "--out", "/proc/sharpbench-report.html"],
            "cannot write the report to /proc/sharpbench-report.html",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    done = _run(*args(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment.format(d=tmp_path) in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_report_prints_the_html_path(tmp_path):
    # A long path: the printed line must not wrap.
    results = write_results(tmp_path / ("a-rather-long-folder-name-" * 4) / "results")
    out = results.parent / "site" / "page.html"
    done = _run(str(results), "--out", str(out), "--baseline", "sam")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(out.resolve())
    assert out.is_file() and len(list((out.parent / "figures").glob("*.png"))) == 9
    assert "Δ vs sam" in out.read_text(encoding="utf-8")


def test_unreadable_files_are_one_warning_line_each_and_the_report_is_built(tmp_path):
    results = write_results(tmp_path / "r")
    real = next((results / "leaderboard").rglob("*.parquet"))
    (real.parent / "junk.parquet").write_bytes(b"not parquet at all")
    (real.parent / "cut.parquet").write_bytes(real.read_bytes()[:40])  # a truncated copy
    done = _run(str(results))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), done.stderr
    assert any("junk.parquet" in line for line in lines) and any("cut.parquet" in line for line in lines)
    assert "Warning:" not in done.stderr and "read_rows" not in done.stderr  # no Python warning with its source line
    assert (results / "report.html").is_file()


def test_reference_compares_your_run_with_it(tmp_path):
    reference = write_results(tmp_path / "reference")
    own = write_results(tmp_path / "own", trials=own_trials())
    done = _run(str(own), "--reference", str(reference))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str((own / "report.html").resolve())
    summary = (
        f"Against the reference {reference}: 1 of 2 methods have their mean inside the reference 95% interval; "
        "outside: sam; not compared: asam."
    )
    assert done.stderr.splitlines() == [f"tiny: {summary}"]  # the answer at a glance, on the terminal too
    page = (own / "report.html").read_text(encoding="utf-8")
    assert f'<p class="rule" data-reference="summary">{summary}</p>' in page
    assert "your mean lies below the reference interval, by" in page


def test_the_committed_reference_without_your_benchmark_is_one_line_on_the_page(tmp_path, repo_root):
    committed = repo_root / "results" / "reference" / "digits_noisy"
    own = write_results(tmp_path / "own")
    done = _run(str(own), "--reference", str(committed))
    assert done.returncode == 0, done.stderr
    page = (own / "report.html").read_text(encoding="utf-8")
    assert (
        f"The reference {committed} has no results for benchmark tiny (it holds: digits_noisy): no comparison." in page
    )


def test_a_missing_reference_folder_exits_2_with_one_line(tmp_path):
    own = write_results(tmp_path / "own")
    done = _run(str(own), "--reference", str(tmp_path / "nowhere"))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: --reference: results folder not found: {tmp_path / 'nowhere'} "
        f"(run `sharpbench run CONFIG --results {tmp_path / 'nowhere'}` first)"
    ]
    assert not (own / "report.html").exists()
