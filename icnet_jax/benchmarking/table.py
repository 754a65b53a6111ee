"""The paper-Table-2-style text table of `speed`'s results."""

from __future__ import annotations

import math
from typing import Any

BASELINE = "pspnet50_half"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) + suffix


def format_table(results: list[dict[str, Any]], baseline: str = BASELINE) -> str:
    """Paper-Table-2-style table, one per dtype: items as rows, models as columns."""
    blocks = []
    for dtype in dict.fromkeys(r["dtype"] for r in results):
        rows = [r for r in results if r["dtype"] == dtype]
        header = [
            "Items",
            *(r["model"] + (" (base)" if r["model"] == baseline else "") for r in rows),
        ]
        items = [
            ("Params used (M)", [_fmt(r["params"] / 1e6, ".2f") for r in rows]),
            ("Params all (M)", [_fmt(r["params_total"] / 1e6, ".2f") for r in rows]),
            ("GFLOPs", [_fmt(r["gflops"], ".2f") for r in rows]),
            ("Time (ms) median", [_fmt(r["time_ms"]["median"], ".1f") for r in rows]),
            (
                "Time (ms) p10-p90",
                [f"{r['time_ms']['p10']:.1f}-{r['time_ms']['p90']:.1f}" for r in rows],
            ),
            ("Time (ms) std", [_fmt(r["time_ms"]["std"], ".1f") for r in rows]),
            ("Runs", [f"{r['time_ms']['runs']}/{r['time_ms']['requested_runs']}" for r in rows]),
            ("Compile (s)", [_fmt(r["time_ms"]["compile_s"], ".1f") for r in rows]),
            ("Frames/s", [_fmt(r["fps"], ".2f") for r in rows]),
            ("Speedup", [_fmt(r.get("speedup"), ".2f", "x") for r in rows]),
            (
                "Memory (MB)",
                [_fmt(r["memory_bytes"] and r["memory_bytes"] / 2**20, ".0f") for r in rows],
            ),
            ("Memory save", [_fmt(r.get("memory_ratio"), ".2f", "x") for r in rows]),
            ("Memory source", [r["memory_source"] or "-" for r in rows]),
            ("vs float32", [_fmt(r.get("speedup_vs_float32"), ".2f", "x") for r in rows]),
        ]
        table = [header, *([label, *cells] for label, cells in items)]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [f"dtype {dtype}"]
        for k, line in enumerate(table):
            lines.append(
                "  ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(line, widths))
                )
            )
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
