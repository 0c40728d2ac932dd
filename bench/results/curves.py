"""Learning curves: one row per trial × epoch, a Parquet table beside the leaderboard's rows.

Layout::

    <results_dir>/curves/<benchmark>/<regularizer>/<run key>.parquet   one trial's epochs

The same shape as the rows (:mod:`bench.results.parquet`), for the same reasons: one file per run
id, named by its run key and moved into place from ``.staging`` (a re-written curve replaces the
old one whole, a reader never sees half of one); every column in every file, exactly
:data:`CURVE_SCHEMA`; folders percent-encoded, not hive. ``pandas.read_parquet("<results>/curves")``
and DuckDB's ``read_parquet('<results>/curves/**/*.parquet')`` read it as it is.

The sink writes a trial's curve when the trial ends, just before its row: the row is what makes
the curve a result, and :func:`read_curves` keeps only curves whose trial has a row. At each
checkpointed report it also writes the curve so far: a driver killed mid-trial loses no epoch,
since the resumed trial re-reports only the epochs after its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import metrics
from bench.naming import partition_segment
from bench.results.file_cache import FileRead, read_cached
from bench.results.parquet import UnreadableFileWarning, read_rows, run_key, write_atomically

#: Sub-folder of ``results_dir`` holding the curves.
CURVES_DIRNAME = "curves"
#: Bumped when the columns change.
CURVE_VERSION = 1

#: The per-epoch figures of a curve, in column order (declared in :mod:`bench.metrics`).
CURVE_METRICS = (
    metrics.EPOCH,
    metrics.TRAIN_LOSS,
    metrics.VAL_LOSS,
    metrics.VAL_ACCURACY,
    metrics.LEARNING_RATE,
    metrics.EPOCH_SECONDS,
    metrics.WALL_SECONDS,
    metrics.FORWARD_PASSES,
    metrics.BACKWARD_PASSES,
)

_KIND = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}

CURVE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),  # the trial's row's run_id
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("regularizer", pa.string(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        *(pa.field(name, _KIND[metrics.METRICS[name].kind], nullable=name != metrics.EPOCH) for name in CURVE_METRICS),
    ],
    metadata={"sharpbench_curve_version": str(CURVE_VERSION)},
)

#: One epoch's figures (by metric name); a value the trial did not report is None.
Point = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CurveKey:
    """Whose curve: the trial's row identity."""

    run_id: str
    benchmark: str
    regularizer: str
    phase: str
    seed: int


def curves_dir(results_dir: str | os.PathLike[str]) -> Path:
    return Path(results_dir).expanduser().resolve() / CURVES_DIRNAME


def curve_path(results_dir: str | os.PathLike[str], key: CurveKey) -> Path:
    return (
        curves_dir(results_dir)
        / partition_segment(key.benchmark)
        / partition_segment(key.regularizer)
        / run_key(key.run_id)
    )


def points_of(result: Mapping[str, Any]) -> dict[int, Point]:
    """The epochs one Tune report stands for (:func:`bench.metrics.epochs_of`), by epoch: finite
    values only, typed as their columns."""
    points = {}
    for epoch in metrics.epochs_of(dict(result)):
        if metrics.EPOCH not in epoch:
            continue
        point = {name: metrics.METRICS[name].row_value(epoch) for name in CURVE_METRICS}
        points[int(point[metrics.EPOCH])] = point
    return points


def curve_table(key: CurveKey, points: Mapping[int, Point]) -> pa.Table:
    """``points`` as rows of :data:`CURVE_SCHEMA`, by epoch."""
    epochs = sorted(points)
    identity = dataclasses.asdict(key)
    columns = {name: [identity[name]] * len(epochs) for name in identity}
    columns.update({name: [points[epoch].get(name) for epoch in epochs] for name in CURVE_METRICS})
    return pa.Table.from_pydict(columns, schema=CURVE_SCHEMA)


def _read_file(path: Path) -> pa.Table:
    """One curve file, cast to :data:`CURVE_SCHEMA`; raises ValueError when it is not one."""
    try:
        table = pq.read_table(path, use_threads=False)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error
    missing = [name for name in CURVE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"foreign schema: no column {', '.join(missing)}")
    try:
        return table.select(CURVE_SCHEMA.names).cast(CURVE_SCHEMA)
    except (pa.ArrowException, ValueError) as error:
        raise ValueError(f"foreign schema: {str(error).splitlines()[0]}") from error


class CurveWriter:
    """Writes trials' curves under ``<results_dir>/curves`` (one writer per run id: the driver)."""

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.results_dir = Path(results_dir).expanduser().resolve()

    def write(self, key: CurveKey, points: Mapping[int, Point]) -> None:
        """Record ``points`` as the trial's whole curve (replacing any earlier one); none: nothing."""
        if points:
            write_atomically(self.results_dir, curve_table(key, points), curve_path(self.results_dir, key))

    def read(self, key: CurveKey) -> dict[int, Point]:
        """The trial's curve written before (by an earlier call, at a checkpoint): empty when
        there is none or it is unreadable (its epochs are then re-reported or lost, never wrong)."""
        path = curve_path(self.results_dir, key)
        if not path.is_file():
            return {}
        try:
            rows = _read_file(path).to_pylist()
        except ValueError:
            return {}
        return {int(row[metrics.EPOCH]): {name: row[name] for name in CURVE_METRICS} for row in rows}


def _read_or_warn(path: Path) -> FileRead | None:
    try:
        return FileRead(_read_file(path))
    except ValueError as error:
        warnings.warn(f"{path}: not a curve file ({error}); skipped", UnreadableFileWarning, stacklevel=4)
        return None


def _files(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def read_curves(*results_dirs: str | os.PathLike[str], run_ids: Iterable[str] | None = None) -> pa.Table:
    """The curves of the recorded trials under one or more results folders, one row per trial ×
    epoch, sorted by benchmark, regularizer, run_id and epoch, with exactly :data:`CURVE_SCHEMA`.

    Only trials with a row count (``run_ids``: these instead, e.g. the rows a leaderboard chose);
    a curve whose trial never ended is not a result. An unreadable file is skipped with an
    :class:`~bench.results.parquet.UnreadableFileWarning` naming it."""
    wanted = set(run_ids) if run_ids is not None else set(read_rows(*results_dirs).column("run_id").to_pylist())
    tables = []
    for results_dir in results_dirs:
        root = curves_dir(results_dir)
        groups: dict[str, list[Path]] = {}
        for path in _files(root):
            groups.setdefault(path.relative_to(root).parts[0], []).append(path)
        for top, files in sorted(groups.items()):
            # Through the readers' cache, one per benchmark folder: only new or replaced curves are opened.
            name = "curves/" + hashlib.sha256(top.encode()).hexdigest()[:32]
            table = read_cached(results_dir, name, CURVE_SCHEMA, root, files, _read_or_warn).table
            if table.num_rows:
                tables.append(table.filter(pc.is_in(table["run_id"], value_set=pa.array(sorted(wanted), pa.string()))))
    if not tables:
        return CURVE_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    keys = ("benchmark", "regularizer", "run_id", metrics.EPOCH)
    # The same run id in two folders (a copied run): its rows appear once per folder, as read_rows keeps one.
    seen: set[tuple[Any, ...]] = set()
    keep = []
    for i, row in enumerate(zip(*(table.column(k).to_pylist() for k in keys), strict=True)):
        if row not in seen:
            seen.add(row)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())).sort_by([(k, "ascending") for k in keys])
