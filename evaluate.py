"""Evaluates a checkpoint on a split.

    python evaluate.py --config=configs/cityscapes.py --workdir=DIR

Evaluates the latest checkpoint in DIR (or `--checkpoint=PATH`: a workdir, its `checkpoints/`
folder or one step folder) on `config.dataset.eval_split` (`--split` to choose another), whole
images, every branch at once (sub124, sub24, sub4 for ICNet). The model and input settings saved
with the checkpoint (`config.model.*`, `config.input.mean/std/bgr/eval_size`,
`config.ignore_label`) win over the command line's, since they describe the weights; they are
printed. `--command_line_wins=input.eval_size` keeps the command line's value of such an entry.
The dataset comes from the command-line config.

Options: `--flip` averages the probabilities with those of the mirrored image,
`--scales=0.75,1,1.25` over several input scales (of `input.eval_size`, else of the image);
`--save_predictions=N` writes coloured predictions of this host's first N images;
`--submission_dir=DIR` writes every image's prediction in the benchmark server's format
(Cityscapes: labelIds PNGs `<city>_<seq>_<frame>_leftImg8bit.png`; see
icnet_jax/evaluation/submission.py).
A split without labelled pixels (Cityscapes' test split) gets predictions and no metrics:

    python evaluate.py --config=configs/cityscapes.py:trainval90k --workdir=DIR --split=test \
      --submission_dir=DIR/submission && (cd DIR/submission && zip -q ../submission.zip *.png)

Writes to `DIR/eval/<split>/` (DIR: `--workdir`, else the checkpoint's workdir):

- `metrics.json`: `{"step", "split", "branches": {branch: mIoU, pixel accuracy, per-class IoU,
  confusion, ...}, "checkpoint", "flip", "scales", "eval_size", "num_images", "from_checkpoint"}`
  (written by the same code as training's evaluation, plus the evaluation settings);
- `per_class_iou.png`; `region_accuracy.json` and `region_accuracy.png`: accuracy of ground-truth
  connected regions by size, per branch, and the differences between branches (paper Fig. 8);
- `predictions/<name>_{labels,color,overlay,gt}.png` with `--save_predictions`.

Several hosts: pass `--coordinator_address`, `--num_processes`, `--process_id` (or
`--distributed`); each host evaluates its share, the counts are summed, host 0 writes.

Exit status: 0 evaluated; 2 bad input (flags, config, no or no readable checkpoint, a dataset of
another number of classes, an output folder that cannot be written), nothing written; 130
interrupted (Ctrl-C or SIGTERM).
"""

import jax
from absl import flags

from icnet_jax import cli, config_checks, errors
from icnet_jax.evaluation import evaluate as evaluation
from icnet_jax.inference import multiscale as test_time

FLAGS = flags.FLAGS
cli.define_config("configs/quickstart.py", "Config (dataset fields are used as given).")
cli.define_output("workdir", None, "Workdir: its latest checkpoint, and where eval/ goes.")
flags.DEFINE_string(
    "checkpoint", None, "A workdir, checkpoints dir or step dir (default: workdir)."
)
flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
flags.DEFINE_bool("flip", False, "Average probabilities with the horizontally mirrored image.")
flags.DEFINE_string("scales", "1.0", "Comma-separated input scales whose probabilities average.")
flags.DEFINE_integer("save_predictions", 0, "Save coloured predictions of the first N images.")
cli.define_output(
    "submission_dir", None, "Write every prediction in the benchmark server's format here."
)
flags.DEFINE_float(
    "region_size_scale", 1.0,
    "Region analysis: factor on region pixel counts before binning (4.0 for half-size labels).",
)  # fmt: skip
flags.DEFINE_list(
    "command_line_wins", [],
    "Config keys (e.g. input.eval_size, model) whose command-line value beats the checkpoint's.",
)  # fmt: skip
flags.DEFINE_integer("devices", 0, "Local devices to use (0: all; one on CPU).")
cli.define_multihost_flags()


def main(argv):
    if len(argv) > 1:
        raise errors.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    config_checks.check(FLAGS.config)
    if not FLAGS.workdir and not FLAGS.checkpoint:
        raise errors.UserError("give --workdir (its latest checkpoint) or --checkpoint")
    try:
        scales = test_time.parse_scales(FLAGS.scales)
    except ValueError as error:
        raise errors.UserError(f"--scales={FLAGS.scales}: {error}") from None
    cli.join_multihost()
    options = evaluation.EvalOptions(
        checkpoint=FLAGS.checkpoint,
        workdir=FLAGS.workdir,
        split=FLAGS.split,
        flip=FLAGS.flip,
        scales=scales,
        save_predictions=FLAGS.save_predictions,
        submission_dir=FLAGS.submission_dir,
        region_size_scale=FLAGS.region_size_scale,
        command_line_wins=tuple(FLAGS.command_line_wins),
        devices=jax.local_devices()[: FLAGS.devices] if FLAGS.devices > 0 else None,
    )
    evaluation.evaluate(FLAGS.config, options)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
