"""Profiling helpers for inference benchmarks: parameters, XLA FLOPs, timing and memory.

All times are in seconds, memory in bytes, FLOPs as a plain count (not GFLOPs).

Timing follows the protocol the ICNet paper's critics ask for: the function is jitted and
compiled first (compile time reported apart), called a few times to warm up, and every timed
call ends with `jax.block_until_ready`, so asynchronous dispatch does not hide device time.

Peak memory: JAX cannot reset a device's peak counter, so `peak_memory_bytes` of a process that
has already run something else says nothing about one model. Two sources are offered:
- measured: `device.memory_stats()['peak_bytes_in_use']` (GPU/TPU only) read in a fresh
  subprocess that runs one forward (`run_json_subprocess`);
- xla_estimate: the compiled executable's `memory_analysis()` (arguments + outputs + temporaries
  - aliased), available on every backend, CPU included.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "compile_function",
    "compiled_flops",
    "compiled_memory_estimate",
    "count_parameters",
    "count_used_parameters",
    "peak_memory_bytes",
    "run_json_subprocess",
    "runs_within_budget",
    "summarize_times",
    "time_function",
    "xla_flops",
]


def count_parameters(tree: Any) -> int:
    """Number of scalar entries (not bytes) over all array leaves of a pytree."""
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree)))


def count_used_parameters(fn: Callable[..., Any], tree: Any, *args: Any) -> int:
    """Number of scalar entries of the leaves of `tree` that `fn(tree, *args)` actually reads
    (from the traced jaxpr; leaves never used, e.g. other branches' layers, are left out)."""
    closed = jax.make_jaxpr(fn)(tree, *args)
    leaves = jax.tree_util.tree_leaves(tree)
    invars = closed.jaxpr.invars[: len(leaves)]
    read = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars}
    read |= {id(v) for v in closed.jaxpr.outvars}
    return int(
        sum(int(np.prod(np.shape(leaf))) for leaf, var in zip(leaves, invars) if id(var) in read)
    )


def compile_function(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Ahead-of-time compiles `jax.jit(fn)` for `args`.

    Returns:
      `(compiled, seconds)`: the `jax.stages.Compiled` executable and the wall-clock seconds that
      lowering and compiling took. `fn` may already be jitted.
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _cost_dicts(compiled: Any) -> list[dict[str, float]]:
    analysis = compiled.cost_analysis()
    if analysis is None:
        return []
    if isinstance(analysis, dict):  # jax >= 0.4.36 (0.10.2 included): one dict
        return [analysis]
    return [a for a in analysis if a]  # older jax: one dict per computation


def compiled_flops(compiled: Any) -> float:
    """FLOPs (count, a multiply-add is 2) of one call of a compiled executable, as XLA's cost
    analysis counts them; NaN where the backend gives no analysis."""
    dicts = _cost_dicts(compiled)
    if not dicts or not any("flops" in d for d in dicts):
        return math.nan
    return float(sum(d.get("flops", 0.0) for d in dicts))


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs (count) of one call `fn(*args)` from XLA's cost analysis of `jax.jit(fn)` compiled
    for these arguments. A `[m, k] @ [k, n]` matmul gives `2 * m * n * k`."""
    compiled, _ = compile_function(fn, *args)
    return compiled_flops(compiled)


def compiled_memory_estimate(compiled: Any) -> int | None:
    """Bytes a call of a compiled executable holds at its peak, from XLA's buffer assignment:
    arguments + outputs + temporaries - aliased (generated code excluded). None where the
    backend gives no memory analysis."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return int(total)


def peak_memory_bytes(device: Any = None) -> int | None:
    """Peak bytes in use on `device` (default: the first device) since the process started, from
    `device.memory_stats()`; None on backends without memory statistics (CPU).

    The counter cannot be reset: for one model's peak, read it in a fresh process that runs only
    that model (see `run_json_subprocess`)."""
    device = jax.devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def run_json_subprocess(argv: Sequence[str], timeout_s: float = 600.0) -> Any:
    """Runs `python *argv` in a fresh interpreter (same environment) and returns the JSON value
    printed on the last line of its stdout. Raises `RuntimeError` when the child fails."""
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"subprocess {argv} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return json.loads(lines[-1])


def runs_within_budget(
    requested: int, seconds_per_run: float, budget_s: float | None, min_runs: int = 5
) -> int:
    """The number of timed runs: `requested`, cut to what fits in `budget_s` seconds at
    `seconds_per_run` each, but never below `min(min_runs, requested)`. No budget: `requested`."""
    if budget_s is None or budget_s <= 0 or seconds_per_run <= 0:
        return requested
    fits = int(budget_s // seconds_per_run)
    return max(min(min_runs, requested), min(requested, fits))


def summarize_times(seconds: Sequence[float]) -> dict[str, float | int]:
    """Statistics of per-run times, in seconds: median, mean, std (population), min, max, p10,
    p90 and the number of runs."""
    t = np.asarray(seconds, dtype=np.float64)
    return {
        "median": float(np.median(t)),
        "mean": float(np.mean(t)),
        "std": float(np.std(t)),
        "min": float(np.min(t)),
        "max": float(np.max(t)),
        "p10": float(np.percentile(t, 10)),
        "p90": float(np.percentile(t, 90)),
        "runs": int(t.size),
    }


def time_function(
    fn: Callable[..., Any],
    *args: Any,
    runs: int = 50,
    warmup: int = 3,
    budget_s: float | None = None,
    min_runs: int = 5,
    progress: str | None = None,
    jit: bool = True,
) -> dict[str, Any]:
    """Times `fn(*args)` jitted (`jit=False`: called as is, e.g. an onnxruntime session), warmed
    up, every call ended with `jax.block_until_ready`.

    Args:
      fn: a function of arrays, a jitted function or a `jax.stages.Compiled` executable (used
        as is; otherwise it is compiled ahead of time, so compilation is never timed).
      runs: requested number of timed calls.
      warmup: untimed calls before timing (at least 1).
      budget_s: optional time budget in seconds for the timed calls; when `runs` calls would not
        fit at the slowest warm-up call's speed, fewer are made (`runs_within_budget`).
      min_runs: the fewest timed calls the budget may leave.
      progress: a tqdm description to show a progress bar on stderr; None for none.
    Returns:
      `summarize_times` of the per-call seconds (median, mean, std, min, max, p10, p90, runs)
      plus `requested_runs`, `warmup`, `compile_s` (0.0 when `fn` was already compiled) and
      `warmup_s` (the seconds of each warm-up call, the first included).
    """
    if isinstance(fn, jax.stages.Compiled) or not jit:
        compiled, compile_s = fn, 0.0
    else:
        compiled, compile_s = compile_function(fn, *args)

    warmup_s = []
    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        warmup_s.append(time.perf_counter() - start)
    # The last warm-up calls are the steadiest estimate of one call.
    estimate = min(warmup_s[-2:]) if len(warmup_s) > 1 else warmup_s[0]
    n = runs_within_budget(runs, estimate, budget_s, min_runs)

    iterator: Any = range(n)
    if progress is not None:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=progress, unit="run", leave=False, file=sys.stderr)
    times = []
    for _ in iterator:
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)

    stats: dict[str, Any] = summarize_times(times)
    stats.update(requested_runs=runs, warmup=len(warmup_s), compile_s=compile_s, warmup_s=warmup_s)
    return stats
