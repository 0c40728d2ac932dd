"""How the record's readers scale with the history: ``sharpbench leaderboard`` against DuckDB.

A synthetic store of N trial rows in N files (the layout ``sharpbench run`` writes: one file per
run id) is grown from a template benchmark's real rows: every benchmark is a copy of the
template's methods with more search trials (validation accuracy jittered below the selected
trial's, so the selection stays the template's) and its final seeds. On it this program times

* ``sharpbench leaderboard --format json`` (a fresh process: what a user waits for), and
* a DuckDB query computing the per-method aggregates the board shows (count, mean, standard
  deviation of the test accuracy of the final runs, best validation accuracy of the search) over
  the same files, also in a fresh process,

and prints the median and spread of each and their ratio, for each size asked (default 1k, 10k
and 50k rows). The target: the leaderboard within 2x of the query. Growing 50,000 files takes a few
minutes; ``--keep`` reuses a store grown before.

    python -m bench.benchmarks.store --sizes 1000 10000 50000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.results.file_cache import CACHE_DIRNAME
from bench.results.parquet import dataset_dir, read_rows, row_path, tidy_dataset, written_metadata
from bench.results.schema import SCHEMA

#: The template: the committed digits reference run (4 methods, search + final seeds).
TEMPLATE = Path(__file__).resolve().parents[2] / "results" / "reference" / "digits"
BENCHMARKS = 10

DUCKDB_QUERY = """
select benchmark, regularizer,
       count(*) filter (where phase = 'final') as finals,
       avg(test_accuracy) filter (where phase = 'final') as mean_test,
       stddev_samp(test_accuracy) filter (where phase = 'final') as sd_test,
       max(val_accuracy) filter (where phase = 'search') as best_val
from read_parquet('{root}/**/*.parquet', union_by_name = true)
group by benchmark, regularizer order by benchmark, regularizer
"""


def grow_store(folder: Path, rows: int, *, template: Path = TEMPLATE, benchmarks: int = BENCHMARKS) -> int:
    """Write ``rows`` synthetic trial rows, one file each, under ``folder`` (see the module doc);
    returns the number written (``rows`` rounded to whole benchmarks and methods)."""
    source = read_rows(template).to_pylist()
    if not source:
        raise SystemExit(f"no template rows in {template}")
    methods = sorted({r["regularizer"] for r in source})
    per_method = max(1, rows // (benchmarks * len(methods)))
    rng = random.Random(0)
    written = 0
    root = dataset_dir(folder)
    for b in range(benchmarks):
        benchmark = f"synthetic{b:03d}"
        for method in methods:
            mine = [r for r in source if r["regularizer"] == method]
            finals = [r for r in mine if r["phase"] == "final"]
            selected = finals[0]["selected_from_run_id"]
            best = next(r for r in mine if r["run_id"] == selected)
            others = [r for r in mine if r["phase"] == "search" and r["run_id"] != selected]
            searches = max(1, per_method - len(finals))
            for i in range(per_method):
                if i < len(finals):
                    row = dict(finals[i], selected_from_run_id=f"{benchmark}-{method}-search/{0:08x}")
                    row["run_id"] = f"{benchmark}-{method}-final/{i:08x}"
                elif i == len(finals):
                    row = dict(best, run_id=f"{benchmark}-{method}-search/{0:08x}")
                else:
                    row = dict(rng.choice(others), run_id=f"{benchmark}-{method}-search/{i - len(finals):08x}")
                    row["val_accuracy"] = best["val_accuracy"] * (1 - 0.1 * rng.random())
                budget = json.loads(row["budget"])
                budget["trials"] = searches
                row.update(benchmark=benchmark, budget=json.dumps(budget, sort_keys=True))
                table = pa.Table.from_pylist([row], schema=SCHEMA)
                path = row_path(root, benchmark, method, row["run_id"])
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table.replace_schema_metadata(written_metadata(time.time_ns())), path)
                written += 1
    return written


@dataclass(frozen=True)
class Figure:
    rows: int
    first_leaderboard_s: float  # no readers' cache yet: every file opened
    leaderboard_s: float  # median of the repeats after it
    leaderboard_spread_s: float  # max - min of those
    duckdb_s: float
    duckdb_spread_s: float
    startup_s: float  # a resumed run's reads of the store: the start-up tidy and its benchmark's rows

    @property
    def ratio(self) -> float:
        return self.leaderboard_s / self.duckdb_s

    @property
    def first_ratio(self) -> float:
        return self.first_leaderboard_s / self.duckdb_s


def _timed(command: Sequence[str], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command[:4])}... failed: {(done.stderr or done.stdout).strip()[-500:]}")
    spread = max(times) - min(times) if len(times) > 1 else 0.0
    return statistics.median(times), spread


def measure(folder: Path, rows: int, repeats: int) -> Figure:
    board = [sys.executable, "-m", "bench.cli", "leaderboard", str(folder), "--format", "json"]
    query = DUCKDB_QUERY.format(root=dataset_dir(folder))
    duck = [sys.executable, "-c", f"import duckdb; duckdb.sql({query!r}).fetchall()"]
    _timed(duck, 1)  # the first read fills the operating system's page cache: both are timed after it
    shutil.rmtree(folder / CACHE_DIRNAME, ignore_errors=True)
    first_s, _ = _timed(board, 1)
    board_s, board_spread = _timed(board, repeats)
    duck_s, duck_spread = _timed(duck, repeats)
    return Figure(rows, first_s, board_s, board_spread, duck_s, duck_spread, startup_reads(folder))


def startup_reads(folder: Path) -> float:
    """Seconds of what a resumed run of one benchmark reads from the store before its trials
    start: the tidy of the dataset and that benchmark's rows (the session's and the driver's
    reads; both through the readers' cache)."""
    began = time.perf_counter()
    tidy_dataset(folder, benchmarks=["synthetic000"])
    read_rows(folder, benchmarks=["synthetic000"])
    return time.perf_counter() - began


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="rows (= files) per store")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command (median and spread)")
    parser.add_argument("--folder", type=Path, help="where the stores grow (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="reuse stores grown before in --folder; keep them")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes) or args.repeats < 1:
        parser.error("--sizes and --repeats must be positive")
    base = args.folder or Path(tempfile.mkdtemp(prefix="sharpbench-store-"))
    figures = []
    columns = ("first board s", 14), ("board s", 14), ("duckdb s", 14), ("ratio", 6), ("first", 6), ("start-up s", 10)
    print(f"{'rows':>7} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for size in args.sizes:
        folder = base / f"rows{size}"
        if not (args.keep and dataset_dir(folder).is_dir()):
            began = time.perf_counter()
            count = grow_store(folder, size)
            print(f"  grew {count} rows in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        figure = measure(folder, size, args.repeats)
        figures.append(figure)
        board = f"{figure.leaderboard_s:>7.2f} ± {figure.leaderboard_spread_s:<4.2f}"
        duck = f"{figure.duckdb_s:>7.2f} ± {figure.duckdb_spread_s:<4.2f}"
        first = f"{figure.first_leaderboard_s:>14.2f}"
        ratios = f"{figure.ratio:>6.2f} {figure.first_ratio:>6.2f}"
        print(f"{size:>7} {first} {board} {duck} {ratios} {figure.startup_s:>10.2f}", flush=True)
    if args.json:
        rows = [asdict(f) | {"ratio": f.ratio, "first_ratio": f.first_ratio} for f in figures]
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.keep and args.folder is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
