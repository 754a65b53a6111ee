"""Evaluating a checkpoint on a split, writing what `evaluate.py` documents: metrics.json
(through `eval_lib`, the path training's evaluation takes), per-class IoU and region-accuracy
plots, coloured predictions, and predictions in the benchmark server's format (`submission`)."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from icnet_jax import errors
from icnet_jax import state as state_lib
from icnet_jax.data import datasets, pipeline
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop as eval_lib
from icnet_jax.evaluation.regions import RegionAccuracy
from icnet_jax.evaluation.submission import SubmissionWriter
from icnet_jax.inference import load as inference
from icnet_jax.inference import visualize
from icnet_jax.inference.image_io import write_png


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
    submission_dir: str | pathlib.Path | None = None,
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
      submission_dir: where to write every image's prediction (`config.model.branch`) in the
        dataset's benchmark-server format (`submission.SubmissionWriter`); each host writes its
        own images.
      source, info: a random-access source and its `DatasetInfo`, instead of preparing
        `config.dataset` (tests, notebooks).
    Returns:
      The summary written to metrics.json, with `'region_accuracy'` and `'output_dir'` added.
    """
    if checkpoint is None and workdir is None:
        raise errors.UserError("give a checkpoint (--checkpoint) or a workdir (--workdir)")
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
        raise errors.UserError(
            "no split to evaluate: config.dataset.eval_split is empty; pass --split"
        )
    out = pathlib.Path(workdir if workdir is not None else loaded.workdir) / "eval" / split
    errors.check_writable(out, "evaluation output")
    if submission_dir is not None:
        errors.check_writable(submission_dir, "--submission_dir")
    if source is None:
        source, info = datasets.config_source(cfg, split)
    if info.num_classes != loaded.num_classes:
        raise errors.UserError(
            f"dataset {info.name!r} has {info.num_classes} classes but the checkpoint's classifier "
            f"{loaded.num_classes}: is --config the dataset the checkpoint was trained on?"
        )
    model = state_lib.inference_model(cfg, loaded.num_classes)
    branches = eval_lib.branch_names(model)
    scales = tuple(float(s) for s in scales)
    eval_size = tuple(cfg.input.eval_size) if cfg.input.eval_size else None
    step = eval_lib.make_step(
        model,
        loaded.num_classes,
        eval_size=eval_size,
        align_corners=cfg.model.align_corners,
        ignore_label=cfg.ignore_label,
        scales=scales,
        flip=flip,
    )
    kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
    examples = pipeline.eval_dataset(source, InputSpec.from_config(cfg), **kw)
    if main:
        tta = f", flip, scales {list(scales)}" if flip or scales != (1.0,) else ""
        print(f"evaluating {info.name} {split}: {len(source)} images{tta}; writing to {out}")

    region = RegionAccuracy(
        ignore_label=cfg.ignore_label, branches=branches, size_scale=region_size_scale
    )
    saved_branch = cfg.model.branch if cfg.model.branch in branches else branches[-1]
    saved: list[str] = []
    submission = SubmissionWriter(info.name, submission_dir) if submission_dir else None

    def on_prediction(example: Mapping[str, Any], predictions: dict[str, np.ndarray]) -> None:
        region.update(example["label"], predictions)
        if submission is not None:
            submission.write(example.get("file_name", "<unnamed>"), predictions[saved_branch])
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
    results = eval_lib.evaluate_examples(
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
    region = eval_lib.region_accuracy_over_hosts(region)
    summary = eval_lib.make_summary(
        loaded.step,
        split,
        results,
        checkpoint=str(loaded.path),
        flip=bool(flip),
        scales=list(scales),
        eval_size=list(eval_size) if eval_size else None,
        num_images=region.num_images,
        from_checkpoint={s.key: s.value for s in loaded.settings},
    )
    region_result = {"step": loaded.step, "split": split, **region.result()}
    # Cityscapes' test labels are withheld (all ignore): its metrics would be NaN, not written.
    labelled = any(r["num_pixels"] for r in results.values())
    if main and labelled:
        eval_lib.write_metrics(out, summary)
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
    if main:
        if not labelled:
            print(f"{split} has no labelled pixels (as Cityscapes' test split): no metrics")
        rate = region.num_images / max(seconds, 1e-9)
        print(f"{region.num_images} images in {seconds:.1f}s ({rate:.2f} images/s, compilation "
              f"included); outputs in {out}")  # fmt: skip
        if saved:
            print(f"{len(saved)} predictions ({saved_branch}) in {out / 'predictions'}")
    if submission is not None:
        print(
            f"{len(submission.written)} predictions ({saved_branch}, {submission.label_encoding}) "
            f"in {submission_dir}" + (": zip its contents to submit" * (info.name == "cityscapes"))
        )
    return {**summary, "region_accuracy": region_result, "output_dir": str(out)}
