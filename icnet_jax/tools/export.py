"""Export of a trained or converted ICNet to a TensorFlow SavedModel (jax2tf) and to ONNX
(tf2onnx), with a dynamic batch dimension; each export is checked against JAX.

    pip install -r requirements-export.txt   # optional extras: tensorflow, tf2onnx, onnxruntime
    python -m icnet_jax.tools.export --checkpoint=DIR --output=DIR2 [--size=1025,2049]
        [--formats=saved_model,onnx] [--fold_bn=true]

The exported function takes images already normalised as the checkpoint's config says (for the
released weights: BGR, minus the mean, no scaling) `float32 [batch, H, W, 3]` and returns logits
`[batch, H, W, classes]` of the inference branch (sub124). H and W are fixed at export (ICNet's
align-corners resizing and pyramid-pooling windows are computed from the static sizes, which is
also what makes the export exact, where generic ONNX resizes trip over align corners); the batch
is dynamic. `fold_bn` exports the inference form with BatchNorm folded into the convolutions.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

TOLERANCE = 1e-4  # relative to the largest |logit|


def inference_function(checkpoint, *, fold_bn: bool = True):
    """`(apply(variables, images), variables, config_dict)` of a checkpoint's ICNet / PSPNet."""
    import ml_collections

    from icnet_jax import train_lib
    from icnet_jax.finetune import restore_checkpoint
    from icnet_jax.models import fold_batchnorm

    state, config_dict, num_classes, _ = restore_checkpoint(checkpoint)
    config = ml_collections.ConfigDict(config_dict)
    model = train_lib.create_model(config, num_classes, fold_bn=fold_bn)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if fold_bn:
        variables = fold_batchnorm(variables)
    return model.apply, _to_numpy(variables), config_dict


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def to_tf_module(apply_fn, variables, size: tuple[int, int]):
    """A `tf.Module` whose `serve(images)` runs `apply_fn(variables, images)`; batch dynamic."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    h, w = size
    tf_variables = tf.nest.map_structure(tf.Variable, variables)
    converted = jax2tf.convert(
        apply_fn, polymorphic_shapes=[None, f"(b, {h}, {w}, 3)"], with_gradient=False
    )
    module = tf.Module()
    module.variables_ = tf_variables
    module.serve = tf.function(
        lambda images: converted(tf_variables, images),
        input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="images")],
        autograph=False,
    )
    return module


def export_saved_model(apply_fn, variables, size, output: str | pathlib.Path):
    import tensorflow as tf

    module = to_tf_module(apply_fn, variables, size)
    tf.saved_model.save(module, str(output), signatures={"serving_default": module.serve})
    return module


def export_onnx(module, size, output: str | pathlib.Path, *, opset: int = 17):
    import tensorflow as tf
    import tf2onnx

    h, w = size
    spec = (tf.TensorSpec([None, h, w, 3], tf.float32, name="images"),)
    tf2onnx.convert.from_function(
        module.serve, input_signature=spec, opset=opset, output_path=str(output)
    )


def max_relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(np.asarray(ours) - np.asarray(reference)).max()) / scale


def check_saved_model(path, apply_fn, variables, images: np.ndarray) -> float:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    ours = loaded.signatures["serving_default"](images=tf.constant(images))
    ours = next(iter(ours.values())).numpy()
    return max_relative_error(ours, np.asarray(apply_fn(variables, images)))


def check_onnx(path, apply_fn, variables, images: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ours = session.run(None, {name: images})[0]
    return max_relative_error(ours, np.asarray(apply_fn(variables, images)))


def export(
    checkpoint,
    output,
    *,
    size=(1025, 2049),
    formats=("saved_model", "onnx"),
    fold_bn: bool = True,
    check_batches=(1, 2),
    verbose: bool = True,
) -> dict[str, float]:
    """Exports and checks each format on random batches of `check_batches` sizes.

    Returns `{format: max relative error}`; raises AssertionError beyond `TOLERANCE`.
    """
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    apply_fn, variables, _ = inference_function(checkpoint, fold_bn=fold_bn)
    rng = np.random.default_rng(0)
    module = to_tf_module(apply_fn, variables, size)
    errors = {}
    if "saved_model" in formats:
        import tensorflow as tf

        tf.saved_model.save(
            module, str(output / "saved_model"), signatures={"serving_default": module.serve}
        )
        errors["saved_model"] = max(
            check_saved_model(
                output / "saved_model",
                apply_fn,
                variables,
                rng.normal(0, 50, (b, *size, 3)).astype(np.float32),
            )
            for b in check_batches
        )
    if "onnx" in formats:
        export_onnx(module, size, output / "icnet.onnx")
        errors["onnx"] = max(
            check_onnx(
                output / "icnet.onnx",
                apply_fn,
                variables,
                rng.normal(0, 50, (b, *size, 3)).astype(np.float32),
            )
            for b in check_batches
        )
    for fmt, error in errors.items():
        if verbose:
            print(f"{fmt}: max |difference| / max |logit| = {error:.2e} (batches {check_batches})")
        assert error <= TOLERANCE, f"{fmt} differs from JAX by {error:.2e} > {TOLERANCE}"
    return errors


def main(argv):
    del argv
    size = tuple(int(s) for s in FLAGS.size.split(","))
    export(
        FLAGS.checkpoint,
        FLAGS.output,
        size=size,
        formats=tuple(FLAGS.formats.split(",")),
        fold_bn=FLAGS.fold_bn,
    )


if __name__ == "__main__":
    from absl import app, flags

    FLAGS = flags.FLAGS
    flags.DEFINE_string("checkpoint", None, "Checkpoint (workdir or step folder).", required=True)
    flags.DEFINE_string("output", None, "Output folder.", required=True)
    flags.DEFINE_string("size", "1025,2049", "Input height,width (fixed; the batch is dynamic).")
    flags.DEFINE_string("formats", "saved_model,onnx", "saved_model and/or onnx.")
    flags.DEFINE_bool("fold_bn", True, "Fold BatchNorm into the convolutions.")
    app.run(main)
