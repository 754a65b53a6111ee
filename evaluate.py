"""Evaluates a checkpoint on a split.

    python evaluate.py --config=configs/cityscapes.py --workdir=DIR

Evaluates the latest checkpoint in DIR (or `--checkpoint=PATH`: a workdir, its `checkpoints/`
folder or one step folder) on `config.dataset.eval_split` (`--split` to choose another), whole
images, every branch at once (sub4, sub24, sub124 for ICNet). The model and input settings saved
with the checkpoint (`config.model.*`, `config.input.mean/std/bgr/eval_size`,
`config.ignore_label`) win over the command line's, since they describe the weights; they are
printed. `--command_line_wins=input.eval_size` keeps the command line's value of such an entry.
The dataset comes from the command-line config.

Options: `--flip` averages the probabilities with those of the mirrored image,
`--scales=0.75,1,1.25` over several input scales (of `input.eval_size`, else of the image);
`--save_predictions=N` writes coloured predictions of this host's first N images.

Writes to `DIR/eval/<split>/` (DIR: `--workdir`, else the checkpoint's workdir):

- `metrics.json`: `{"step", "split", "branches": {branch: mIoU, pixel accuracy, per-class IoU,
  confusion, ...}, "checkpoint", "flip", "scales", "eval_size", "num_images", "from_checkpoint"}`
  (the schema training writes, plus the evaluation settings);
- `per_class_iou.png`; `region_accuracy.json` and `region_accuracy.png`: accuracy of ground-truth
  connected regions by size, per branch, and the differences between branches (paper Fig. 8);
- `predictions/<name>_{labels,color,overlay,gt}.png` with `--save_predictions`.

Several hosts: pass `--coordinator_address`, `--num_processes`, `--process_id` (or
`--distributed`); each host evaluates its share, the counts are summed, host 0 writes.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from icnet_jax import eval_lib, inference, train_lib, visualize
from icnet_jax.data import pipeline
from icnet_jax.image_io import write_png
from icnet_jax.region_analysis import RegionAccuracy

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command-line flags (defined by `__main__` only, so that tests can import this module
    beside predict.py, which defines flags of the same names)."""
    config_flags.DEFINE_config_file(
        "config", "configs/quickstart.py", "Config (dataset fields are used as given).",
        lock_config=True,
    )  # fmt: skip
    flags.DEFINE_string("workdir", None, "Workdir: its latest checkpoint, and where eval/ goes.")
    flags.DEFINE_string(
        "checkpoint", None, "A workdir, checkpoints dir or step dir (default: workdir)."
    )
    flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
    flags.DEFINE_bool("flip", False, "Average probabilities with the horizontally mirrored image.")
    flags.DEFINE_string(
        "scales", "1.0", "Comma-separated input scales whose probabilities average."
    )
    flags.DEFINE_integer("save_predictions", 0, "Save coloured predictions of the first N images.")
    flags.DEFINE_float(
        "region_size_scale", 1.0,
        "Region analysis: factor on region pixel counts before binning (4.0 for half-size labels).",
    )  # fmt: skip
    flags.DEFINE_list(
        "command_line_wins", [],
        "Config keys (e.g. input.eval_size, model) whose command-line value beats the "
        "checkpoint's.",
    )  # fmt: skip
    flags.DEFINE_integer("devices", 0, "Local devices to use (0: all; one on CPU).")
    flags.DEFINE_bool(
        "distributed", False, "Join a multi-host job that JAX can detect (SLURM, TPU)."
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-host job.")
    flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host job.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-host job.")


def prediction_stem(file_name: str, index: int) -> str:
    """A relative output name for an example: its file name without extension (sub-folders kept,
    `..` and absolute parts dropped), or `image_<index>` when it has none."""
    path = pathlib.PurePosixPath(str(file_name).replace("\\", "/"))
    parts = [p for p in path.with_suffix("").parts if p not in ("", ".", "..", "/")]
    if not parts or file_name == "<unnamed>":
        return f"image_{index:05d}"
    return "/".join(parts)


def evaluate(
    config: ml_collections.ConfigDict,
    checkpoint: str | pathlib.Path | None = None,
    *,
    workdir: str | pathlib.Path | None = None,
    split: str | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    save_predictions: int = 0,
    region_size_scale: float = 1.0,
    command_line_wins: Iterable[str] = (),
    devices: Sequence[jax.Device] | None = None,
    source: Any = None,
    info: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates a checkpoint and writes the outputs (see the module docstring).

    Args:
      config: the command-line config.
      checkpoint: a workdir, checkpoints dir or step dir (default: `workdir`).
      workdir: outputs go to `workdir/eval/<split>` (default: the checkpoint's workdir).
      source, info: a random-access source and its `DatasetInfo`, instead of preparing
        `config.dataset` (tests, notebooks).
    Returns:
      The summary written to metrics.json, with `'region_accuracy'` and `'output_dir'` added.
    """
    if checkpoint is None and workdir is None:
        raise ValueError("give a checkpoint (--checkpoint) or a workdir (--workdir)")
    main = jax.process_index() == 0
    loaded = inference.load_checkpoint(
        checkpoint if checkpoint is not None else workdir,
        config,
        command_line_wins=command_line_wins,
    )
    cfg = loaded.config
    if main:
        print(f"checkpoint {loaded.path} (step {loaded.step}, {loaded.num_classes} classes)")
        print(inference.describe_settings(loaded.settings))
    split = split or cfg.dataset.eval_split
    if not split:
        raise ValueError("no split to evaluate: config.dataset.eval_split is empty; pass --split")
    if source is None:
        source, info = inference.data_source(cfg, split)
    if info.num_classes != loaded.num_classes:
        raise ValueError(
            f"dataset {info.name!r} has {info.num_classes} classes but the checkpoint's classifier "
            f"{loaded.num_classes}: is --config the dataset the checkpoint was trained on?"
        )
    model = inference.inference_model(cfg, loaded.num_classes)
    branches = inference.branch_names(model)
    scales = tuple(float(s) for s in scales)
    eval_size = tuple(cfg.input.eval_size) if cfg.input.eval_size else None
    step = inference.make_step(
        model,
        loaded.num_classes,
        eval_size=eval_size,
        align_corners=cfg.model.align_corners,
        ignore_label=cfg.ignore_label,
        scales=scales,
        flip=flip,
    )
    kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
    examples = pipeline.eval_dataset(
        source, mean=cfg.input.mean, std=cfg.input.std, bgr=cfg.input.bgr, **kw
    )
    out = pathlib.Path(workdir if workdir is not None else loaded.workdir) / "eval" / split
    if main:
        tta = f", flip, scales {list(scales)}" if flip or scales != (1.0,) else ""
        print(f"evaluating {info.name} {split}: {len(source)} images{tta}; writing to {out}")

    region = RegionAccuracy(
        ignore_label=cfg.ignore_label, branches=branches, size_scale=region_size_scale
    )
    saved_branch = cfg.model.branch if cfg.model.branch in branches else branches[-1]
    saved: list[str] = []

    def on_prediction(example: Mapping[str, Any], predictions: dict[str, np.ndarray]) -> None:
        region.update(example["label"], predictions)
        if main and len(saved) < save_predictions:
            stem = prediction_stem(example.get("file_name", "<unnamed>"), region.num_images - 1)
            image = inference.denormalize(
                example["image"], cfg.input.mean, cfg.input.std, cfg.input.bgr
            )
            folder = out / "predictions"
            visualize.save_prediction(
                folder, stem, image, predictions[saved_branch], info.palette, cfg.ignore_label
            )
            gt = visualize.colorize(example["label"], info.palette, ignore_label=cfg.ignore_label)
            write_png(folder / f"{stem}_gt.png", gt)
            saved.append(stem)

    start = time.perf_counter()
    results = inference.evaluate_examples(
        step,
        loaded.variables,
        examples,
        info.class_names,
        branches,
        on_prediction=on_prediction,
        devices=devices,
        num_examples=pipeline.num_eval_examples(source, **kw),
        progress=progress and main,
    )
    seconds = time.perf_counter() - start
    region = inference.region_accuracy_over_hosts(region)
    summary = {
        "step": loaded.step,
        "split": split,
        "branches": eval_lib.metrics_summary(results),
        "checkpoint": str(loaded.path),
        "flip": bool(flip),
        "scales": list(scales),
        "eval_size": list(eval_size) if eval_size else None,
        "num_images": region.num_images,
        "from_checkpoint": {s.key: s.value for s in loaded.settings},
    }
    region_result = {"step": loaded.step, "split": split, **region.result()}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=1))
        (out / "region_accuracy.json").write_text(json.dumps(region_result, indent=1))
        visualize.plot_region_accuracy(
            region_result,
            out / "region_accuracy.png",
            bin_size=region.bin_size,
            title=f"Region accuracy difference between branches ({split}, step {loaded.step})",
        )
        visualize.plot_per_class_iou(
            {b: r["per_class"] for b, r in results.items()},
            out / "per_class_iou.png",
            title=f"Per-class IoU ({split}, step {loaded.step})",
        )
        print(
            f"\nstep {loaded.step}, {split}:\n" + eval_lib.format_table(results, info.class_names)
        )
        overall = region_result["overall_accuracy"]
        print(
            f"region accuracy over {region_result['num_regions']} regions: "
            + ", ".join(f"{b} {100 * v:.2f}" for b, v in overall.items() if v is not None)
        )
        rate = region.num_images / max(seconds, 1e-9)
        print(f"{region.num_images} images in {seconds:.1f}s ({rate:.2f} images/s, compilation "
              f"included); outputs in {out}")  # fmt: skip
        if saved:
            print(f"{len(saved)} predictions ({saved_branch}) in {out / 'predictions'}")
    return {**summary, "region_accuracy": region_result, "output_dir": str(out)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax's INFO lines drown the output
    train_lib.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    if not FLAGS.workdir and not FLAGS.checkpoint:
        raise app.UsageError("give --workdir (its latest checkpoint) or --checkpoint")
    devices = jax.local_devices()[: FLAGS.devices] if FLAGS.devices > 0 else None
    try:
        scales = inference.parse_scales(FLAGS.scales)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        evaluate(
            FLAGS.config,
            FLAGS.checkpoint,
            workdir=FLAGS.workdir,
            split=FLAGS.split,
            flip=FLAGS.flip,
            scales=scales,
            save_predictions=FLAGS.save_predictions,
            region_size_scale=FLAGS.region_size_scale,
            command_line_wins=FLAGS.command_line_wins,
            devices=devices,
        )
    except (FileNotFoundError, RuntimeError) as error:  # no checkpoint, or none readable
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
