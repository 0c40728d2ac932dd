"""Shared fixtures. No test needs a GPU or the network; CUDA-only checks skip without a GPU."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.results.mlflow_sink import default_tracking_uri
from tests.postgres import Postgres, postgres_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first (stable order otherwise): the two xdist workers take tests in
    this order, so the long runs start early and the short tests fill the gaps, instead of one
    worker finishing a long run alone at the end (longest-first scheduling)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# A real `mlflow server` on loopback, for the tracking-server path.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    """A running `mlflow server` process on loopback over a SQLite backend store."""

    url: str
    backend_dir: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: our own group
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _launch_mlflow_server(
    tmp_path: Path, backend_dir: Path, log_name: str, backend_uri: str | None = None
) -> MlflowServer:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / log_name
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    backend_dir.mkdir(exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", backend_uri or default_tracking_uri(backend_dir),
                "--artifacts-destination", str(tmp_path / "artifacts"),
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    server = MlflowServer(url, backend_dir, proc)
    deadline = time.monotonic() + 90  # ~15 s normally; slack for a busy machine
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"mlflow server not ready in 90 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture
def mlflow_servers(tmp_path: Path) -> Iterator[Callable[[Path], MlflowServer]]:
    """Starts `mlflow server` processes (``start(backend_dir)``; two on one folder share its
    SQLite store; ``start(folder, uri)``: over the backend store ``uri``, e.g. PostgreSQL); every
    one still running is stopped at teardown."""
    started: list[MlflowServer] = []

    def start(backend_dir: Path, uri: str | None = None) -> MlflowServer:
        server = _launch_mlflow_server(tmp_path, backend_dir, f"server-{len(started)}.log", uri)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    server = _launch_mlflow_server(tmp_path, tmp_path / "server", "server.log")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL server on a loopback port (skipped where Debian's package is missing)."""
    with postgres_server(_free_port()) as server:
        yield server
