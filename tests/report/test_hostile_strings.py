"""Every string in the report comes from a config, a plug-in or an error text and is treated as
hostile: a method named with markup, quotes and a script is shown as text in a real headless
browser (Debian's chromium), and nothing of it executes; the figures draw it literally."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from bench.report.build import build_report
from tests.report.results_folder import TRIALS, write_results
from tests.report.test_browser import CHROMIUM, chromium
from tests.runner import sharpbench_command

# Each payload, if it ran, would mark the page; the name also holds quotes, "&", "$" (TeX in
# matplotlib) and a "|" (a Markdown cell separator).
PAYLOAD = (
    "<script>document.body.setAttribute('data-pwned','script')</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">"
    "\"'&$x|y"
)


def _hostile_folder(tmp_path):
    def rename(trial):
        return dataclasses.replace(
            trial,
            regularizer=PAYLOAD if trial.regularizer == "sam" else trial.regularizer,
            selected_from=trial.selected_from and trial.selected_from.replace("sam", PAYLOAD),
        )

    return write_results(tmp_path / "results", trials={i: rename(t) for i, t in TRIALS.items()})


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it)"
)
def test_a_hostile_method_name_is_shown_as_text_and_never_runs(tmp_path):
    artifacts = build_report([_hostile_folder(tmp_path)], tmp_path / "out" / "report.html")
    html = artifacts.html_path.read_text()
    assert "<script>document" not in html and 'onerror="document' not in html  # escaped in the file
    dom = chromium(artifacts.html_path, "--dump-dom", "--window-size=1400,1000")
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]  # no payload set the mark
    assert 'data-pwned="' not in dom
    assert "&lt;script&gt;document.body.setAttribute" in dom  # the name is on the page, as text
    assert dom.count("<img") == len(artifacts.png_paths)  # no image element came from the name
    assert len(artifacts.png_paths) >= 6  # the "$" did not stop a figure from being drawn


def test_a_hostile_method_name_in_json_and_csv_round_trips(tmp_path):
    folder = _hostile_folder(tmp_path)
    done = subprocess.run(
        sharpbench_command("leaderboard", str(folder), "--format", "json"),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    methods = {s["regularizer"] for board in json.loads(done.stdout) for s in board["standings"]}
    assert PAYLOAD in methods


#: Aimed at an SVG document (no body there): a script, an event handler, and attempts to close a
#: CDATA section or a comment around the text. Short enough for a Parquet partition folder's name.
SVG_PAYLOAD = "<script>document.documentElement.id='pwned'</script><image href=x onerror=alert(1)/>]]>--><!--\"&$x"


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it)"
)
def test_a_hostile_method_name_in_an_svg_is_text_and_never_runs(tmp_path):
    trials = {
        i: dataclasses.replace(
            t,
            regularizer=SVG_PAYLOAD if t.regularizer == "sam" else t.regularizer,
            selected_from=t.selected_from and t.selected_from.replace("sam", SVG_PAYLOAD),
        )
        for i, t in TRIALS.items()
    }
    artifacts = build_report([write_results(tmp_path / "results", trials=trials)], tmp_path / "out" / "report.html")
    svgs = artifacts.paths("svg")
    assert len(svgs) == len(artifacts.png_paths) >= 6
    for path in svgs:
        source = path.read_text(encoding="utf-8")
        assert "<script" not in source.lower() and "<image" not in source.lower(), path
    (compute,) = [f.file("svg") for f in artifacts.figures if f.kind == "compute"]
    assert "&lt;script&gt;document.documentElement" in compute.read_text(encoding="utf-8")  # escaped text
    dom = chromium(compute, "--dump-dom", "--window-size=1200,600")
    assert "pwned" not in dom.split("<svg", 1)[1].split(">", 1)[0]  # the root's id was never set
    assert "<script" not in dom and "<image" not in dom
    assert "&lt;script&gt;document.documentElement.id='pwned'" in dom  # drawn as a <text>, shown as written
