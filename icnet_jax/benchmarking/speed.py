"""Inference speed of ICNet's branches and the PSPNet50 baselines (ICNet paper, Table 2).

`run(options)` is what `benchmark.py` does (its docstring gives the protocol);
`measure(options)` returns that JSON document without printing. Timing, FLOPs and memory come
from `profiling`; this module adds the models, their random weights, the ratios against the
half-width PSPNet50 and the table.

The JSON document (`measure`; `benchmark.py --json=FILE` writes it):

    {
      "device": {"platform": str, "device_kind": str, "device_count": int},
      "jax_version": str,
      "config": {"batch": int, "height": int, "width": int, "dtypes": [str], "fold_bn": bool,
                 "models": [str], "runs": int, "min_runs": int, "warmup": int,
                 "time_budget_s": float, "memory": str, "xla_flags": str,
                 "baseline": "pspnet50_half", "width_scale": float},
      "results": [{
        "model": str,              # e.g. "icnet_sub124", "pspnet50_half"
        "branch": str | null,      # ICNet output branch, null for PSPNet
        "width": float,            # channel multiplier
        "dtype": "float32" | "bfloat16",
        "params": int,             # parameters this forward reads (BN folded or not)
        "params_total": int,       # all parameters of the checkpoint (every branch and the
                                   # training-only heads)
        "gflops": float,           # XLA cost analysis, one forward of the whole batch, 1e9 FLOPs
        "time_ms": {"median": float, "mean": float, "std": float, "min": float, "max": float,
                    "p10": float, "p90": float, "runs": int, "requested_runs": int,
                    "warmup": int, "compile_s": float},   # all per forward of the batch, ms
                                                          # (compile_s in seconds)
        "fps": float,              # images per second: batch / median seconds
        "memory_bytes": int | null,
        "memory_source": "measured" | "xla_estimate",
        "speedup": float | null,   # baseline median time / this median time
        "memory_ratio": float | null  # baseline memory / this memory
      }]
    }
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax.benchmarking import profiling
from icnet_jax.errors import UserError
from icnet_jax.models import ICNet, PSPNet, fold_batchnorm

BASELINE = "pspnet50_half"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Parameter shapes are taken on a small input (they do not depend on the input size).
INIT_SIZE = (129, 257)
# The memory probe re-runs the entry point in a fresh process (the peak counter cannot be reset).
SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmark.py"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmarked network: `build(width_scale, fold_bn, dtype)` returns the Flax module."""

    name: str
    branch: str | None
    width: float
    build: Callable[[float, bool, Any], Any]


def _icnet(branch: str) -> ModelSpec:
    return ModelSpec(
        f"icnet_{branch}",
        branch,
        0.5,
        lambda s, fold, dt: ICNet(width=0.5 * s, branch=branch, fold_bn=fold, dtype=dt),
    )


def _pspnet(name: str, width: float) -> ModelSpec:
    return ModelSpec(
        name, None, width, lambda s, fold, dt: PSPNet(width=width * s, fold_bn=fold, dtype=dt)
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _icnet("sub4"),
        _icnet("sub24"),
        _icnet("sub124"),
        _pspnet("pspnet50_half", 0.5),
        _pspnet("pspnet50", 1.0),
    )
}
GROUPS = {
    "all": list(MODELS),
    "icnet": ["icnet_sub4", "icnet_sub24", "icnet_sub124"],
    "pspnet": ["pspnet50_half", "pspnet50"],
}
NAMES = [*GROUPS, *MODELS]  # what `--models` accepts


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


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names from names and groups, in order, without repeats; ValueError on an unknown."""
    out: list[str] = []
    for name in names:
        if name not in GROUPS and name not in MODELS:
            raise ValueError(f"unknown model {name!r}: one of {', '.join(NAMES)}")
        for model in GROUPS.get(name, [name]):
            if model not in out:
                out.append(model)
    return out


def dtypes_of(dtype: str) -> list[str]:
    """`--dtype` (float32, bfloat16 or both) as a list of dtype names."""
    return list(DTYPES) if dtype == "both" else [dtype]


def random_variables(model: Any, seed: int = 0) -> dict[str, Any]:
    """Random variables of `model` without running `model.init`.

    Shapes come from `jax.eval_shape(model.init, ...)` (no compilation: jitting `init`
    costs ~40 s of XLA compilation per model on a 2-core CPU); values are drawn with NumPy:
    kernels He-normal (std sqrt(2 / fan_in)), BatchNorm scale and variance 1, biases and means 0.
    Speed does not depend on the values; these keep activations O(1) (no denormals).
    """
    shapes = jax.eval_shape(
        model.init, jax.random.PRNGKey(seed), jax.ShapeDtypeStruct((1, *INIT_SIZE, 3), jnp.float32)
    )
    rng = np.random.default_rng(seed)

    def fill(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> jax.Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
        elif name in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, dtype=leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def build_model(
    name: str, dtype: str, fold_bn: bool, width_scale: float = 1.0, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """The module and its random variables (`random_variables`), BatchNorm folded when
    `fold_bn` (with `fold_batchnorm`, into `model.clone(fold_bn=True)`)."""
    model = MODELS[name].build(width_scale, False, DTYPES[dtype])
    variables = random_variables(model, seed)
    if fold_bn:
        variables = jax.jit(fold_batchnorm)(variables)
        model = model.clone(fold_bn=True)
    return model, variables


def make_images(options: Options) -> jax.Array:
    """Standard-normal float32 inputs `[batch, height, width, 3]`."""
    rng = np.random.default_rng(options.seed)
    shape = (options.batch, options.height, options.width, 3)
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


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
            ("Memory source", [r["memory_source"] for r in rows]),
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


def measure(options: Options) -> dict[str, Any]:
    """Benchmarks every model and dtype of `options`; the JSON document (see benchmark.py)."""
    models = expand_models(options.models)
    dtypes = list(options.dtypes)
    results = [benchmark_model(name, dtype, options) for dtype in dtypes for name in models]
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
    if probe is not None and probe not in MODELS:
        raise UserError(f"--memory_probe={probe}: one of {', '.join(MODELS)}")
    if xla_flags:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            print(
                "warning: --xla_flags given after the JAX backend started; ignored",
                file=sys.stderr,
            )
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    if probe is not None:
        result = memory_probe(options, probe)
        print(json.dumps(result))
        return result
    info = device_info()
    print(
        f"device: {info['device_kind']} (platform {info['platform']}, "
        f"{info['device_count']} device(s)), jax {jax.__version__}"
    )
    print(
        f"input {options.batch}x{options.height}x{options.width}x3, BatchNorm "
        f"{'folded' if options.fold_bn else 'not folded'}, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}"
    )
    budget = f"{options.time_budget:g} s" if options.time_budget else "none"
    print(
        f"timing: compiled ahead of time, {options.warmup} warm-up call(s), block_until_ready "
        f"per call; runs = min({options.runs}, floor(time budget {budget} / one call)), "
        f"at least {min(options.min_runs, options.runs)}",
        flush=True,
    )
    document = measure(options)
    print()
    print(format_table(document["results"]))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(document, f, indent=2)
        print(f"\nwrote {json_path}")
    return document
