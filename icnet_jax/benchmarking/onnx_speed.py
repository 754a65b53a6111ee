"""`benchmark.py --backend=onnxruntime`: the benchmarked networks exported to ONNX (jax2onnx,
BatchNorm folded as `--fold_bn` says), run by onnxruntime on the CPU, in float32 and, with
`--dtype=int8`, statically quantised (per channel; `inference.quantize`).

The weights are random, so the int8 ranges are calibrated on `calibration_images` random inputs
(`networks.make_images` with the next seeds): speed does not depend on the ranges. mIoU of a real
checkpoint in int8: `evaluate.py --backend=onnxruntime --dtype=int8`. Each int8 result also has
`speedup_vs_float32`: the float32 median of the same export over the int8 median (int8 is timed
with float32 for that ratio).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from icnet_jax import errors
from icnet_jax.benchmarking import profiling
from icnet_jax.benchmarking.networks import MODELS, build_model, make_images
from icnet_jax.inference import export

DTYPES = ("float32", "int8")


def check(dtypes: Sequence[str]) -> None:
    """A `errors.UserError` for a dtype onnxruntime is not benchmarked in, or absent extras."""
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise errors.UserError(f"--backend=onnxruntime runs {' or '.join(DTYPES)}, not {unknown}")
    modules = ["jax2onnx", "onnxruntime", "onnx"]
    export.require(modules, "--backend=onnxruntime")


def write_models(name: str, dtypes: Sequence[str], options: Any, folder: pathlib.Path) -> dict:
    """`{dtype: .onnx path}` of one model, exported (float32) and quantised (int8)."""
    from icnet_jax.inference import quantize

    o = options
    model, variables = build_model(name, "float32", o.fold_bn, o.width_scale, o.seed)
    variables = jax.tree.map(np.asarray, variables)
    size = (options.height, options.width)
    paths = {"float32": folder / f"{name}.onnx"}
    export.export_onnx(model.apply, variables, size, paths["float32"])
    if "int8" in dtypes:
        paths["int8"] = folder / f"{name}_int8.onnx"
        images = (
            np.asarray(make_images(dataclasses.replace(options, seed=options.seed + 1 + k)))
            for k in range(options.calibration_images)
        )
        quantize.quantize_static(paths["float32"], paths["int8"], images)
    return {"params": profiling.count_parameters(variables["params"]), "paths": paths}


def time_session(path: pathlib.Path, images: np.ndarray, options: Any, label: str) -> dict:
    """`time_ms` of onnxruntime forwards of `images` by the model at `path` (as `speed`)."""
    from icnet_jax.inference.onnx_backend import cpu_session

    session = cpu_session(path)
    feed = {session.get_inputs()[0].name: images}
    times = profiling.time_function(
        lambda: session.run(None, feed)[0],
        runs=options.runs,
        warmup=options.warmup,
        budget_s=options.time_budget or None,
        min_runs=options.min_runs,
        progress=label if options.progress else None,
        jit=False,
    )
    time_ms = {k: times[k] * 1e3 for k in ("median", "mean", "std", "min", "max", "p10", "p90")}
    time_ms.update(
        runs=times["runs"], requested_runs=times["requested_runs"], warmup=times["warmup"]
    )
    return {**time_ms, "compile_s": 0.0}


def benchmark(names: Sequence[str], dtypes: Sequence[str], options: Any) -> list[dict]:
    """`results` entries (the schema of `speed`) of every model and dtype on onnxruntime; no
    FLOPs or memory figures (null)."""
    images = np.asarray(make_images(options))
    results = []
    with tempfile.TemporaryDirectory(prefix="icnet_onnx_") as folder:
        for name in names:
            written = write_models(name, dtypes, options, pathlib.Path(folder))
            for dtype in dtypes:
                time_ms = time_session(written["paths"][dtype], images, options, f"{name} {dtype}")
                results.append(
                    {
                        "model": name,
                        "branch": MODELS[name].branch,
                        "width": MODELS[name].width * options.width_scale,
                        "dtype": dtype,
                        "params": written["params"],
                        "params_total": written["params"],
                        "gflops": None,
                        "time_ms": time_ms,
                        "fps": options.batch / (time_ms["median"] / 1e3),
                        "memory_bytes": None,
                        "memory_source": None,
                    }
                )
    return add_int8_ratios(results)


def add_int8_ratios(results: list[dict]) -> list[dict]:
    """Sets `speedup_vs_float32` (float32 median / int8 median, same model) on int8 results."""
    float32 = {r["model"]: r for r in results if r["dtype"] == "float32"}
    for r in results:
        if r["dtype"] == "int8" and r["model"] in float32:
            r["speedup_vs_float32"] = (
                float32[r["model"]]["time_ms"]["median"] / r["time_ms"]["median"]
            )
    return results
