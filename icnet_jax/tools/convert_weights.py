"""Converts the authors' released ICNet weights into a training checkpoint of this package.

    python -m icnet_jax.tools.convert_weights --input=FILE --output=DIR [--num_classes=N] \
        [--config=configs/cityscapes.py]

writes `DIR/checkpoints/0/{state,data,config}`: a full `TrainState` at step 0 (params and BatchNorm
statistics from the release, a fresh optimizer state), so that `--checkpoint=DIR` works for
evaluation and prediction and `config.init_checkpoint=DIR` for fine-tuning. The saved config
records the release's preprocessing: BGR, minus the ImageNet mean, no scaling, evaluation at
1025x2049, align-corners resizing, width 0.5.

Accepted inputs (tensor names as in `reference/icnet_cityscapes_released_tensors.tsv`):
- `.npy`: a pickled dict (`np.load(allow_pickle=True).item()`), nested `{layer: {param: array}}`
  or flat `{'layer/param': array}`, either
  - BN folded (the release's inference definition): `layer/weights` `[kh, kw, in, out]` and
    `layer/biases` for every convolution; loaded exactly into the unfolded model as kernel =
    weights, BN scale 1, offset = biases, mean 0, variance 1 - eps (so that var + eps = 1);
  - or BN kept: `layer/weights` for the convolutions and `layer_bn/{scale, offset, mean,
    variance}` (also `gamma, beta, moving_mean, moving_variance`) for their BatchNorms; the
    classifier `conv6_cls` has weights and biases.
- a TensorFlow checkpoint (`model.ckpt-N.index` + `.data-*`, or its prefix, or a folder holding
  one) with the same names, read by the minimal bundle reader below, without TensorFlow.

Every tensor must be used: missing, extra or mis-shaped tensors are all listed in the error. The
classifier must have the number of classes of `--num_classes` (default: that of
`config.dataset.name`, 19 for Cityscapes). Each of these failures is a `WeightsError`, a
`errors.UserError`: the command prints it as one `error:` line.
Training bookkeeping of TF checkpoints (global_step, optimizer slots) is ignored and reported.
The training-only heads `conv6_sub4` and `conv6_sub2` are not in the release: they are initialised
randomly (and the tool says so).
"""

from __future__ import annotations

from icnet_jax import cli, config_checks
from icnet_jax.weights.release import convert


def main(argv):
    del argv
    cli.start_backend()
    config_checks.check(FLAGS.config)
    convert(
        FLAGS.input,
        FLAGS.output,
        FLAGS.config,
        num_classes=FLAGS.num_classes or None,
        seed=FLAGS.seed,
    )


if __name__ == "__main__":
    from icnet_jax import default
    from icnet_jax.cli import flags

    FLAGS = flags.FLAGS
    flags.DEFINE_string(
        "input", None, "Released weights: .npy dict or TF checkpoint.", required=True
    )
    cli.define_output("output", None, "Output directory (DIR/checkpoints/0).", required=True)
    flags.DEFINE_integer(
        "num_classes", 0, "Classes of the classifier (0: those of --config.dataset.name)."
    )
    flags.DEFINE_integer("seed", 0, "Seed of the random initialisation of the training-only heads.")
    cli.define_config(
        default.__file__,
        "Base config (default: the package's, Cityscapes).",
        lock_config=False,
    )
    cli.run(main)
