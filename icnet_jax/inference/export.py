"""The library half of the export (`python -m icnet_jax.tools.export` is its command line):
a checkpoint's inference function, written as a TensorFlow SavedModel (jax2tf) or ONNX
(jax2onnx) with a dynamic batch dimension, loaded back, and checked against JAX.

The exported function takes images already normalised as the checkpoint's config says (for the
released weights: BGR, minus the mean, no scaling) `float32 [batch, H, W, 3]` and returns logits
`[batch, H, W, classes]` of the inference branch (sub124). H and W are fixed at export (ICNet's
align-corners resizing and pyramid-pooling windows are computed from the static sizes, which is
also what makes the export exact: each resize is one ONNX `Resize` node with the sizes and the
coordinate convention spelled out, `onnx_resize`; max pooling's padding is the `MaxPool`'s
own, `onnx_pooling`); the batch is dynamic. `fold_bn` exports the
inference form with BatchNorm folded into the convolutions.

The SavedModel holds the network as StableHLO in an `XlaCallModule` op, lowered for each of
`platforms` (default cpu, cuda and tpu): without that, jax2tf lowers for the exporting machine
only, and a model exported on a CPU would refuse to run on a GPU server.

ONNX goes straight from JAX (jax2onnx), not through TensorFlow: jax2tf now serialises to StableHLO
inside one `XlaCallModule` op, which tf2onnx cannot convert. So ONNX needs no TensorFlow.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from icnet_jax import errors
from icnet_jax.weights import trees
from icnet_jax.weights.checkpoints import existing_checkpoint

_log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # relative to the largest |logit|
FORMATS = ("saved_model", "onnx")
# The ONNX graph's revision, part of the onnxruntime backend's cache key: a change of the graph
# (2: bilinear resizes as Resize nodes, `onnx_resize`; 3: max pooling's padding as MaxPool pads,
# `onnx_pooling`) makes cached exports anew.
ONNX_REVISION = 3
PLATFORMS = ("cpu", "cuda", "tpu")
# The modules each format needs (the extras of requirements-export.txt).
NEEDS = {"saved_model": ("tensorflow",), "onnx": ("jax2onnx", "onnx", "onnxruntime")}
EXTRAS = 'pip install -r requirements-export.txt && pip install --no-deps "jax2onnx>=0.17"'

Apply = Callable[[Any, Any], Any]


def require(modules: Sequence[str], what: str) -> None:
    """A `errors.UserError` naming the pip command of the extras when any of `modules` is absent
    (`what` needs them: "the export", "--backend=onnxruntime")."""
    absent = [m for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]
    if absent:
        raise errors.UserError(f"{what} needs {', '.join(absent)}: {EXTRAS}")


def inference_function(checkpoint, *, fold_bn: bool = True) -> tuple[Apply, Any, dict]:
    """`(apply(variables, images), variables, config_dict)` of a checkpoint's ICNet / PSPNet."""
    from icnet_jax import build
    from icnet_jax.inference import saved_run
    from icnet_jax.models import fold_batchnorm

    loaded = saved_run.load_checkpoint(checkpoint)  # the run's own config, nothing changed
    model = build.create_model(loaded.config, loaded.num_classes, fold_bn=fold_bn)
    variables = loaded.variables
    if fold_bn:
        variables = fold_batchnorm(variables)
    return model.apply, trees.to_numpy(variables), loaded.saved_config


def export_saved_model(
    apply_fn: Apply,
    variables,
    size: tuple[int, int],
    output,
    *,
    platforms: Sequence[str] = PLATFORMS,
) -> None:
    """Writes a SavedModel whose `serving_default(images)` runs `apply_fn(variables, images)` on
    any of `platforms`."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    h, w = size
    converted = jax2tf.convert(
        apply_fn,
        polymorphic_shapes=[None, f"(b, {h}, {w}, 3)"],
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    module.weights = tf.nest.map_structure(tf.Variable, variables)
    module.serve = tf.function(
        lambda images: converted(module.weights, images),
        input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="images")],
        autograph=False,
    )
    tf.saved_model.save(module, str(output), signatures={"serving_default": module.serve})


def export_onnx(
    apply_fn: Apply, variables, size: tuple[int, int], output, *, opset: int = 17
) -> None:
    """Writes an ONNX model `images [B, H, W, 3] -> logits [B, H, W, classes]` (B symbolic), one
    self-contained file (no `.onnx.data` beside it: it can be renamed, copied and quantised
    alone; ICNet and PSPNet50 are far below protobuf's 2 GB)."""
    import jax2onnx
    import onnx

    from icnet_jax.inference.onnx_pooling import fold_max_pool_padding
    from icnet_jax.inference.onnx_resize import resize_nodes

    with resize_nodes():
        model = jax2onnx.to_onnx(
            lambda images: apply_fn(variables, images),
            inputs=[("B", *size, 3)],
            input_names=["images"],
            output_names=["logits"],
            opset=opset,
            return_mode="proto",
        )
    fold_max_pool_padding(model)
    onnx.save_model(model, str(output), save_as_external_data=False)


Runner = Callable[[np.ndarray], np.ndarray]


def load_saved_model(path) -> Runner:
    """`images -> logits` of an exported SavedModel, loaded once."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda images: next(iter(serve(images=tf.constant(images)).values())).numpy()


def onnx_session(path):
    """An onnxruntime session of an exported ONNX model, on the CPU."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def load_onnx(path) -> Runner:
    """`images -> logits` of an exported ONNX model, one session for every call."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def max_relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max(1, max |reference|)."""
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(np.asarray(ours) - np.asarray(reference)).max()) / scale


def export(
    checkpoint,
    output,
    *,
    size: tuple[int, int] = (1025, 2049),
    formats: Sequence[str] = FORMATS,
    fold_bn: bool = True,
    check_batches: Sequence[int] = (1, 2),
    platforms: Sequence[str] = PLATFORMS,
    verbose: bool = True,
) -> dict[str, float]:
    """Exports `checkpoint` to `output/saved_model` (for `platforms`) and/or `output/icnet.onnx`,
    then runs each export here on random batches of every size in `check_batches` against JAX.

    Returns `{format: max relative error}`; raises AssertionError beyond `TOLERANCE`.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise errors.UserError(f"--formats: unknown {unknown}; choose from {', '.join(FORMATS)}")
    require([m for f in formats for m in NEEDS[f]], "the export")
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown:
        raise errors.UserError(
            f"--platforms: unknown {unknown}; choose from {', '.join(PLATFORMS)}"
        )
    existing_checkpoint(checkpoint)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    apply_fn, variables, _ = inference_function(checkpoint, fold_bn=fold_bn)
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, 50, (b, *size, 3)).astype(np.float32) for b in check_batches]
    references = [np.asarray(apply_fn(variables, images)) for images in batches]
    exporters: dict[
        str, tuple[Callable[..., Any], Callable[..., Any], str]
    ] = {  # format: (write, load, file name)
        "saved_model": (
            functools.partial(export_saved_model, platforms=platforms),
            load_saved_model,
            "saved_model",
        ),
        "onnx": (export_onnx, load_onnx, "icnet.onnx"),
    }
    max_errors = {}
    for fmt in formats:
        write, load, name = exporters[fmt]
        write(apply_fn, variables, size, output / name)
        run = load(output / name)
        max_errors[fmt] = max(
            max_relative_error(run(images), reference)
            for images, reference in zip(batches, references)
        )
        if verbose:
            _log.info(
                f"{output / name}: max |difference| / max |logit| = {max_errors[fmt]:.2e} "
                f"(batches {tuple(check_batches)})"
            )
        assert max_errors[fmt] <= TOLERANCE, (
            f"{fmt} differs from JAX by {max_errors[fmt]:.2e} > {TOLERANCE}"
        )
    return max_errors
