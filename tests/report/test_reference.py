"""``build_report(..., reference=DIR)``: your run against reference results written in the test
(real Parquet rows): per-method comparison on the page, the reference drawn in the seeds figure,
one line for a benchmark the reference lacks, one-line errors for a bad reference folder."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.report.build import ReportError, build_report
from bench.report.reference import Estimate, MethodComparison
from tests.report.results_folder import SAM_SHIFT, own_trials, write_results


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compared")
    reference = write_results(root / "reference")
    own = write_results(root / "own", trials=own_trials())
    return reference, build_report([own], reference=reference)


def test_each_method_is_compared_with_the_reference(compared):
    reference, artifacts = compared
    (comparison,) = artifacts.references
    assert comparison.benchmark == "tiny" and comparison.folder == reference
    by_method = {m.regularizer: m for m in comparison.methods}
    # your leaderboard's order: asam, one search trial and no test, is unranked and listed last
    assert list(by_method) == ["erm", "sam", "asam"]
    erm, sam, asam = by_method["erm"], by_method["sam"], by_method["asam"]
    assert erm.inside is True and erm.reference == erm.yours  # the same rows
    assert erm.verdict() == "your mean lies inside the reference interval"
    assert sam.inside is False and sam.yours.mean == pytest.approx(sam.reference.mean + SAM_SHIFT)
    gap = sam.reference.ci_low - sam.yours.mean
    assert gap > 0 and sam.verdict() == f"your mean lies below the reference interval, by {gap:.4f}"
    assert asam.inside is None and asam.reference.n == 0  # ranked by one search trial: no interval
    assert "the reference has no interval (n=1)" in asam.verdict()
    assert comparison.summary() == (
        f"Against the reference {reference}: 1 of 2 methods have their mean inside the reference 95% interval; "
        "outside: sam; not compared: asam."
    )


def test_the_page_shows_the_comparison(compared):
    reference, artifacts = compared
    page = artifacts.html_path.read_text(encoding="utf-8")
    assert f"Compared with the reference: {reference} (benchmarks: tiny)." in page
    summary = re.search(r'<p class="rule" data-reference="summary">([^<]*)</p>', page).group(1)
    assert summary.startswith(f"Against the reference {reference}: 1 of 2 methods")
    table = re.search(r'<table class="leaderboard reference".*?</table>', page, re.DOTALL).group(0)
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td[^>]*>([^<]*)</td></tr>", table)
    assert [r[0] for r in rows] == ["erm", "sam", "asam"]
    (_, ref_sam, own_sam, verdict), sam = rows[1], artifacts.references[0].methods[1]
    assert ref_sam == sam.reference.text() and re.fullmatch(r"0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] \(n=3\)", ref_sam)
    assert own_sam == sam.yours.text() and verdict.startswith("your mean lies below the reference interval")
    assert rows[2][1] == "0.9100 (best search trial, n=1)"  # asam


def test_the_seeds_figure_draws_the_reference_intervals(compared):
    reference, artifacts = compared
    (seeds,) = [f for f in artifacts.figures if f.kind == "seeds"]
    assert str(reference) in seeds.caption and "reference's 95% interval" in seeds.caption
    root = ET.parse(seeds.file("svg")).getroot()
    svg = "{http://www.w3.org/2000/svg}"
    bands = [e for e in root.iter(f"{svg}use") if "fill-opacity: 0.16" in e.get("style", "")]
    assert len(bands) == 2  # erm and sam have a reference interval; asam (one search trial) none
    labels = {t.text for t in root.iter(f"{svg}text")}
    assert {"reference interval", "reference mean"} <= labels


def test_without_a_reference_nothing_is_compared(artifacts):
    assert artifacts.references == ()
    page = artifacts.html_path.read_text(encoding="utf-8")
    assert "data-reference" not in page and "reference interval" not in page


def test_a_reference_without_the_benchmark_says_so_in_one_line(tmp_path):
    reference = write_results(tmp_path / "reference", benchmark="other")
    artifacts = build_report([write_results(tmp_path / "own")], reference=reference)
    assert artifacts.references == ()
    page = artifacts.html_path.read_text(encoding="utf-8")
    (line,) = re.findall(r'<p class="note" data-reference="absent">([^<]*)</p>', page)
    assert line == f"The reference {reference} has no results for benchmark tiny (it holds: other): no comparison."


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent", "--reference: results folder not found: {d}/absent"),
        (lambda d: d, "--reference: no results in {d}"),
        (lambda d: Path(__file__), "--reference: {f} is not a folder"),
    ],
)
def test_a_bad_reference_folder_is_one_line(tmp_path, make, message):
    own = write_results(tmp_path / "own")
    (tmp_path / "empty").mkdir()
    folder = make(tmp_path / "empty")
    with pytest.raises(ReportError) as error:
        build_report([own], tmp_path / "out" / "report.html", reference=folder)
    text = str(error.value)
    assert text.startswith(message.format(d=tmp_path / "empty", f=Path(__file__))) and "\n" not in text
    assert not (tmp_path / "out").exists()  # refused before anything was drawn


def test_a_comparison_verdict_reads_either_way():
    reference = Estimate(0.90, 0.88, 0.92, 5)
    above = MethodComparison("sam", reference, Estimate(0.95, 0.94, 0.96, 5))
    assert above.inside is False and above.verdict() == "your mean lies above the reference interval, by 0.0300"
    edge = MethodComparison("sam", reference, Estimate(0.92, None, None, 1))
    assert edge.inside is True  # the interval's ends count as inside
    assert MethodComparison("sam", None, reference).verdict() == "not in the reference"
    assert MethodComparison("sam", reference, None).inside is None
