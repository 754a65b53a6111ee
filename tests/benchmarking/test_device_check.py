"""benchmarks/device_check.py at tiny size on the CPU: every part runs and lands in the JSON."""

import json
import pathlib
import sys

import pytest

from tests import scripts

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import device_check  # noqa: E402

MODELS = {"icnet_sub4", "icnet_sub24", "icnet_sub124", "pspnet50_half"}


@pytest.mark.slow
def test_device_check_tiny_writes_every_section(tmp_path):
    out = tmp_path / "check.json"
    proc = scripts.run(
        "benchmarks/device_check.py", "--tiny", "--json", out,
        "--workdir", tmp_path / "work", "--budget", "1500", timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    parts = doc["parts"]
    names = ["inference_float32", "inference_bfloat16", "training_float32", "training_bfloat16"]
    names += ["quickstart", "inference_batch4"]
    assert {k: v["status"] for k, v in parts.items()} == dict.fromkeys(names, "ok"), parts

    inference = parts["inference_float32"]["results"] + parts["inference_bfloat16"]["results"]
    assert {(r["model"], r["dtype"]) for r in inference} == {
        (m, d) for m in MODELS for d in ("float32", "bfloat16")
    }
    for r in inference:
        assert r["time_ms"]["runs"] >= 3 and r["fps"] > 0
        # On the CPU memory is XLA's estimate (no allocator statistics); ratios are against the
        # base of the same dtype, so the base's own are 1.
        assert r["memory_source"] == "xla_estimate" and r["memory_bytes"] > 0
        if r["model"] == "pspnet50_half":
            assert r["speedup"] == 1.0 and r["memory_ratio"] == 1.0
    assert parts["inference_float32"]["config"]["fold_bn"] is True
    assert {r["model"] for r in parts["inference_batch4"]["results"]} == {
        "icnet_sub124",
        "pspnet50_half",
    }
    assert parts["inference_batch4"]["config"]["batch"] == 4

    for dtype in ("float32", "bfloat16"):
        train = parts[f"training_{dtype}"]
        assert train["dtype"] == dtype
        for key in ("preloaded_images_per_s", "pipeline_fed_images_per_s"):
            assert train[key] > 0
        assert train["pipeline_alone_images_per_s"] > 0
        assert train["bottleneck"] in ("step", "input pipeline")
        assert train["peak_mib"] is None  # no allocator statistics on the CPU

    quickstart = parts["quickstart"]
    assert quickstart["step"] == 2
    assert set(quickstart["miou"]) == {"sub4", "sub24", "sub124"}
    assert all(0 <= v <= 1 for v in quickstart["miou"].values())

    assert set(doc["targets"]) >= {"sub124_fps_float32", "speedup_bfloat16", "memory_ratio_float32"}
    table = device_check.format_table(doc)
    assert "icnet_sub124 b1" in table and "quickstart" in table
    assert not (tmp_path / "work").exists()  # scratch removed without --keep


def test_check_targets_compares_with_the_issue_figures():
    result = {"model": "icnet_sub124", "fps": 250.0, "speedup": 6.0, "memory_ratio": 5.0}
    doc = {
        "parts": {
            "inference_float32": {"results": [{**result, "dtype": "float32"}]},
            "training_float32": {"bottleneck": "input pipeline"},
        }
    }
    targets = device_check.check_targets(doc)
    assert targets["sub124_fps_float32"] == {"value": 250.0, "target": 200, "met": True}
    assert targets["speedup_float32"]["met"] is True
    assert targets["memory_ratio_float32"]["met"] is False
    assert targets["training_bottleneck_float32"]["met"] is False
