"""Inference speed of ICNet's branches and the PSPNet50 baselines (ICNet paper, Table 2).

`run(options)` is what `benchmark.py` does (its docstring gives the protocol);
`measure(options)` returns that JSON document without printing. Timing, FLOPs and memory come
from `profiling`, the networks and their random weights from `models`, the table from `table`,
onnxruntime's figures (`--backend=onnxruntime`) from `onnx_speed`; this module times JAX and adds
the ratios against the half-width PSPNet50.

The JSON document (`measure`; `benchmark.py --json=FILE` writes it):

    {
      "device": {"platform": str, "device_kind": str, "device_count": int},
      "jax_version": str,
      "config": {"batch": int, "height": int, "width": int, "dtypes": [str], "fold_bn": bool,
                 "models": [str], "runs": int, "min_runs": int, "warmup": int,
                 "time_budget_s": float, "memory": str, "xla_flags": str,
                 "baseline": "pspnet50_half", "width_scale": float,
                 "backend": "jax" | "onnxruntime"},
      "results": [{
        "model": str,              # e.g. "icnet_sub124", "pspnet50_half"
        "branch": str | null,      # ICNet output branch, null for PSPNet
        "width": float,            # channel multiplier
        "backend": "jax" | "onnxruntime",
        "dtype": "float32" | "bfloat16" | "int8",   # int8: onnxruntime only
        "params": int,             # parameters this forward reads (BN folded or not)
        "params_total": int,       # all parameters of the checkpoint (every branch and the
                                   # training-only heads)
        "gflops": float | null,    # XLA cost analysis, one forward of the whole batch, 1e9 FLOPs
                                   # (null on onnxruntime)
        "time_ms": {"median": float, "mean": float, "std": float, "min": float, "max": float,
                    "p10": float, "p90": float, "runs": int, "requested_runs": int,
                    "warmup": int, "compile_s": float},   # all per forward of the batch, ms
                                                          # (compile_s in seconds)
        "fps": float,              # images per second: batch / median seconds
        "memory_bytes": int | null,
        "memory_source": "measured" | "xla_estimate" | null,   # null on onnxruntime
        "speedup": float | null,   # baseline median time / this median time
        "memory_ratio": float | null,  # baseline memory / this memory
        "speedup_vs_float32": float  # int8 only: float32 median / int8 median, same export
      }]
    }
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax

from icnet_jax.benchmarking import onnx_speed, profiling
from icnet_jax.benchmarking.networks import (
    DTYPES,
    MODELS,
    build_model,
    expand_models,
    make_images,
)
from icnet_jax.benchmarking.table import BASELINE, format_table
from icnet_jax.errors import UserError

_log = logging.getLogger(__name__)

# The memory probe re-runs the entry point in a fresh process (the peak counter cannot be reset).
SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmark.py"


@dataclasses.dataclass(frozen=True)
class Options:
    """What to benchmark: input `[batch, height, width, 3]` pixels, timing counts, seconds."""

    models: Sequence[str] = ("all",)  # names or groups (`expand_models`)
    dtypes: Sequence[str] = ("float32",)
    batch: int = 1
    height: int = 1024
    width: int = 2048
    runs: int = 50
    min_runs: int = 5
    warmup: int = 2
    time_budget: float = 120.0  # seconds of timed forwards per model; 0: no budget
    memory: str = "auto"  # auto, measured or xla_estimate
    fold_bn: bool = True
    seed: int = 0
    width_scale: float = 1.0  # channel multiplier on every model (tiny models for tests)
    progress: bool = True
    backend: str = "jax"  # or onnxruntime (`onnx_speed`)
    calibration_images: int = 4  # int8 on onnxruntime: random inputs calibrating the ranges


def dtypes_of(dtype: str, backend: str = "jax") -> list[str]:
    """`--dtype` as a list of dtype names: on jax float32, bfloat16 or both; on onnxruntime
    float32, or int8 (timed with float32, for the ratio) or both."""
    if backend == "onnxruntime":
        return ["float32", "int8"] if dtype in ("int8", "both") else [dtype]
    return list(DTYPES) if dtype == "both" else [dtype]


def probe_argv(options: Options, name: str, dtype: str) -> list[str]:
    """The command line (after `python`) of the memory probe of one model and dtype.

    XLA_FLAGS (with `--xla_flags` appended) is inherited through the environment."""
    return [
        str(SCRIPT),
        f"--memory_probe={name}",
        f"--dtype={dtype}",
        f"--batch={options.batch}",
        f"--height={options.height}",
        f"--width={options.width}",
        f"--width_scale={options.width_scale}",
        f"--seed={options.seed}",
        "--fold_bn" if options.fold_bn else "--nofold_bn",
    ]


def memory_probe(options: Options, name: str) -> dict[str, Any]:
    """One forward of one model in this (fresh) process; the device's peak bytes in use.

    Variables are made and folded on the host CPU and then put on the device, so the peak holds
    the folded parameters, the input, the output and the forward's temporaries only."""
    with jax.default_device(jax.devices("cpu")[0]):
        model, variables = build_model(
            name, options.dtypes[0], options.fold_bn, options.width_scale, options.seed
        )
        images = make_images(options)
    device = jax.devices()[0]
    variables, images = jax.device_put((variables, images), device)
    jax.block_until_ready(jax.jit(model.apply)(variables, images))
    return {"peak_bytes": profiling.peak_memory_bytes(device)}


def benchmark_model(name: str, dtype: str, options: Options) -> dict[str, Any]:
    """Parameters, FLOPs, timing and memory of one model; a `results` entry of the JSON."""
    spec = MODELS[name]
    model, variables = build_model(name, dtype, options.fold_bn, options.width_scale, options.seed)
    images = make_images(options)
    compiled, compile_s = profiling.compile_function(model.apply, variables, images)
    times = profiling.time_function(
        compiled,
        variables,
        images,
        runs=options.runs,
        warmup=options.warmup,
        budget_s=options.time_budget or None,
        min_runs=options.min_runs,
        progress=f"{name} {dtype}" if options.progress else None,
    )
    device = jax.devices()[0]
    memory, source = None, "xla_estimate"
    if options.memory == "measured" or (
        options.memory == "auto" and profiling.peak_memory_bytes(device) is not None
    ):
        argv = probe_argv(options, name, dtype)
        memory = profiling.run_json_subprocess(argv)["peak_bytes"]
        source = "measured"
    if memory is None:
        memory, source = profiling.compiled_memory_estimate(compiled), "xla_estimate"
    time_ms = {k: times[k] * 1e3 for k in ("median", "mean", "std", "min", "max", "p10", "p90")}
    time_ms.update(
        runs=times["runs"],
        requested_runs=times["requested_runs"],
        warmup=times["warmup"],
        compile_s=compile_s,
    )
    return {
        "model": name,
        "branch": spec.branch,
        "width": spec.width * options.width_scale,
        "dtype": dtype,
        "params": profiling.count_used_parameters(
            lambda params, x: model.apply({**variables, "params": params}, x),
            variables["params"],
            images,
        ),
        "params_total": profiling.count_parameters(variables["params"]),
        "gflops": profiling.compiled_flops(compiled) / 1e9,
        "time_ms": time_ms,
        "fps": options.batch / times["median"],
        "memory_bytes": memory,
        "memory_source": source,
    }


def add_ratios(results: list[dict[str, Any]], baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Sets `speedup` (baseline median time / time) and `memory_ratio` (baseline memory /
    memory) of every result against the baseline model of the same dtype; None without one."""
    base = {r["dtype"]: r for r in results if r["model"] == baseline}
    for r in results:
        b = base.get(r["dtype"])
        r["speedup"] = b["time_ms"]["median"] / r["time_ms"]["median"] if b else None
        r["memory_ratio"] = (
            b["memory_bytes"] / r["memory_bytes"]
            if b and b["memory_bytes"] and r["memory_bytes"]
            else None
        )
    return results


def device_info() -> dict[str, Any]:
    """Platform, kind and count of the devices JAX uses."""
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
    }


def measure(options: Options) -> dict[str, Any]:
    """Benchmarks every model and dtype of `options`; the JSON document (see benchmark.py)."""
    models = expand_models(options.models)
    dtypes = list(options.dtypes)
    if options.backend == "onnxruntime":
        results = onnx_speed.benchmark(models, dtypes, options)
    else:
        results = [benchmark_model(name, dtype, options) for dtype in dtypes for name in models]
    for result in results:
        result["backend"] = options.backend
    return {
        "device": device_info(),
        "jax_version": jax.__version__,
        "config": {
            "batch": options.batch,
            "height": options.height,
            "width": options.width,
            "dtypes": dtypes,
            "fold_bn": options.fold_bn,
            "models": models,
            "runs": options.runs,
            "min_runs": options.min_runs,
            "warmup": options.warmup,
            "time_budget_s": options.time_budget,
            "memory": options.memory,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "baseline": BASELINE,
            "width_scale": options.width_scale,
            "backend": options.backend,
        },
        "results": add_ratios(results),
    }


def run(
    options: Options,
    json_path: str | None = None,
    xla_flags: str = "",
    probe: str | None = None,
) -> dict[str, Any]:
    """Prints the setup and the table of `measure(options)`, writes it to `json_path` if given.

    `xla_flags` is appended to XLA_FLAGS (before the backend starts: a warning otherwise).
    `probe`: instead, prints `memory_probe(options, probe)` as one JSON line (what the fresh
    subprocess of a measured memory runs) and returns it."""
    try:
        expand_models(options.models)
    except ValueError as error:
        raise UserError(f"--models: {error}") from None
    if options.backend == "onnxruntime":
        onnx_speed.check(options.dtypes)
    elif "int8" in options.dtypes:
        raise UserError("--dtype=int8 runs on onnxruntime: add --backend=onnxruntime")
    if probe is not None and probe not in MODELS:
        raise UserError(f"--memory_probe={probe}: one of {', '.join(MODELS)}")
    if xla_flags:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            _log.warning("warning: --xla_flags given after the JAX backend started; ignored")
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    if probe is not None:
        result = memory_probe(options, probe)
        _log.info(json.dumps(result))
        return result
    info = device_info()
    _log.info(
        f"device: {info['device_kind']} (platform {info['platform']}, "
        f"{info['device_count']} device(s)), jax {jax.__version__}, backend {options.backend}"
    )
    _log.info(
        f"input {options.batch}x{options.height}x{options.width}x3, BatchNorm "
        f"{'folded' if options.fold_bn else 'not folded'}, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}"
    )
    budget = f"{options.time_budget:g} s" if options.time_budget else "none"
    _log.info(
        f"timing: compiled ahead of time, {options.warmup} warm-up call(s), block_until_ready "
        f"per call; runs = min({options.runs}, floor(time budget {budget} / one call)), "
        f"at least {min(options.min_runs, options.runs)}"
    )
    document = measure(options)
    _log.info("")
    _log.info(format_table(document["results"]))
    if json_path:
        pathlib.Path(json_path).absolute().parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(document, f, indent=2)
        _log.info(f"\nwrote {json_path}")
    return document
