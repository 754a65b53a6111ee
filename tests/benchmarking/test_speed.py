"""benchmark.py, icnet_jax.benchmarking.speed and .profiling on tiny models (no wall-clock
assertions)."""

import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.benchmarking import networks, profiling, speed
from tests import scripts

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = speed.Options(height=65, width=129, width_scale=0.125, runs=2, warmup=1, progress=False)
TINY_FLAGS = ["--height=65", "--width=129", "--width_scale=0.125", "--runs=2", "--warmup=1"]


def run_script(*flags):
    return scripts.run("benchmark.py", *TINY_FLAGS, "--noprogress", *flags)


def test_xla_flops_of_matmul_is_2mnk():
    m, k, n = 8, 16, 32
    flops = profiling.xla_flops(jnp.matmul, jnp.ones((m, k)), jnp.ones((k, n)))
    assert flops == 2 * m * n * k


def test_count_parameters():
    tree = {"a": jnp.zeros((3, 4)), "b": {"c": np.zeros(5), "d": jnp.zeros(())}}
    assert profiling.count_parameters(tree) == 12 + 5 + 1
    assert profiling.count_parameters({}) == 0


def test_count_used_parameters_skips_unused_leaves():
    tree = {"used": jnp.ones((2, 3)), "unused": jnp.ones((7,))}
    n = profiling.count_used_parameters(lambda p, x: p["used"] * x, tree, jnp.ones((2, 3)))
    assert n == 6


def test_time_function_stats_and_budget():
    stats = profiling.time_function(lambda x: x * 2, jnp.ones(4), runs=3, warmup=1)
    assert stats["runs"] == 3 and stats["requested_runs"] == 3
    for key in ("median", "mean", "std", "min", "max", "p10", "p90"):
        assert isinstance(stats[key], float) and stats[key] >= 0
    assert stats["min"] <= stats["p10"] <= stats["median"] <= stats["p90"] <= stats["max"]
    # The budget rule alone (no timing): 10 s per run, 25 s budget -> 2, floored at min_runs.
    assert profiling.runs_within_budget(50, 10.0, 25.0, min_runs=1) == 2
    assert profiling.runs_within_budget(50, 10.0, 25.0, min_runs=5) == 5
    assert profiling.runs_within_budget(50, 0.01, 25.0) == 50
    assert profiling.runs_within_budget(3, 10.0, 1.0, min_runs=5) == 3
    assert profiling.runs_within_budget(50, 10.0, None) == 50


def test_memory_helpers():
    compiled, _ = profiling.compile_function(jnp.matmul, jnp.ones((8, 16)), jnp.ones((16, 32)))
    estimate = profiling.compiled_memory_estimate(compiled)
    assert estimate is None or estimate >= 4 * (8 * 16 + 16 * 32 + 8 * 32)
    peak = profiling.peak_memory_bytes(jax.devices()[0])
    assert peak is None or isinstance(peak, int)


def test_expand_models():
    assert networks.expand_models(["all"]) == list(networks.MODELS)
    assert networks.expand_models(["icnet", "icnet_sub4", "pspnet50_half"]) == [
        "icnet_sub4",
        "icnet_sub24",
        "icnet_sub124",
        "pspnet50_half",
    ]
    with pytest.raises(ValueError):
        networks.expand_models(["resnet"])


def test_add_ratios_against_half_width_pspnet():
    def result(model, dtype, ms, mem):
        return {"model": model, "dtype": dtype, "time_ms": {"median": ms}, "memory_bytes": mem}

    results = speed.add_ratios(
        [
            result("icnet_sub124", "float32", 50.0, 100),
            result("pspnet50_half", "float32", 500.0, 400),
            result("pspnet50", "float32", 1000.0, 800),
            result("icnet_sub4", "bfloat16", 10.0, None),  # no bfloat16 baseline in this run
        ]
    )
    assert results[0]["speedup"] == pytest.approx(10.0)
    assert results[0]["memory_ratio"] == pytest.approx(4.0)
    assert results[1]["speedup"] == pytest.approx(1.0)
    assert results[2]["speedup"] == pytest.approx(0.5)
    assert results[2]["memory_ratio"] == pytest.approx(0.5)
    assert results[3]["speedup"] is None and results[3]["memory_ratio"] is None


def test_script_json_schema(tmp_path):
    out = tmp_path / "new" / "bench.json"  # the folder is created
    proc = run_script("--models=icnet_sub124,pspnet50_half", f"--json={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert "icnet_sub124" in printed and "Speedup" in printed and "device:" in printed
    doc = json.loads(out.read_text())

    assert set(doc) >= {"device", "jax_version", "config", "results"}
    assert doc["jax_version"] == jax.__version__
    assert doc["device"]["platform"] == jax.devices()[0].platform
    assert isinstance(doc["device"]["device_kind"], str)
    config = doc["config"]
    assert (config["batch"], config["height"], config["width"]) == (1, 65, 129)
    assert config["fold_bn"] is True and config["dtypes"] == ["float32"]
    assert config["models"] == ["icnet_sub124", "pspnet50_half"]

    assert [r["model"] for r in doc["results"]] == ["icnet_sub124", "pspnet50_half"]
    for r in doc["results"]:
        assert r["dtype"] == "float32"
        assert isinstance(r["params"], int) and 0 < r["params"] <= r["params_total"]
        assert isinstance(r["gflops"], float) and r["gflops"] > 0
        for key in ("median", "mean", "std", "min", "max", "p10", "p90"):
            assert isinstance(r["time_ms"][key], float) and math.isfinite(r["time_ms"][key])
        assert r["time_ms"]["runs"] == 2
        assert r["fps"] == pytest.approx(1e3 / r["time_ms"]["median"])
        assert r["memory_source"] in ("measured", "xla_estimate")
        assert r["memory_bytes"] is None or isinstance(r["memory_bytes"], int)
    icnet, base = doc["results"]
    assert icnet["branch"] == "sub124" and base["branch"] is None
    assert base["speedup"] == pytest.approx(1.0)
    assert icnet["speedup"] == pytest.approx(base["time_ms"]["median"] / icnet["time_ms"]["median"])
    if base["memory_bytes"] and icnet["memory_bytes"]:
        assert icnet["memory_ratio"] == pytest.approx(base["memory_bytes"] / icnet["memory_bytes"])
    # XLA counts more work for PSPNet than for ICNet on the same input (paper Sec. 3).
    assert base["gflops"] > icnet["gflops"]


def test_bfloat16_and_unfolded_run():
    options = dataclasses.replace(TINY, models=["icnet_sub4"], dtypes=["bfloat16"], fold_bn=False)
    doc = speed.measure(options)
    (r,) = doc["results"]
    assert r["dtype"] == "bfloat16" and doc["config"]["fold_bn"] is False
    assert r["speedup"] is None  # no baseline in the run


def test_memory_probe_subprocess_prints_peak_json():
    # What the fresh subprocess of `--memory=measured` runs; CPU has no memory stats (null).
    argv = speed.probe_argv(TINY, "icnet_sub4", "float32")
    peak = profiling.run_json_subprocess(argv, timeout_s=600)["peak_bytes"]
    expected = profiling.peak_memory_bytes(jax.devices()[0])
    assert (peak is None) == (expected is None)


@pytest.mark.parametrize(
    "flag", ["--models=nonexistent", "--batch=0", "--dtype=float64", "--min-runs=3"]
)
def test_bad_flag_is_one_error_line_exit_2(flag):
    proc = run_script(flag)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_dtypes_by_backend():
    assert speed.dtypes_of("both") == ["float32", "bfloat16"]
    assert speed.dtypes_of("int8", "onnxruntime") == ["float32", "int8"]
    assert speed.dtypes_of("float32", "onnxruntime") == ["float32"]


@pytest.mark.parametrize(
    "flags", [("--dtype=int8",), ("--backend=onnxruntime", "--dtype=bfloat16")]
)
def test_a_dtype_the_backend_lacks_is_one_error_line(flags):
    proc = run_script(*flags)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
