"""A leaderboard reads rows: it must not pay for the training stack's imports (torch, Ray, MLflow)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import contextlib, io, json, sys
sys.argv = ["sharpbench", "leaderboard", sys.argv[1], "--format", "json"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    from bench.cli import main
    try:
        main()
    except SystemExit as stop:
        assert not stop.code, stop.code
loaded = sorted(m for m in ("torch", "ray", "mlflow") if m in sys.modules)
print(json.dumps({"board": out.getvalue(), "loaded": loaded}))
"""


def test_the_leaderboard_command_imports_neither_torch_nor_ray_nor_mlflow(repo_root):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(repo_root / "results" / "reference" / "digits")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert "sam" in probe["board"]  # a real board was printed
    assert probe["loaded"] == []
