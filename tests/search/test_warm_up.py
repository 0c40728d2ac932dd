"""A worker's one-time costs are paid before the first trial's clock starts, once per process."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from bench.config import parse_config
from bench.data import dataset_loads
from bench.search.trainable import warm_up

config = parse_config({"benchmark": "w", "regularizers": ["erm"], "dataset": {"name": "digits"}})
assert "torch._dynamo" not in sys.modules, "imported before any optimizer: this check says nothing"
warm_up(config)
assert "torch._dynamo" in sys.modules  # what the first optimizer would have imported inside a trial
assert dataset_loads() == 1
# digits is read from scikit-learn's file without importing it (1.7 s of a worker's first load)
assert "sklearn" not in sys.modules
warm_up(config)
assert dataset_loads() == 1  # once per process and dataset
print("ok")
"""


def test_warm_up_imports_what_the_first_optimizer_would_and_loads_the_dataset_once():
    # A fresh interpreter: this test process has long imported torch._dynamo.
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
