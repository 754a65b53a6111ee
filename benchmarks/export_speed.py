"""Speed of an exported model against JAX on the same machine, in one run: the checkpoint's
inference function (jitted, BatchNorm folded) and its ONNX export(s) run by onnxruntime (e.g.
float32 and int8: `--onnx=a.onnx,a_int8.onnx`), called in turn on the same
`float32 [batch, H, W, 3]` input (H, W: the export's), medians of `--runs`. `--pause` seconds
separate the calls: after a call, onnxruntime's worker threads spin for a while and would take
a core from the next model's call (on 2 cores that made int8 look 1.1x faster than float32
where one model at a time gave 1.5x).

    python -m icnet_jax.tools.export --checkpoint=DIR --output=exported/ --formats=onnx
    PYTHONPATH=. python benchmarks/export_speed.py --checkpoint=DIR --onnx=exported/icnet.onnx

Needs the extras of requirements-export.txt (onnxruntime). onnxruntime runs on the CPU
(`CPUExecutionProvider`); JAX on its default device, so on a GPU machine this compares a CPU
deployment with a GPU one.
"""

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from icnet_jax import cli
from icnet_jax.cli import flags
from icnet_jax.inference.export import inference_function, max_relative_error, onnx_session


def _run_onnx(session, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return session.run(None, feeds)[0]


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS

    paths = args.onnx.split(",")
    sessions = {path: onnx_session(path) for path in paths}
    (spec,) = sessions[paths[0]].get_inputs()
    images = np.random.default_rng(0).normal(0, 50, (args.batch, *spec.shape[1:]))
    images = images.astype(np.float32)
    apply_fn, variables, _ = inference_function(args.checkpoint, fold_bn=True)
    forward = jax.jit(apply_fn)
    calls: dict[str, Callable[[], Any]] = {
        "jax": lambda: jax.block_until_ready(forward(variables, images))
    }
    for path, session in sessions.items():
        name = "onnxruntime" if len(paths) == 1 else f"onnxruntime {path}"
        calls[name] = functools.partial(_run_onnx, session, {spec.name: images})
    outputs = {name: np.asarray(call()) for name, call in calls.items()}  # warm-up, compile
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.runs):
        for name, call in calls.items():
            time.sleep(args.pause)
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    print(f"input {images.shape}, jax on {jax.devices()[0].device_kind}, {args.runs} runs each")
    for name in calls:
        print(f"{name:12s} median {median[name] * 1e3:8.1f} ms")
    for name in list(calls)[1:]:
        print(f"{name} / jax time: {median[name] / median['jax']:.2f}")
        error = max_relative_error(outputs[name], outputs["jax"])
        print(f"{name}: max |difference| / max |logit|: {error:.1e}")


if __name__ == "__main__":
    flags.DEFINE_string("checkpoint", None, "The checkpoint.", required=True)
    flags.DEFINE_string(
        "onnx", None, "The checkpoint's export(s), comma-separated (e.g. + int8).", required=True
    )
    flags.DEFINE_integer("batch", 1, "Images per call.")
    flags.DEFINE_integer("runs", 5, "Timed calls per backend.")
    flags.DEFINE_float("pause", 0.3, "Seconds between calls.")
    cli.run(main)
