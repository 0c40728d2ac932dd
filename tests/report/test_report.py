"""build_report on a results folder made in the test: files written and read back, the page's
contents, several folders, and the cases without a figure."""

from __future__ import annotations

import base64
import re
import shutil
import struct
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from bench.leaderboard import build_leaderboard, render
from bench.report.build import FIGURE_KINDS, SUITE, ReportError, build_report
from bench.report.page import leaderboard_cells
from bench.results.parquet import read_rows
from tests.report.results_folder import TRIALS, own_trials, write_results

#: A figure is "drawn" when this share of its pixels differs from white (axes, text and points
#: cover far more; an empty canvas has none).
MIN_INK = 0.01


def ink(image: np.ndarray) -> float:
    """Share of the pixels that are not white (RGB channels in [0, 1])."""
    return float(np.mean(np.any(image[..., :3] < 0.98, axis=-1)))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header (IHDR), independent of any image library."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_every_figure_is_written_and_drawn(artifacts, results_dir):
    assert artifacts.html_path == results_dir / "report.html"
    # Four benchmark-wide figures, then history and importance per method (erm, sam, asam).
    assert [(f.kind, f.regularizer) for f in artifacts.figures][:4] == [
        ("compute", None),
        ("seeds", None),
        ("curves", None),
        ("flatness", None),
    ]
    assert {(f.kind, f.regularizer) for f in artifacts.figures[4:]} == {
        (k, m) for k in FIGURE_KINDS[4:] for m in ("erm", "sam", "asam")
    }
    (curves,) = [f for f in artifacts.figures if f.kind == "curves"]
    # erm's final seeds end at 0.93, 0.93, 0.92 (median 0.93); sam's reach it at epoch 4 (80 passes).
    assert "Time to erm's final validation accuracy (the median of its runs' last epochs), 0.9300" in curves.caption
    assert "sam 80 passes, 20 s (3/3 runs)" in curves.caption
    missing = [f for f in artifacts.figures if f.path is None]
    # asam has one completed trial: no importance, and the caption says why.
    assert [(f.kind, f.regularizer) for f in missing] == [("importance", "asam")]
    assert "needs at least 2" in missing[0].caption
    assert len(artifacts.png_paths) == 9
    for path in artifacts.png_paths:
        assert path.parent == results_dir / "figures"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert ink(image) > MIN_INK, path


def test_png_paths_of_a_method_are_what_its_mlflow_run_carries(artifacts):
    names = sorted(p.name for p in artifacts.png_paths_of("tiny", "sam"))
    assert names == [
        "tiny-compute.png",
        "tiny-curves.png",
        "tiny-flatness.png",
        "tiny-sam-history.png",
        "tiny-sam-importance.png",
        "tiny-seeds.png",
    ]
    assert artifacts.png_paths_of("other") == ()


def test_leaderboard_markdown_and_table_match_the_leaderboard(artifacts, results_dir):
    (board,) = build_leaderboard(read_rows(results_dir))
    assert artifacts.leaderboard_markdown == {"tiny": render([board], "markdown")}
    header, rows = leaderboard_cells(board)
    assert header[:2] == ["Rank", "Method"] and [r[1] for r in rows] == [s.regularizer for s in board.standings]
    page = artifacts.html_path.read_text(encoding="utf-8")
    table = re.search(r"<table class=\"leaderboard\".*?</table>", page, re.DOTALL).group(0)
    assert table.count("<tr>") == 1 + len(board.standings)
    for row in rows:
        for cell in row:
            assert f">{cell.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</td>" in table


def test_the_page_is_self_contained(artifacts):
    page = artifacts.html_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(artifacts.png_paths)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<link|@import|url\(", page)
    # The embedded images are the PNG files, byte for byte.
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {p.read_bytes() for p in artifacts.png_paths}


def test_building_leaves_pyplot_style_alone(results_dir, tmp_path):
    """Optuna's plots switch pyplot to ggplot for good; the report keeps that to its own figures."""
    before = dict(matplotlib.rcParams)
    build_report([results_dir], tmp_path / "again.html")
    after = dict(matplotlib.rcParams)
    assert {k: v for k, v in after.items() if before.get(k) != v and k != "backend"} == {}


def test_no_flatness_gives_a_caption_not_a_figure(tmp_path):
    trials = {i: t for i, t in TRIALS.items() if t.hessian_trace is None}
    artifacts = build_report([write_results(tmp_path, trials=trials)])
    (flatness,) = [f for f in artifacts.figures if f.kind == "flatness"]
    assert flatness.path is None and "No completed run measured flatness" in flatness.caption
    assert "No completed run measured flatness" in artifacts.html_path.read_text(encoding="utf-8")


def test_several_folders_and_a_copy(tmp_path, results_dir):
    """Reference results and one's own: both benchmarks on one page; a folder copied in twice
    counts its rows once."""
    own = {i: t for i, t in TRIALS.items() if t.regularizer == "erm"}
    other = write_results(tmp_path / "own", trials=own, with_config=False, benchmark="mine")
    copy = tmp_path / "copy"
    shutil.copytree(results_dir, copy)
    artifacts = build_report([results_dir, other, copy], tmp_path / "out" / "both.html")
    assert artifacts.html_path.is_file() and (tmp_path / "out" / "figures").is_dir()
    assert set(artifacts.leaderboard_markdown) == {"mine", "tiny"}
    assert "(n=3)" in artifacts.leaderboard_markdown["tiny"]  # not n=6: the copy's rows are the same runs
    assert {f.benchmark for f in artifacts.figures} == {"mine", "tiny", SUITE}


def test_two_benchmarks_open_with_the_suite_section(tmp_path):
    """The suite across benchmarks comes first: its board as a table, its rules, the
    critical-difference diagram and the performance profiles; one benchmark has none."""
    folder = tmp_path / "results"
    write_results(folder)
    write_results(folder, trials=own_trials(), benchmark="other", with_config=False)
    artifacts = build_report([folder])
    suite = [f for f in artifacts.figures if f.benchmark == SUITE]
    assert [(f.kind, f.path is not None) for f in suite] == [("critical-difference", True), ("profiles", True)]
    assert artifacts.figures[:2] == tuple(suite)  # first on the page too
    for figure in suite:
        assert ink(matplotlib.image.imread(figure.path)) > MIN_INK
    page = artifacts.html_path.read_text(encoding="utf-8")
    assert page.index('id="suite"') < page.index('id="b-tiny"')
    table = re.search(r'<table class="leaderboard" data-suite="board">.*?</table>', page, re.DOTALL).group(0)
    assert table.count("<tr>") == 1 + 3  # header, erm, sam, asam
    assert "Friedman test over the ranks" in page and "relative error reduction vs erm" in page
    single = build_report([write_results(tmp_path / "single")], tmp_path / "single.html")
    assert not [f for f in single.figures if f.benchmark == SUITE]
    assert 'id="suite"' not in single.html_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: ([d / "absent"], None, None), "results folder not found"),
        (lambda d: ([d], None, None), "no results in"),
        (
            lambda d: ([write_results(d / "r")], None, "samm"),
            "--baseline 'samm' has no rows; methods present: asam, erm, sam",
        ),
        (lambda d: ([write_results(d / "r")], d / "report.txt", None), "--out must name an .html file"),
    ],
)
def test_bad_input_raises_one_line(tmp_path, make, message):
    folders, out, baseline = make(tmp_path)
    with pytest.raises(ReportError) as error:
        build_report(folders, out, baseline=baseline)
    assert message in str(error.value) and "\n" not in str(error.value)
