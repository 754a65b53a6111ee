"""Evaluates a checkpoint on a split.

    python evaluate.py --workdir=DIR

Evaluates the latest checkpoint in DIR (or `--checkpoint=PATH`: a workdir, its `checkpoints/`
folder or one step folder) on the run's `config.dataset.eval_split` (`--split` to choose
another), whole images, every branch at once (sub124, sub24, sub4 for ICNet). The run's config
saved with the checkpoint (its dataset and builder settings, input and evaluation protocol,
model, classes) is the evaluation's: no `--config` is needed. `--config=FILE` and
`--config.KEY=VALUE` only change it, each change printed as `key: run=A, now=B` and recorded in
metrics.json; the settings that describe the weights (`config.model.*` switches,
`config.input.mean/std/bgr`, ...) stay the run's, and one given with `--config.KEY=VALUE` or
`--command_line_wins` is refused. `--command_line_wins=input.eval_size` takes a `--config`
file's value of an evaluation setting the run recorded. The split is checked before the
checkpoint is read or the dataset prepared.

Options: `--flip` averages the probabilities with those of the mirrored image,
`--scales=0.75,1,1.25` over several input scales (of `input.eval_size`, else of the image);
`--save_predictions=N` writes coloured predictions of this host's first N images;
`--submission_dir=DIR` writes every image's prediction in the benchmark server's format
(Cityscapes: labelIds PNGs `<city>_<seq>_<frame>_leftImg8bit.png`; see
icnet_jax/evaluation/submission.py).
A split without labelled pixels (Cityscapes' test split) gets predictions and no metrics:

    python evaluate.py --config=configs/cityscapes.py:trainval90k --workdir=DIR --split=test \
      --submission_dir=DIR/submission && (cd DIR/submission && zip -q ../submission.zip *.png)

`--backend=onnxruntime` (or `auto`: onnxruntime on a CPU with the extras of
requirements-export.txt) evaluates the run's ONNX export, as `predict.py` runs it (cached under
`<workdir>/export/`), `--dtype=int8` its int8 quantisation (`--calibration_images` training
images): the export holds one output, `config.model.branch` (sub124), so only that branch is
evaluated. The default, JAX, evaluates every branch.

Writes to `DIR/eval/<split>/` (DIR: `--workdir`, else the checkpoint's workdir) with the run's
settings; with a change to the dataset (not to where its files lie), `input.eval_size`,
`ignore_label` or `model.dtype`, a test-time option or another backend, to
`DIR/eval/<split>_<what differs>/` (e.g. `val_flip`, `val_num_val-40`, `val_onnxruntime-int8`),
so that the run's own evaluation is never overwritten:

- `metrics.json`: `{"step", "split", "branches": {branch: mIoU, pixel accuracy, per-class IoU,
  confusion, ...}, "dataset": {name, builder_kwargs, manual_dir}, "num_images", "protocol":
  {eval_size, flip, scales, ignore_label}, "backend", "checkpoint", "from_checkpoint",
  "changed_from_run"}`
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
from icnet_jax.evaluation import evaluate
from icnet_jax.inference import saved_run, test_time

FLAGS = flags.FLAGS
cli.define_config("configs/quickstart.py", "Optional: changes to the run's saved config.")
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
cli.define_backend_flags("jax")
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
    options = evaluate.EvalOptions(
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
        backend=cli.backend_from_flags(),
    )
    given, overrides = cli.config_given()
    command_line = saved_run.CommandLine(
        FLAGS.config, given, overrides, tuple(FLAGS.command_line_wins)
    )
    evaluate.evaluate(command_line, options)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
