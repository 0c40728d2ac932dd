"""Several results folders ranked as one, only where they ran the same thing.

``sharpbench leaderboard A B`` (and ``report``) rank the union of the folders' rows. Two folders
that hold the same benchmark name with *different* configs (another model, epochs, search space:
a different config hash in ``runs/<benchmark>.json``, :mod:`bench.run_record`) would be ranked as
one benchmark, mixing results that answer different questions. They are refused with one line
(:meth:`ConfigClash.message`), or, when asked (``--split-configs``), each config becomes a
benchmark of its own, labelled ``<benchmark>@<first 8 hex digits of its hash>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.results.parquet import UnreadableFile, read_rows
from bench.run_record import RECORDS_DIRNAME

#: Hex digits of the config hash in a split benchmark's label.
LABEL_DIGITS = 8


def config_label(benchmark: str, config_hash: str) -> str:
    """``digits@1a2b3c4d``: one config of a benchmark name."""
    return f"{benchmark}@{config_hash[:LABEL_DIGITS]}"


@dataclass(frozen=True)
class ConfigClash:
    """One benchmark name recorded with different configs in different folders."""

    benchmark: str
    hashes: tuple[tuple[Path, str], ...]  # (folder, config hash), in the order the folders were given

    def message(self) -> str:
        where = "; ".join(f"{folder} has {config_label(self.benchmark, h)}" for folder, h in self.hashes)
        return (
            f"benchmark {self.benchmark!r} was run with different configs ({where}): ranking them as one would "
            "mix their results; give folders of one config, or --split-configs to rank each config on its own"
        )


def recorded_hashes(folder: Path) -> dict[str, str]:
    """The config hash of each benchmark recorded in ``folder`` (read from the record's JSON
    alone: a config whose plug-in is not installed here still has a hash)."""
    hashes = {}
    for path in sorted((Path(folder) / RECORDS_DIRNAME).glob("*.json")):
        try:
            raw = json.loads(path.read_text())
            hashes[str(raw["benchmark"])] = str(raw["config_hash"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable record: the commands that need its config say so
    return hashes


def config_clashes(folders: Sequence[Path]) -> list[ConfigClash]:
    """Benchmarks whose recorded config differs between ``folders``, in name order."""
    seen: dict[str, list[tuple[Path, str]]] = {}
    for folder in folders:
        for benchmark, config_hash in recorded_hashes(folder).items():
            seen.setdefault(benchmark, []).append((Path(folder), config_hash))
    return [ConfigClash(name, tuple(pairs)) for name, pairs in sorted(seen.items()) if len({h for _, h in pairs}) > 1]


def read_rows_by_config(
    folders: Sequence[Path], clashes: Sequence[ConfigClash], problems: list[UnreadableFile] | None = None
) -> pa.Table:
    """The rows of ``folders`` as :func:`bench.results.parquet.read_rows` reads them, except that
    each benchmark of ``clashes`` is split by config: its rows carry ``<benchmark>@<hash>``."""
    table = read_rows(*folders, problems=problems)
    split = {clash.benchmark for clash in clashes}
    if not split:
        return table
    kept = table.filter(pc.invert(pc.is_in(table["benchmark"], value_set=pa.array(sorted(split)))))
    parts = [kept]
    for clash in clashes:
        for folder, config_hash in clash.hashes:
            rows = read_rows(folder, problems=[])  # unreadable files: already said by the read above
            rows = rows.filter(pc.equal(rows["benchmark"], clash.benchmark))
            labelled = pa.array([config_label(clash.benchmark, config_hash)] * rows.num_rows, pa.string())
            parts.append(
                rows.set_column(rows.schema.get_field_index("benchmark"), rows.schema.field("benchmark"), labelled)
            )
    return pa.concat_tables(parts).sort_by(
        [("benchmark", "ascending"), ("regularizer", "ascending"), ("run_id", "ascending")]
    )
