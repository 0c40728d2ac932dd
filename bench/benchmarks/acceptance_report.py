"""The acceptance check's printed tables, rendered from its JSON report (so a saved report
renders the same): one table per part, a part's reason where it has no figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Plain text columns; ``align`` has one ``l`` or ``r`` per column. The last column is not
    padded (it holds reasons, of any length)."""
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(cells, widths, align, strict=True)
        ]
        padded[-1] = padded[-1].rstrip() if align[-1] == "l" else padded[-1]
        return "  ".join(padded).rstrip()

    return ["", title, line(headers), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _spread(spread: dict[str, Any] | None, digits: int = 0, scale: float = 1.0) -> str:
    if spread is None:
        return "-"
    return f"{spread['median'] * scale:,.{digits}f} ± {spread['iqr'] * scale:,.{digits}f}"


def _header(report: dict[str, Any]) -> list[str]:
    env, data = report["environment"], report["data"]
    versions = f"torch {env['torch']}" + (f" · CUDA {env['cuda']}" if env["cuda"] else "")
    source = data["dataset"] + (f" ({data['reason']})" if data["reason"] else "")
    return [
        f"sharpbench acceptance · {report['mode']} mode ({report['mode_reason']}) · {env['device_name']} · {versions}",
        f"images: {source}; budget {report['budget_seconds']:g} s, used {report.get('wall_seconds', 0):.0f} s",
    ]


def _parts(report: dict[str, Any]) -> list[str]:
    rows = [
        [name, part["status"], _number(part["seconds"], 1), part["reason"] or ""]
        for name, part in report["parts"].items()
    ]
    return _table("parts", ["part", "status", "seconds", "reason"], rows, "llrl")


def _grid(report: dict[str, Any]) -> list[str]:
    cells, settings = [], None
    for name in ("throughput", "compile"):
        result = report["parts"][name]["result"]
        if result is not None:
            cells += result["cells"]
            settings = settings or result
    if settings is None:
        return []
    rows = []
    for cell in cells:
        note = cell["reason"] or cell["noisy"] or ""
        rows.append(
            [
                "bf16" if cell["bf16"] else "fp32",
                "channels_last" if cell["channels_last"] else "contiguous",
                "compiled" if cell["compile"] else "eager",
                _spread(cell["images_per_second"]),
                "-" if cell["speedup"] is None else f"{cell['speedup']:.2f}×",
                _number(cell["compile_seconds"], 1),
                _number(cell["peak_memory_mib"]),
                note if cell["status"] != "ok" else (f"? {note}" if note else ""),
            ]
        )
    title = (
        f"{settings['model']} training throughput on {settings['device']}, batch {settings['batch_size']}: images/s, "
        f"median ± IQR over {settings['repeats']} × {settings['steps_per_block']} steps after "
        f"{settings['warmup_steps']} untimed; speed-up over fp32/contiguous/eager"
    )
    headers = ["precision", "layout", "compile", "images/s", "speed-up", "compile s", "peak MiB", "note"]
    return _table(title, headers, rows, "lllrrrrl")


def _regularizers(report: dict[str, Any]) -> list[str]:
    result = report["parts"]["regularizers"]["result"]
    if result is None:
        return []
    rows = [
        [
            t["method"],
            f"{t['forward_passes']:g}/{t['backward_passes']:g}",
            _spread(t["step_seconds"], 2, 1000.0),
            _spread(t["ratio_to_erm"], 2),
            _spread(t["overhead"], 2),
            "" if t["reliable"] else f"? {t['reason']}",
        ]
        for t in result["methods"]
    ]
    title = (
        f"step time per regularizer: {result['model']}, batch {result['batch_size']}, {result['precision']}, "
        f"median ± IQR over {result['repeats']} interleaved rounds"
    )
    return _table(title, ["method", "fwd/bwd", "ms/step", "× erm", "overhead", "note"], rows, "lrrrrl")


def _packing(report: dict[str, Any]) -> list[str]:
    result = report["parts"]["packing"]["result"]
    if result is None:
        return []
    alone = next((level["total_images_per_second"] for level in result["levels"] if level["trials"] == 1), None)
    rows = []
    for level in result["levels"]:
        total = level["total_images_per_second"]
        peaks = [t["peak_memory_mib"] for t in level["trials_detail"] if t["peak_memory_mib"] is not None]
        rows.append(
            [
                str(level["trials"]),
                f"{level['gpus_per_trial']:g}",
                _number(total),
                _number(level["per_trial_median"]),
                "-" if total is None or not alone else f"{total / alone:.2f}×",
                _number(max(peaks) if peaks else None),
                level["reason"] or "",
            ]
        )
    title = (
        f"packing: trial processes sharing one device, {result['model']} ({result['recipe']}), batch "
        f"{result['batch_size']}, {result['seconds_per_level']:g} s each"
    )
    headers = ["trials", "gpus_per_trial", "total images/s", "per trial", "× 1 trial", "peak MiB", "note"]
    lines = _table(title, headers, rows, "rrrrrrl")
    suggested = result["suggested_gpus_per_trial"]
    if suggested is not None:
        lines.append(f"suggested: resources.gpus_per_trial: {suggested:g} (the fewest trials within 5% of the best)")
    return lines


def _smoke(report: dict[str, Any]) -> list[str]:
    result = report["parts"]["smoke"]["result"]
    if result is None:
        return []
    rows = [
        [
            run["config"],
            run["dataset"],
            run["model"],
            str(run["epochs"]),
            "-" if run["exit_code"] is None else str(run["exit_code"]),
            _number(run["wall_seconds"], 1),
            str(run["rows"]),
            f"{run['completed_rows']}/{run['expected_rows']}",
            ",".join(run["devices"]) or "-",
            run["reason"] or "",
        ]
        for run in result["runs"]
    ]
    headers = ["config", "dataset", "model", "epochs", "exit", "wall s", "rows", "completed", "device", "note"]
    return _table("smoke: sharpbench run, ERM and SAM, one trial each", headers, rows, "lllrrrrrll")


def render(report: dict[str, Any]) -> str:
    """Every table of ``report`` (as :mod:`bench.benchmarks.acceptance` writes it)."""
    lines = _header(report) + _parts(report)
    for section in (_grid, _regularizers, _packing, _smoke):
        lines += section(report)
    return "\n".join(lines)
