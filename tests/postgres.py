"""A real PostgreSQL server for a test: Debian's package, a throw-away cluster on a loopback port.

``initdb`` and ``postgres`` refuse to run as root, so as root they run as the package's
``postgres`` user (``runuser``), in a data folder that user owns. Debian puts the server's
programs under ``/usr/lib/postgresql/<version>/bin``, not on ``PATH``. Where the package is not
installed the test is skipped with the command that installs it (``.ci/run`` installs it).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL = "apt-get install -y postgresql"


@dataclass(frozen=True)
class Postgres:
    """A running server: ``url(database)`` is SQLAlchemy's URL of one of its databases."""

    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server(port: int) -> Iterator[Postgres]:
    """Start a fresh server on ``127.0.0.1:port``; stopped and removed on exit."""
    binaries = _binaries()
    if binaries is None:
        pytest.skip(f"needs Debian's PostgreSQL server (`{INSTALL}`)")
    pytest.importorskip("psycopg", reason="needs the PostgreSQL driver (pip install 'psycopg[binary]')")
    home = Path(tempfile.mkdtemp(prefix="sharpbench-pg-"))
    data, sockets = home / "data", home / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(sockets, "postgres")
    log = home / "server.log"
    user = "sharpbench"
    try:
        subprocess.run(
            _as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]),
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        server = subprocess.Popen(
            _as_server_user([
                str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
            ]),
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user], capture_output=True
            ).returncode:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield Postgres(port, user)
        finally:
            subprocess.run(
                _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip
            if server.poll() is None:
                server.kill()
            server.wait(timeout=30)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"initdb failed: {error.stderr[-2000:]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
