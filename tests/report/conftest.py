"""Fixtures of the report tests: a results folder written in the test, and its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report.build import ReportArtifacts, build_report
from tests.report.results_folder import write_results


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def artifacts(results_dir: Path) -> ReportArtifacts:
    return build_report([results_dir])
