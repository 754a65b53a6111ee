"""onnxruntime as the network of `predict.py` (`--backend=onnxruntime`): the checkpoint's
inference function exported once to ONNX (BatchNorm folded; `inference.export`), optionally
quantised to int8 (`inference.quantize`), cached beside the checkpoint and run on the CPU.

An export has fixed H and W (see `inference.export`), so one is made per network input size
(the config's `input.eval_size`, else each image size met) and cached as

    <workdir>/export/icnet_<H>x<W>_<key>.onnx         (float32)
    <workdir>/export/icnet_<H>x<W>_<key>_int8_<recipe>_n<N>.onnx  (int8: recipe, N images)

where `<key>` hashes the step folder (path, step, modification time), the model config, the
number of classes, the branch and the exporter's graph revision: a new checkpoint, another branch
or a newer export never reuses a stale file.
Files are written under a temporary name and renamed, so a killed export leaves no half file.

`OnnxModel` stands in for the Flax module in the jitted test-time functions (`test_time`): its
`apply(variables, images)` calls onnxruntime through `jax.pure_callback`, so resizing, scales,
flips, softmax and argmax stay the JAX path's own code and the labels agree with it. Its sessions
are made by `prepare(sizes)` before those functions are traced: exporting and quantising run JAX
code of their own (the calibration images are resized by JAX), which inside a trace would be
staged into the caller's function instead of running.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax import build, errors
from icnet_jax.inference import export, test_time
from icnet_jax.models import fold_batchnorm

_log = logging.getLogger(__name__)

BACKENDS = ("auto", "jax", "onnxruntime")
DTYPES = ("float32", "int8")
# What `--backend=onnxruntime` imports (the extras of requirements-export.txt).
EXTRAS_MODULES = ("jax2onnx", "onnxruntime", "onnx")


def extras_available() -> bool:
    """Whether the export extras (onnxruntime, onnx, jax2onnx) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS_MODULES)


@dataclasses.dataclass(frozen=True)
class Backend:
    """What runs the network: `name` jax, onnxruntime or auto (see `resolve`); `dtype` float32 or
    int8 (onnxruntime only: static quantisation calibrated on `calibration_images` training
    images)."""

    name: str = "jax"
    dtype: str = "float32"
    calibration_images: int = 32

    def check(self) -> None:
        """A `errors.UserError` for a combination that cannot run (before any work)."""
        if self.name not in BACKENDS:
            raise errors.UserError(f"--backend={self.name}: one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise errors.UserError(f"--dtype={self.dtype}: one of {', '.join(DTYPES)}")
        if self.dtype == "int8" and self.name != "onnxruntime":
            raise errors.UserError("--dtype=int8 runs on onnxruntime: add --backend=onnxruntime")
        if self.calibration_images < 1:
            raise errors.UserError("--calibration_images must be at least 1")
        if self.name == "onnxruntime":
            export.require(EXTRAS_MODULES, "--backend=onnxruntime")

    def resolve(self) -> tuple[Backend, str]:
        """`(backend, why)`: `auto` made concrete, with the reason in words. onnxruntime runs the
        network where JAX's default device is the CPU and the export extras are installed (it
        is 1.8-2.2x faster there, docs/inference_speed.md); JAX on an accelerator or without
        the extras. int8 runs on onnxruntime only, so `auto` with int8 is onnxruntime."""
        if self.name != "auto":
            return self, f"--backend={self.name}"
        if self.dtype == "int8":
            return dataclasses.replace(self, name="onnxruntime"), "auto: int8 runs on onnxruntime"
        platform = jax.default_backend()
        if platform != "cpu":
            return dataclasses.replace(self, name="jax"), f"auto: JAX on the {platform}"
        if not extras_available():
            why = f"auto: no export extras; onnxruntime is faster on a CPU: {export.EXTRAS}"
            return dataclasses.replace(self, name="jax"), why
        return dataclasses.replace(self, name="onnxruntime"), "auto: a CPU with onnxruntime"

    def describe(self) -> str:
        """`jax`, `onnxruntime float32` or `onnxruntime int8`."""
        return self.name if self.name == "jax" else f"{self.name} {self.dtype}"


JAX = Backend()  # the default


def cache_key(loaded: Any, branch: str) -> str:
    """12 hex digits naming a checkpoint's export: the step folder (path, step, modification
    time), the model config, the classes, the branch and `export.ONNX_REVISION`."""
    path = pathlib.Path(loaded.path).resolve()
    spec = {
        "path": str(path),
        "step": int(loaded.step),
        "mtime_ns": path.stat().st_mtime_ns if path.exists() else 0,
        "model": loaded.config.model.to_dict(),
        "num_classes": int(loaded.num_classes),
        "branch": branch,
        "onnx_revision": export.ONNX_REVISION,
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_file(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """`path`, made by `write(temporary path)` and renamed into place unless it exists."""
    if path.exists():
        return path
    errors.check_writable(path.parent, "the export cache folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def session_options(threads: int = 0):
    """onnxruntime session options: every graph optimisation; `threads` intra-op threads (0:
    onnxruntime's choice, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return options


def cpu_session(path: str | os.PathLike):
    """An onnxruntime CPU session of the model at `path`."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


class OnnxModel:
    """A checkpoint's network on onnxruntime, with the `apply(variables, images)` of a Flax
    module (variables ignored): `float32 [N, H, W, 3]` normalised images -> `{output_name:
    logits [N, H, W, classes]}`, usable under `jax.jit` at the sizes made ready by `prepare`.

    Attributes:
      output_name: ICNet's branch (`branch`), or 'output' for a network without branches.
    """

    def __init__(self, loaded: Any, branch: str, backend: Backend, *, verbose: bool = True):
        model = build.inference_model(loaded.config, loaded.num_classes, branch)
        self.output_name = branch if getattr(model, "branch", None) == branch else "output"
        self._apply = model.clone(fold_bn=True).apply
        self._variables = jax.tree.map(np.asarray, fold_batchnorm(loaded.variables))
        self._loaded = loaded
        self._backend = backend
        self._folder = pathlib.Path(loaded.workdir) / "export"
        self._key = cache_key(loaded, branch)
        self._verbose = verbose
        self._sessions: dict[tuple[int, int], Any] = {}
        self.num_classes = int(loaded.num_classes)

    def model_file(self, size: tuple[int, int]) -> pathlib.Path:
        """The cached `.onnx` of input size `size` for this backend's dtype, made if absent."""
        h, w = size
        name = f"icnet_{h}x{w}_{self._key}"
        float32 = cached_file(
            self._folder / f"{name}.onnx",
            lambda out: export.export_onnx(self._apply, self._variables, size, out),
        )
        if self._backend.dtype == "float32":
            return float32
        from icnet_jax.inference import quantize

        n = self._backend.calibration_images
        config = quantize.calibration_config(self._loaded)
        return cached_file(
            self._folder / f"{name}_int8_{quantize.RECIPE}_n{n}.onnx",
            lambda out: quantize.quantize_static(
                float32, out, quantize.dataset_images(config, size, n)
            ),
        )

    def prepare(self, sizes: Iterable[tuple[int, int]]) -> None:
        """Makes the sessions of the network input `sizes` (H, W): exported, quantised, loaded
        (or read from the cache). Call outside any traced function."""
        for size in sizes:
            self.session(tuple(size))  # type: ignore[arg-type]

    def session(self, size: tuple[int, int]):
        if size not in self._sessions:
            path = self.model_file(size)
            if self._verbose:
                _log.info(f"onnxruntime ({self._backend.dtype}): {path}")
            self._sessions[size] = cpu_session(path)
        return self._sessions[size]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits of `float32 [N, H, W, 3]` images, on the host."""
        session = self.session(tuple(images.shape[1:3]))
        name = session.get_inputs()[0].name
        return session.run(None, {name: np.asarray(images, np.float32)})[0]

    def apply(self, variables: Any, images: jax.Array) -> dict[str, jax.Array]:
        del variables
        n, h, w, _ = images.shape
        if (h, w) not in self._sessions:
            raise RuntimeError(
                f"no onnxruntime session for the input size {h}x{w}: call prepare([({h}, {w})]) "
                "before tracing (exporting and quantising cannot run inside a trace)"
            )
        shape = jax.ShapeDtypeStruct((n, h, w, self.num_classes), jnp.float32)
        return {self.output_name: jax.pure_callback(self, shape, images.astype(jnp.float32))}


def inference_network(loaded: Any, branch: str, backend: Backend) -> Any:
    """The network the Segmenter runs: the Flax module (jax) or an `OnnxModel`."""
    if backend.name == "onnxruntime":
        return OnnxModel(loaded, branch, backend)
    return build.inference_model(loaded.config, loaded.num_classes, branch)


def prepare_for_images(
    network: Any,
    image_size: Sequence[int],
    scales: Sequence[float],
    eval_size: Sequence[int] | None,
    align_corners: bool,
) -> None:
    """`prepare` for every network input size that test-time averaging (`scales`, resizing to
    `eval_size`) feeds for whole images of `image_size` (H, W)."""
    prepare(network, test_time.network_sizes(image_size[:2], scales, eval_size, align_corners))


def prepare(network: Any, sizes: Iterable[tuple[int, int]]) -> None:
    """Makes an `OnnxModel`'s sessions of the input `sizes` (H, W) before its functions are
    traced; nothing for a Flax module."""
    if isinstance(network, OnnxModel):
        network.prepare(sizes)
