"""The device check's summary: the targets and the printed table of its JSON document
(`device_check.py`)."""

from __future__ import annotations

from typing import Any


def _results(document: dict[str, Any], *parts: str) -> list[dict[str, Any]]:
    return [r for part in parts for r in document["parts"].get(part, {}).get("results", [])]


BATCH1 = ("inference_float32", "inference_bfloat16")


def check_targets(document: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets (not tests): ICNet sub124 images/s, ratios against the base, and the
    training bottleneck; None where the part did not run."""
    targets: dict[str, Any] = {}
    for r in _results(document, *BATCH1):
        if r["model"] == "icnet_sub124":
            floor = 500 if r["dtype"] == "bfloat16" else 200
            targets[f"sub124_fps_{r['dtype']}"] = {"value": r["fps"], "target": floor}
            targets[f"speedup_{r['dtype']}"] = {"value": r["speedup"], "target": 5.2}
            targets[f"memory_ratio_{r['dtype']}"] = {
                "value": r["memory_ratio"],
                "target": 5.8,
            }
    for dtype in ("float32", "bfloat16"):
        part = document["parts"].get(f"training_{dtype}", {})
        if "bottleneck" in part:
            targets[f"training_bottleneck_{dtype}"] = {
                "value": part["bottleneck"],
                "target": "step",
            }
    for t in targets.values():
        v, goal = t["value"], t["target"]
        t["met"] = None if v is None else (v == goal if isinstance(goal, str) else v >= goal)
    return targets


def _cell(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def format_table(document: dict[str, Any]) -> str:
    """One plain-text table of every figure of the document."""
    rows = [
        ("part", "item", "float32", "bfloat16"),
        *_inference_rows(document),
        *_training_rows(document),
        *_quickstart_rows(document),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    status = ", ".join(f"{k} {v['status']}" for k, v in document["parts"].items())
    parts = document["parts"]
    inference: dict[str, Any] = next(
        (parts[p] for p in (*BATCH1, "inference_batch4") if "device" in parts.get(p, {})),
        {},
    )
    head = [
        f"device: {inference.get('device', {}).get('device_kind', '?')} "
        f"({document['host']['gpu'] or 'no nvidia-smi'}), jax {inference.get('jax_version', '?')}",
        f"parts: {status}",
    ]
    tail = [
        f"target {k}: {_cell(v['value'], '.2f' if not isinstance(v['value'], str) else 's')} "
        f"(target {v['target']}) {'met' if v['met'] else 'NOT met' if v['met'] is False else '-'}"
        for k, v in document.get("targets", {}).items()
    ]
    return "\n".join([*head, "", *lines, "", *tail])


Row = tuple[str, str, str, str]


def _inference_rows(document: dict[str, Any]) -> list[Row]:
    """Per model and batch size: time, speed, memory and the ratios against the base."""
    rows = []
    for batch, parts in ((1, BATCH1), (4, ("inference_batch4",))):
        results = _results(document, *parts)
        for model in dict.fromkeys(r["model"] for r in results):
            by = {r["dtype"]: r for r in results if r["model"] == model}

            def get(dtype, fn, by=by):
                return fn(by[dtype]) if dtype in by else None

            for item, fn, spec in (
                ("ms median", lambda r: r["time_ms"]["median"], ".2f"),
                ("images/s", lambda r: r["fps"], ".1f"),
                ("runs", lambda r: r["time_ms"]["runs"], "d"),
                (
                    "peak MiB (" + (results[0]["memory_source"]) + ")",
                    lambda r: r["memory_bytes"] and r["memory_bytes"] / 2**20,
                    ".0f",
                ),
                ("speedup vs base", lambda r: r["speedup"], ".2f"),
                ("memory saving vs base", lambda r: r["memory_ratio"], ".2f"),
            ):
                rows.append(
                    (
                        f"{model} b{batch}",
                        item,
                        _cell(get("float32", fn), spec),
                        _cell(get("bfloat16", fn), spec),
                    )
                )
    return rows


def _training_rows(document: dict[str, Any]) -> list[Row]:
    train = {d: document["parts"].get(f"training_{d}", {}) for d in ("float32", "bfloat16")}
    return [
        (
            "training b16" if not document["tiny"] else "training (tiny)",
            item,
            _cell(train["float32"].get(key), spec),
            _cell(train["bfloat16"].get(key), spec),
        )
        for item, key, spec in (
            ("images/s, batches on device", "preloaded_images_per_s", ".1f"),
            ("images/s, grain pipeline", "pipeline_fed_images_per_s", ".1f"),
            ("images/s, pipeline alone", "pipeline_alone_images_per_s", ".1f"),
            ("peak MiB", "peak_mib", ".0f"),
            ("bottleneck", "bottleneck", "s"),
        )
    ]


def _quickstart_rows(document: dict[str, Any]) -> list[Row]:
    qs = document["parts"].get("quickstart", {})
    miou = qs.get("miou") or {}
    rows = [("quickstart", "wall s (train.py)", _cell(qs.get("seconds"), ".0f"), "")]
    for branch in ("sub4", "sub24", "sub124"):
        value = miou.get(branch)
        rows.append(("quickstart", f"mIoU {branch} %", _cell(value and 100 * value, ".2f"), ""))
    return rows
