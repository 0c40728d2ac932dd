"""Every figure as PNG, SVG and PDF, read back: the SVGs opened in headless chromium (Debian's), the
PDFs parsed by pypdf; each method's colour and marker read back from two reports' figures."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pypdf
import pytest
from PIL import Image

import sharpbench
from bench.report import palette
from bench.report.build import build_report
from tests.report.results_folder import TRIALS, write_results
from tests.report.test_browser import CHROMIUM, chromium
from tests.report.test_report import MIN_INK

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it)"
)
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"


def test_every_figure_is_written_in_each_format_and_linked(artifacts):
    pngs = artifacts.paths("png")
    assert pngs == artifacts.png_paths and len(pngs) == 9
    for fmt in ("svg", "pdf"):
        files = artifacts.paths(fmt)
        assert [p.with_suffix(".png") for p in files] == list(pngs)
        assert all(p.is_file() and p.stat().st_size > 1000 for p in files)
    page = artifacts.html_path.read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)" data-format="(svg|pdf)">', page)
    assert len(links) == 2 * len(pngs)
    # Relative to the page, each link opens the file beside it.
    assert {(artifacts.html_path.parent / href).resolve() for href, _ in links} == {
        p.resolve() for fmt in ("svg", "pdf") for p in artifacts.paths(fmt)
    }


def test_pdfs_open_with_one_page_and_the_method_names_as_text(artifacts):
    for path in artifacts.paths("pdf"):
        reader = pypdf.PdfReader(path)
        assert len(reader.pages) == 1, path
        text = reader.pages[0].extract_text()
        figure = next(f for f in artifacts.figures if f.file("pdf") == path)
        methods = [figure.regularizer] if figure.regularizer else (["sam"] if figure.kind == "flatness" else [])
        methods = methods or ["erm", "sam", "asam"]
        assert all(m in text for m in methods), (path, text)
        quantity = "validation accuracy" if figure.kind == "curves" else "test accuracy"
        assert quantity in text or figure.regularizer is not None
        producer = " ".join(str(v) for v in (reader.metadata or {}).values())
        assert "matplotlib.org" not in producer.lower()


def test_the_same_rows_give_the_same_files(artifacts, results_dir, tmp_path):
    again = build_report([results_dir], tmp_path / "again.html")
    for fmt in ("png", "svg", "pdf"):
        assert [p.read_bytes() for p in again.paths(fmt)] == [p.read_bytes() for p in artifacts.paths(fmt)], fmt
    # The page too: it says when the newest row was written, not when it was built.
    assert again.html_path.read_bytes() == artifacts.html_path.read_bytes()
    newest = max(sharpbench.rows(results_dir)["timestamp"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"Rows up to {newest}, from: " in again.html_path.read_text(encoding="utf-8")


def _legend_styles(svg: Path) -> dict[str, tuple[str, str]]:
    """Each legend entry's label → (fill colour, marker path) as drawn in the SVG file: the marker
    before a label is that label's (Matplotlib writes a handle, then its text)."""
    root = ET.parse(svg).getroot()
    shapes = {p.get("id"): " ".join(p.get("d", "").split()) for p in root.iter(f"{SVG}path") if p.get("id")}
    (legend,) = [g for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith("legend")]
    found: dict[str, tuple[str, str]] = {}
    marker: tuple[str, str] | None = None
    for element in legend.iter():
        if element.tag == f"{SVG}use":
            fill = re.search(r"fill: (#[0-9a-f]{6})", element.get("style", ""))
            marker = (fill.group(1) if fill else "none", shapes[element.get(XLINK, "").lstrip("#")])
        elif element.tag == f"{SVG}text" and marker is not None:
            found[element.text or ""] = marker
            marker = None
    return found


def test_a_method_looks_the_same_in_reports_of_different_method_subsets(artifacts, tmp_path):
    """sam and asam, drawn with erm and without: the same colour and marker (a palette by sorted
    position would move them, as tab10 did)."""
    subset = {i: t for i, t in TRIALS.items() if t.regularizer != "erm"}
    alone = build_report([write_results(tmp_path / "r", trials=subset)], tmp_path / "out" / "report.html")
    (full_svg,) = [f.file("svg") for f in artifacts.figures if f.kind == "compute"]
    (alone_svg,) = [f.file("svg") for f in alone.figures if f.kind == "compute"]
    full, part = _legend_styles(full_svg), _legend_styles(alone_svg)
    assert {"erm", "sam", "asam"} <= set(full) and "erm" not in part
    for method in ("sam", "asam"):
        assert part[method] == full[method], method
        assert full[method][0] == palette.style_of(method).color
    assert len({full[m] for m in ("erm", "sam", "asam")}) == 3  # three methods, three looks
    assert len({full[m][1] for m in ("erm", "sam", "asam")}) == 3  # told apart by marker alone (greyscale)


@needs_chromium
def test_svgs_open_in_chromium_with_their_text_as_text(artifacts, tmp_path):
    compute = next(f.file("svg") for f in artifacts.figures if f.kind == "compute")
    dom = chromium(compute, "--dump-dom", "--window-size=1200,600")
    assert dom.lstrip().startswith("<!DOCTYPE svg") or "<svg" in dom[:400]
    texts = re.findall(r"<text\b[^>]*>([^<]*)</text>", dom)
    assert {"erm", "sam", "asam", "test accuracy (fraction; mean, 95% CI)"} <= set(texts)

    # Every SVG, each decoded and drawn: one page that shows them all, screenshotted.
    svgs = artifacts.paths("svg")
    wrapper = tmp_path / "svgs.html"
    wrapper.write_text(
        "<!DOCTYPE html><html><body style='margin:0'>"
        + "".join(f'<img style="display:block" src="{p.resolve().as_uri()}">' for p in svgs)
        + "<script>window.addEventListener('load', function () {"
        "document.body.setAttribute('data-scroll-height', String(document.documentElement.scrollHeight));"
        "for (const el of document.querySelectorAll('img')) { const r = el.getBoundingClientRect();"
        "el.setAttribute('data-rect', [r.left, r.top + window.scrollY, r.width, r.height].map(Math.round).join(','));"
        "el.setAttribute('data-natural-width', String(el.naturalWidth)); } });</script></body></html>"
    )
    dom = chromium(wrapper, "--dump-dom", "--window-size=1200,800")
    images = [dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))) for m in re.finditer(r"<img\b([^>]*)>", dom)]
    boxes = [tuple(map(int, a["data-rect"].split(","))) for a in images if int(a["data-natural-width"]) > 300]
    assert len(boxes) == len(svgs), dom[:2000]
    height = int(re.search(r'data-scroll-height="(\d+)"', dom).group(1))
    shot = tmp_path / "svgs.png"
    chromium(wrapper, f"--screenshot={shot}", f"--window-size=1200,{height}")
    screen = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64) / 255.0
    for left, top, width, box_height in boxes:
        region = screen[top : top + box_height, left : left + width]
        assert float(np.mean(np.any(region < 0.98, axis=-1))) > MIN_INK and float(region.std()) > 0.05


def test_search_figures_draw_in_the_methods_colour(artifacts):
    """Optuna draws every study in tab10 blue: the report redraws each method's trials and bars in
    its own colour (erm's is not blue), read back from the SVG's drawn elements."""
    for figure in artifacts.figures:
        if figure.regularizer is None or figure.path is None:
            continue
        root = ET.parse(figure.file("svg")).getroot()
        (axes,) = [g for g in root.iter(f"{SVG}g") if g.get("id") == "axes_1"]
        tag = "use" if figure.kind == "history" else "path"  # trial markers; importance bars
        fills = {
            m.group(1)
            for e in axes.iter(f"{SVG}{tag}")
            if (m := re.search(r"fill: (#[0-9a-f]{6})", e.get("style", "")))
        }
        own = palette.style_of(figure.regularizer).color
        assert own in fills, (figure.kind, figure.regularizer, fills)
        if own != "#1f77b4":
            assert "#1f77b4" not in fills, (figure.kind, figure.regularizer, fills)
