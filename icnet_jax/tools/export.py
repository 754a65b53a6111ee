"""Export of a trained or converted ICNet to a TensorFlow SavedModel (jax2tf) and to ONNX
(jax2onnx), with a dynamic batch dimension; each export is checked against JAX (the library half,
what the exports hold and why: `icnet_jax.inference.export`).

    pip install -r requirements-export.txt && pip install --no-deps "jax2onnx>=0.17"
    python -m icnet_jax.tools.export --checkpoint=DIR --output=DIR2 [--size=1025,2049]
        [--formats=saved_model,onnx] [--fold_bn=true] [--platforms=cpu,cuda,tpu]

Writes `DIR2/saved_model` and/or `DIR2/icnet.onnx`: `float32 [batch, H, W, 3]` images, normalised
as the checkpoint's config says, to logits `[batch, H, W, classes]`; H and W fixed (`--size`),
the batch dynamic. `--formats=onnx` needs no TensorFlow.
"""

from __future__ import annotations

from icnet_jax import cli, errors
from icnet_jax.inference.export import FORMATS, PLATFORMS, export


def parse_size(text: str) -> tuple[int, int]:
    """`'H,W'` -> `(H, W)`; anything else is a `errors.UserError` naming `--size`."""
    try:
        height, width = (int(s) for s in text.split(","))
    except ValueError:
        raise errors.UserError(f"--size={text}: expected HEIGHT,WIDTH, e.g. 1025,2049") from None
    if height < 1 or width < 1:
        raise errors.UserError(f"--size={text}: sizes must be positive")
    return height, width


def main(argv):
    del argv
    cli.start_backend()
    size = parse_size(FLAGS.size)
    export(
        FLAGS.checkpoint,
        FLAGS.output,
        size=size,
        formats=tuple(FLAGS.formats.split(",")),
        fold_bn=FLAGS.fold_bn,
        platforms=tuple(FLAGS.platforms.split(",")),
    )


if __name__ == "__main__":
    from icnet_jax.cli import flags

    FLAGS = flags.FLAGS
    flags.DEFINE_string("checkpoint", None, "Checkpoint (workdir or step folder).", required=True)
    cli.define_output("output", None, "Output folder.", required=True)
    flags.DEFINE_string("size", "1025,2049", "Input height,width (fixed; the batch is dynamic).")
    flags.DEFINE_string("formats", ",".join(FORMATS), "saved_model and/or onnx.")
    flags.DEFINE_bool("fold_bn", True, "Fold BatchNorm into the convolutions.")
    flags.DEFINE_string("platforms", ",".join(PLATFORMS), "Where the SavedModel may run.")
    cli.run(main)
