"""Inference speed of ICNet's branches and the PSPNet50 baselines (ICNet paper, Table 2).

    PYTHONPATH=. python benchmark.py                                   # all models, 1024x2048
    PYTHONPATH=. python benchmark.py --height 1025 --width 2049 --models icnet --runs 5
    PYTHONPATH=. python benchmark.py --dtype both --json=results.json

Protocol: every model is compiled ahead of time (compile time reported apart, never timed),
warmed up (`--warmup` calls), then called `--runs` times, each call ended with
`jax.block_until_ready`; the median and spread (p10-p90, std) of the per-call times are reported.
Where one call is slow, fewer calls are timed by a fixed rule: runs = min(--runs,
floor(--time-budget / seconds of one warm-up call)), but never fewer than `--min-runs`. BatchNorm
is folded into the convolutions by default (`--no-fold-bn` keeps it), as the paper measured.
Weights are random (speed does not depend on them; see `random_variables`); inputs are
`[batch, height, width, 3]` float32, cast to `--dtype` inside the model.

Models (`--models`, names or groups): icnet_sub4, icnet_sub24, icnet_sub124 (the released
half-width ICNet, by output branch), pspnet50_half (PSPNet50 at half width, the paper's
baseline), pspnet50 (full width). Groups: icnet, pspnet, all (default). Speed-up and memory
ratios are against pspnet50_half of the same dtype, when it is in the run.

Memory (`--memory`): 'measured' is the device's peak_bytes_in_use in a fresh subprocess that
runs one forward of one model (GPU/TPU only, as JAX cannot reset the peak counter);
'xla_estimate' is the compiled executable's memory analysis (arguments + outputs +
temporaries - aliased), available everywhere. 'auto' (default) measures where the device has
memory statistics and estimates elsewhere. Each result says which it holds.

`--json=FILE` writes:

    {
      "device": {"platform": str, "device_kind": str, "device_count": int},
      "jax_version": str,
      "config": {"batch": int, "height": int, "width": int, "dtypes": [str], "fold_bn": bool,
                 "models": [str], "runs": int, "min_runs": int, "warmup": int,
                 "time_budget_s": float, "memory": str, "xla_flags": str,
                 "baseline": "pspnet50_half"},
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

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax import profiling
from icnet_jax.models import ICNet, PSPNet, fold_batchnorm

BASELINE = "pspnet50_half"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Parameter shapes are taken on a small input (they do not depend on the input size).
INIT_SIZE = (129, 257)


@dataclass(frozen=True)
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


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names from names and groups, in order, without repeats."""
    out: list[str] = []
    for name in names:
        if name not in GROUPS and name not in MODELS:
            raise ValueError(f"unknown model {name!r}: one of {[*GROUPS, *MODELS]}")
        for model in GROUPS.get(name, [name]):
            if model not in out:
                out.append(model)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--height", type=int, default=1024, help="input height, pixels")
    parser.add_argument("--width", type=int, default=2048, help="input width, pixels")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="float32")
    parser.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the convolutions (default: yes, as the paper)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["all"],
        help=f"models or groups: {', '.join([*GROUPS, *MODELS])}",
    )
    parser.add_argument("--runs", type=int, default=50, help="timed forwards per model")
    parser.add_argument(
        "--min-runs", type=int, default=5, help="fewest timed forwards the time budget may leave"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards before timing")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=120.0,
        help="seconds of timed forwards per model; fewer than --runs are made "
        "when they would not fit (0: no budget)",
    )
    parser.add_argument("--memory", choices=["auto", "measured", "xla_estimate"], default="auto")
    parser.add_argument(
        "--xla-flags",
        default="",
        help="appended to XLA_FLAGS before the backend starts, e.g. "
        "'--xla_cpu_enable_fast_math=true'",
    )
    parser.add_argument("--json", metavar="FILE", help="write all results as JSON to FILE")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--seed", type=int, default=0)
    # Hidden: channel multiplier on every model (tiny models for tests) and the memory probe
    # that a fresh subprocess runs for one model.
    parser.add_argument("--width-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-probe", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = expand_models(args.models)
    args.dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    return args


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


def make_images(args: argparse.Namespace) -> jax.Array:
    rng = np.random.default_rng(args.seed)
    return jnp.asarray(
        rng.standard_normal((args.batch, args.height, args.width, 3), dtype=np.float32)
    )


def _probe_argv(args: argparse.Namespace, name: str, dtype: str) -> list[str]:
    argv = [
        os.path.abspath(__file__),
        "--memory-probe",
        name,
        "--dtype",
        dtype,
        "--batch",
        str(args.batch),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
        "--width-scale",
        str(args.width_scale),
        "--seed",
        str(args.seed),
        "--fold-bn" if args.fold_bn else "--no-fold-bn",
    ]
    return argv  # XLA_FLAGS (with --xla-flags appended) is inherited through the environment


def memory_probe(args: argparse.Namespace) -> dict[str, Any]:
    """One forward of one model in this (fresh) process; the device's peak bytes in use.

    Variables are made and folded on the host CPU and then put on the device, so the peak holds
    the folded parameters, the input, the output and the forward's temporaries only."""
    with jax.default_device(jax.devices("cpu")[0]):
        model, variables = build_model(
            args.memory_probe, args.dtypes[0], args.fold_bn, args.width_scale, args.seed
        )
        images = make_images(args)
    device = jax.devices()[0]
    variables, images = jax.device_put((variables, images), device)
    jax.block_until_ready(jax.jit(model.apply)(variables, images))
    return {"peak_bytes": profiling.peak_memory_bytes(device)}


def benchmark_model(name: str, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    """Parameters, FLOPs, timing and memory of one model; a `results` entry of the JSON."""
    spec = MODELS[name]
    model, variables = build_model(name, dtype, args.fold_bn, args.width_scale, args.seed)
    images = make_images(args)
    compiled, compile_s = profiling.compile_function(model.apply, variables, images)
    times = profiling.time_function(
        compiled,
        variables,
        images,
        runs=args.runs,
        warmup=args.warmup,
        budget_s=args.time_budget or None,
        min_runs=args.min_runs,
        progress=None if args.no_progress else f"{name} {dtype}",
    )
    device = jax.devices()[0]
    memory, source = None, "xla_estimate"
    if args.memory == "measured" or (
        args.memory == "auto" and profiling.peak_memory_bytes(device) is not None
    ):
        memory = profiling.run_json_subprocess(_probe_argv(args, name, dtype))["peak_bytes"]
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
        "width": spec.width * args.width_scale,
        "dtype": dtype,
        "params": profiling.count_used_parameters(
            lambda params, x: model.apply({**variables, "params": params}, x),
            variables["params"],
            images,
        ),
        "params_total": profiling.count_parameters(variables["params"]),
        "gflops": profiling.compiled_flops(compiled) / 1e9,
        "time_ms": time_ms,
        "fps": args.batch / times["median"],
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmarks every model and dtype of `args`; the JSON document (see module docstring)."""
    results = [benchmark_model(name, dtype, args) for dtype in args.dtypes for name in args.models]
    return {
        "device": device_info(),
        "jax_version": jax.__version__,
        "config": {
            "batch": args.batch,
            "height": args.height,
            "width": args.width,
            "dtypes": args.dtypes,
            "fold_bn": args.fold_bn,
            "models": args.models,
            "runs": args.runs,
            "min_runs": args.min_runs,
            "warmup": args.warmup,
            "time_budget_s": args.time_budget,
            "memory": args.memory,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "baseline": BASELINE,
            "width_scale": args.width_scale,
        },
        "results": add_ratios(results),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.xla_flags:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            print(
                "warning: --xla-flags given after the JAX backend started; ignored", file=sys.stderr
            )
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return {}
    info = device_info()
    print(
        f"device: {info['device_kind']} (platform {info['platform']}, "
        f"{info['device_count']} device(s)), jax {jax.__version__}"
    )
    print(
        f"input {args.batch}x{args.height}x{args.width}x3, BatchNorm "
        f"{'folded' if args.fold_bn else 'not folded'}, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}"
    )
    budget = f"{args.time_budget:g} s" if args.time_budget else "none"
    print(
        f"timing: compiled ahead of time, {args.warmup} warm-up call(s), block_until_ready "
        f"per call; runs = min({args.runs}, floor(time budget {budget} / one call)), "
        f"at least {min(args.min_runs, args.runs)}",
        flush=True,
    )
    document = run(args)
    print()
    print(format_table(document["results"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
        print(f"\nwrote {args.json}")
    return document


if __name__ == "__main__":
    main()
