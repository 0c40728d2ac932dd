"""The report in a real headless browser (Debian's ``chromium``, installed by ``.ci/run``): every
image decodes, and the table and every figure render as non-blank regions of a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.test_report import MIN_INK, png_size

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it)"
)
WIDTH = 1400


def chromium(page: Path | str, *args: str) -> str:
    """Run headless chromium on ``page`` (a file, or a loopback URL) with a fresh profile; returns
    stdout. The flags keep it off the network and away from any display or sandbox that a
    container lacks."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--virtual-time-budget=10000",
                f"--user-data-dir={profile}",
                *args,
                page if isinstance(page, str) else page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rects(dom: str, tag: str) -> list[tuple[dict[str, str], tuple[int, int, int, int]]]:
    """Each ``tag`` element's attributes and its layout box (left, top, width, height) in CSS px,
    as the page's own load handler wrote them."""
    out = []
    for match in re.finditer(rf"<{tag}\b([^>]*)>", dom):
        attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
        left, top, width, height = map(int, attributes["data-rect"].split(","))
        out.append((attributes, (left, top, width, height)))
    return out


def test_table_and_every_figure_render(artifacts, tmp_path):
    dom = chromium(artifacts.html_path, "--dump-dom", f"--window-size={WIDTH},1000")
    images = _rects(dom, "img")
    tables = _rects(dom, "table")
    assert len(images) == len(artifacts.png_paths) and len(tables) == 1
    # Decoded: the browser's natural width is the PNG's own width.
    widths = sorted(int(a["data-natural-width"]) for a, _ in images)
    assert widths == sorted(png_size(p)[0] for p in artifacts.png_paths)
    assert {a["alt"] for a, _ in images} >= {
        "Test accuracy against compute",
        "sam: search history",
        "erm: hyperparameter importance",
    }

    height = int(re.search(r'data-scroll-height="(\d+)"', dom).group(1))
    shot = tmp_path / "report.png"
    chromium(artifacts.html_path, f"--screenshot={shot}", f"--window-size={WIDTH},{height}")
    screen = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64) / 255.0
    assert screen.shape[:2] == (height, WIDTH)
    for attributes, (left, top, width, height_) in [*images, *tables]:
        assert width > 100 and height_ > 50, attributes
        region = screen[top : top + height_, left : left + width]
        what = attributes.get("alt", "leaderboard table")
        assert region.size and float(np.mean(np.any(region < 0.98, axis=-1))) > MIN_INK, what
        assert float(region.std()) > 0.05, what  # more than a flat colour: lines, text, points
