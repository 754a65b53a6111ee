"""Evaluating a checkpoint on a split, writing what `evaluate.py` documents: metrics.json
(through `eval_lib`, the path training's evaluation takes), per-class IoU and region-accuracy
plots, coloured predictions, and predictions in the benchmark server's format (`submission`).
The optional outputs are writers (`writers`, `submission`) the one evaluation loop hands every
prediction to."""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from icnet_jax import errors
from icnet_jax import state as state_lib
from icnet_jax.data import datasets, pipeline
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop as eval_lib
from icnet_jax.evaluation.submission import SubmissionWriter
from icnet_jax.evaluation.writers import PictureWriter, RegionWriter
from icnet_jax.inference import load as inference
from icnet_jax.inference import visualize


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and what to write besides metrics.json (`evaluate.py`'s flags).

    Attributes:
      checkpoint: a workdir, checkpoints dir or step dir (default: `workdir`).
      workdir: outputs go to `workdir/eval/<split>` (default: the checkpoint's workdir).
      split: default `config.dataset.eval_split`.
      flip, scales: test-time augmentation (`multiscale.average_probabilities`).
      save_predictions: pictures of the first N predictions (host 0).
      submission_dir: where to write every image's prediction (`config.model.branch`) in the
        dataset's benchmark-server format (`submission.SubmissionWriter`); each host writes its
        own images.
      region_size_scale: factor on region pixel counts before binning (`RegionAccuracy`).
      command_line_wins: config keys whose command-line value beats the checkpoint's.
      devices: local devices to spread the images over (default `eval_lib.default_devices()`).
      progress: a progress bar on host 0.
    """

    checkpoint: str | pathlib.Path | None = None
    workdir: str | pathlib.Path | None = None
    split: str | None = None
    flip: bool = False
    scales: Sequence[float] = (1.0,)
    save_predictions: int = 0
    submission_dir: str | pathlib.Path | None = None
    region_size_scale: float = 1.0
    command_line_wins: Sequence[str] = ()
    devices: Sequence[jax.Device] | None = None
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class _Target:
    """The loaded checkpoint, the split and the output folder, checked before any work."""

    loaded: inference.LoadedCheckpoint
    split: str
    out: pathlib.Path

    @property
    def title(self) -> str:
        return f"{self.split}, step {self.loaded.step}"


def evaluate(
    config: ml_collections.ConfigDict,
    options: EvalOptions,
    *,
    source: Any = None,
    info: Any = None,
) -> dict[str, Any]:
    """Evaluates a checkpoint and writes the outputs (see the module docstring).

    Args:
      config: the command-line config.
      source, info: a random-access source and its `DatasetInfo`, instead of preparing
        `config.dataset` (tests, notebooks).
    Returns:
      The summary written to metrics.json, with `'region_accuracy'` and `'output_dir'` added.
    """
    target = _open(config, options)
    cfg, split = target.loaded.config, target.split
    if source is None:
        source, info = datasets.config_source(cfg, split)
    _check_classes(info, target.loaded)
    spec = InputSpec.from_config(cfg)
    step, branches = _make_step(target.loaded, spec, options)
    kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
    examples = pipeline.eval_dataset(source, spec, **kw)
    if jax.process_index() == 0:
        print(f"evaluating {info.name} {split}: {len(source)} images{_tta(options)}; writing to "
              f"{target.out}")  # fmt: skip
    regions = RegionWriter(
        branches,
        ignore_label=spec.ignore_label,
        size_scale=options.region_size_scale,
        step=target.loaded.step,
        split=split,
    )
    saved_branch = cfg.model.branch if cfg.model.branch in branches else branches[-1]
    pictures, submission = _optional_writers(options, target, info, spec, saved_branch)
    start = time.perf_counter()
    results = eval_lib.evaluate_examples(
        step,
        target.loaded.variables,
        examples,
        info.class_names,
        branches,
        writers=[w for w in (regions, submission, pictures) if w is not None],
        devices=options.devices,
        num_examples=pipeline.num_eval_examples(source, **kw),
        progress=options.progress and jax.process_index() == 0,
    )
    seconds = time.perf_counter() - start
    region_result = regions.close()
    summary = _summary(target, options, spec, results, regions.num_images)
    _report(target, results, summary, regions, info.class_names, seconds)
    for writer in (pictures, submission):  # pictures: host 0 only; a submission: every host
        line = writer.close() if writer is not None else None
        if line:
            print(line)
    return {**summary, "region_accuracy": region_result, "output_dir": str(target.out)}


def _make_step(loaded: inference.LoadedCheckpoint, spec: InputSpec, options: EvalOptions):
    """The jitted evaluation step of the checkpoint's model, and its branch names."""
    cfg = loaded.config
    model = state_lib.inference_model(cfg, loaded.num_classes)
    step = eval_lib.make_step(
        model,
        loaded.num_classes,
        eval_size=spec.eval_size,
        align_corners=cfg.model.align_corners,
        ignore_label=spec.ignore_label,
        scales=tuple(float(s) for s in options.scales),
        flip=options.flip,
    )
    return step, eval_lib.branch_names(model)


def _tta(options: EvalOptions) -> str:
    scales = tuple(float(s) for s in options.scales)
    return f", flip, scales {list(scales)}" if options.flip or scales != (1.0,) else ""


def _open(config: ml_collections.ConfigDict, options: EvalOptions) -> _Target:
    """Loads the checkpoint and checks the split and the output folders (nothing written)."""
    checkpoint, workdir = options.checkpoint, options.workdir
    if checkpoint is None and workdir is None:
        raise errors.UserError("give a checkpoint (--checkpoint) or a workdir (--workdir)")
    loaded = inference.load_checkpoint(
        checkpoint if checkpoint is not None else workdir,
        config,
        command_line_wins=options.command_line_wins,
    )
    if jax.process_index() == 0:
        print(f"checkpoint {loaded.path} (step {loaded.step}, {loaded.num_classes} classes)")
        print(inference.describe_settings(loaded.settings))
    split = options.split or loaded.config.dataset.eval_split
    if not split:
        raise errors.UserError(
            "no split to evaluate: config.dataset.eval_split is empty; pass --split"
        )
    out = pathlib.Path(workdir if workdir is not None else loaded.workdir) / "eval" / split
    errors.check_writable(out, "evaluation output")
    if options.submission_dir is not None:
        errors.check_writable(options.submission_dir, "--submission_dir")
    return _Target(loaded, split, out)


def _check_classes(info: Any, loaded: inference.LoadedCheckpoint) -> None:
    if info.num_classes != loaded.num_classes:
        raise errors.UserError(
            f"dataset {info.name!r} has {info.num_classes} classes but the checkpoint's classifier "
            f"{loaded.num_classes}: is --config the dataset the checkpoint was trained on?"
        )


def _optional_writers(
    options: EvalOptions, target: _Target, info: Any, spec: InputSpec, branch: str
) -> tuple[PictureWriter | None, SubmissionWriter | None]:
    """The pictures (host 0, `--save_predictions`) and the submission (`--submission_dir`)."""
    pictures = None
    if jax.process_index() == 0 and options.save_predictions > 0:
        folder = target.out / "predictions"
        pictures = PictureWriter(
            folder, options.save_predictions, branch=branch, spec=spec, palette=info.palette
        )
    submission = None
    if options.submission_dir:
        submission = SubmissionWriter(info.name, options.submission_dir, branch=branch)
    return pictures, submission


def _summary(
    target: _Target,
    options: EvalOptions,
    spec: InputSpec,
    results: dict[str, dict[str, Any]],
    num_images: int,
) -> dict[str, Any]:
    """metrics.json's content: the metrics and the evaluation settings."""
    loaded = target.loaded
    return eval_lib.make_summary(
        loaded.step,
        target.split,
        results,
        checkpoint=str(loaded.path),
        flip=bool(options.flip),
        scales=[float(s) for s in options.scales],
        eval_size=list(spec.eval_size) if spec.eval_size else None,
        num_images=num_images,
        from_checkpoint={s.key: s.value for s in loaded.settings},
    )


def _report(
    target: _Target,
    results: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    regions: RegionWriter,
    class_names: Sequence[str],
    seconds: float,
) -> None:
    """Host 0 writes metrics.json and the plots and prints the table (labelled splits only)."""
    if jax.process_index() != 0:
        return
    out = target.out
    # Cityscapes' test labels are withheld (all ignore): its metrics would be NaN, not written.
    labelled = any(r["num_pixels"] for r in results.values())
    if labelled:
        eval_lib.write_metrics(out, summary)
        region_line = regions.write(out)
        visualize.plot_per_class_iou(
            {b: r["per_class"] for b, r in results.items()},
            out / "per_class_iou.png",
            title=f"Per-class IoU ({target.title})",
        )
        print(f"\nstep {target.loaded.step}, {target.split}:\n"
              + eval_lib.format_table(results, class_names))  # fmt: skip
        print(region_line)
    else:
        print(f"{target.split} has no labelled pixels (as Cityscapes' test split): no metrics")
    rate = regions.num_images / max(seconds, 1e-9)
    print(f"{regions.num_images} images in {seconds:.1f}s ({rate:.2f} images/s, compilation "
          f"included); outputs in {out}")  # fmt: skip
