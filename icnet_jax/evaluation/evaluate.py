"""Evaluating a checkpoint on a split, writing what `evaluate.py` documents: metrics.json
(through `Evaluator`, what training's evaluation runs), per-class IoU and region-accuracy
plots, coloured predictions, and predictions in the benchmark server's format (`submission`).
The optional outputs are writers (`writers`, `submission`) the one evaluation loop hands every
prediction to.

The run's own evaluation (`<workdir>/eval/<split>`) is written only with the run's settings;
with a change that changes the numbers (`_changes_results`) or a test-time option the outputs
go beside it, to `<workdir>/eval/<split>_<what differs>`, so that the run's files are never
overwritten."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from icnet_jax import errors
from icnet_jax.data import datasets
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop
from icnet_jax.evaluation.evaluator import Evaluator
from icnet_jax.evaluation.submission import SubmissionWriter
from icnet_jax.evaluation.writers import PictureWriter, RegionWriter
from icnet_jax.inference import onnx_backend, saved_run, visualize

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and what to write besides metrics.json (`evaluate.py`'s flags).

    Attributes:
      checkpoint: a workdir, checkpoints dir or step dir (default: `workdir`).
      workdir: outputs go to `workdir/eval/<split>` (default: the checkpoint's workdir).
      split: default `config.dataset.eval_split`.
      flip, scales: test-time augmentation (`test_time.average_probabilities`).
      save_predictions: pictures of the first N predictions (host 0).
      submission_dir: where to write every image's prediction (`config.model.branch`) in the
        dataset's benchmark-server format (`submission.SubmissionWriter`); each host writes its
        own images.
      region_size_scale: factor on region pixel counts before binning (`RegionAccuracy`).
      command_line_wins: config keys whose command-line value beats the checkpoint's (used when
        `evaluate` is given a bare ConfigDict; a `saved_run.CommandLine` carries its own).
      devices: local devices to spread the images over (default `loop.default_devices()`).
      progress: a progress bar on host 0.
      backend: what runs the network: JAX (every branch), or onnxruntime in float32 or int8
        (`config.model.branch` only: the export holds one); auto as `Backend.resolve`.
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
    backend: onnx_backend.Backend = onnx_backend.JAX


@dataclasses.dataclass(frozen=True)
class _Target:
    """The loaded checkpoint, the split and the output folder, checked before any work."""

    loaded: saved_run.LoadedCheckpoint
    split: str
    out: pathlib.Path
    backend: onnx_backend.Backend

    @property
    def title(self) -> str:
        return f"{self.split}, step {self.loaded.step}"


def evaluate(
    config: ml_collections.ConfigDict | saved_run.CommandLine | None,
    options: EvalOptions,
    *,
    source: Any = None,
    info: Any = None,
) -> dict[str, Any]:
    """Evaluates a checkpoint and writes the outputs (see the module docstring).

    Args:
      config: the command line (`saved_run.CommandLine`), or a config file's ConfigDict; None: the
        run's own config.
      source, info: a random-access source and its `DatasetInfo`, instead of preparing
        `config.dataset` (tests, notebooks).
    Returns:
      The summary written to metrics.json, with `'region_accuracy'` and `'output_dir'` added.
    """
    target = _open(config, options, check_split=source is None)
    cfg, split, backend = target.loaded.config, target.split, target.backend
    network, variables = None, target.loaded.variables
    if backend.name == "onnxruntime":
        network, variables = onnx_backend.OnnxModel(target.loaded, cfg.model.branch, backend), {}
    evaluator = Evaluator(
        cfg,
        target.loaded.num_classes,
        split,
        scales=options.scales,
        flip=options.flip,
        source=source,
        info=info,
        network=network,
    )
    info = evaluator.info
    _check_classes(info, target.loaded)
    spec = evaluator.spec
    if jax.process_index() == 0:
        _log.info(f"evaluating {info.name} {split}: {evaluator.num_images} images{_tta(options)}; "
                  f"writing to {target.out}")  # fmt: skip
    regions = RegionWriter(
        evaluator.branches,
        ignore_label=spec.ignore_label,
        size_scale=options.region_size_scale,
        step=target.loaded.step,
        split=split,
    )
    branches = evaluator.branches
    saved_branch = cfg.model.branch if cfg.model.branch in branches else branches[-1]
    pictures, submission = _optional_writers(options, target, info, spec, saved_branch)
    start = time.perf_counter()
    results = evaluator(
        variables,
        writers=[w for w in (regions, submission, pictures) if w is not None],
        devices=options.devices,
        progress=options.progress,
    )
    seconds = time.perf_counter() - start
    region_result = regions.close()
    summary = _summary(target, evaluator, results)
    _report(target, results, summary, regions, info.class_names, seconds)
    for writer in (pictures, submission):  # pictures: host 0 only; a submission: every host
        line = writer.close() if writer is not None else None
        if line:
            _log.info(line)
    return {**summary, "region_accuracy": region_result, "output_dir": str(target.out)}


def _tta(options: EvalOptions) -> str:
    scales = tuple(float(s) for s in options.scales)
    return f", flip, scales {list(scales)}" if options.flip or scales != (1.0,) else ""


def _open(
    config: ml_collections.ConfigDict | saved_run.CommandLine | None,
    options: EvalOptions,
    *,
    check_split: bool = True,
) -> _Target:
    """Checks the split (from the run's saved config, before any array is read or any data
    prepared), loads the checkpoint and checks the output folders (nothing written)."""
    checkpoint, workdir = options.checkpoint, options.workdir
    if checkpoint is None and workdir is None:
        raise errors.UserError("give a checkpoint (--checkpoint) or a workdir (--workdir)")
    backend, why = options.backend.resolve()
    backend.check()
    if not isinstance(config, saved_run.CommandLine):
        config = saved_run.CommandLine(config, config is not None, wins=options.command_line_wins)

    def check(cfg: ml_collections.ConfigDict) -> None:
        split = _split(cfg, options)
        if check_split:
            check_split_name(cfg, split)

    run = checkpoint if checkpoint is not None else workdir
    assert run is not None  # checked above
    loaded = saved_run.load_checkpoint(run, config, before_restore=check)
    if jax.process_index() == 0:
        _log.info(loaded.header())
        _log.info(f"backend: {backend.describe()} ({why})")
    split = _split(loaded.config, options)
    folder = split + _difference(loaded.changes, options, backend)
    out = pathlib.Path(workdir if workdir is not None else loaded.workdir) / "eval" / folder
    errors.check_writable(out, "evaluation output")
    if options.submission_dir is not None:
        errors.check_writable(options.submission_dir, "--submission_dir")
    return _Target(loaded, split, out, backend)


def _split(cfg: ml_collections.ConfigDict, options: EvalOptions) -> str:
    split = options.split or cfg.dataset.eval_split
    if not split:
        raise errors.UserError(
            "no split to evaluate: config.dataset.eval_split is empty; pass --split"
        )
    return split


# The splits of the built-in datasets whose splits are fixed (the user's own dataset's are the
# folders of `images/`).
KNOWN_SPLITS = {
    "cityscapes": ("train", "val", "test", "trainval"),
    "camvid": ("train", "val", "test", "trainval"),
    "coco_stuff": ("train", "val", "test", "trainval"),
    "street": ("train", "val", "trainval"),
}


def check_split_name(cfg: ml_collections.ConfigDict, split: str) -> None:
    """A `errors.UserError` naming `--split` when the dataset cannot have `split` (a name that
    its builder does not know, or a folder the user's dataset lacks); nothing is read or
    prepared. `split[prefix,...]` filters and `a+b` unions are checked part by part."""
    name = cfg.dataset.name
    parts = split.split("[", 1)[0].split("+")
    if name == "custom" and cfg.dataset.get("manual_dir"):
        images = pathlib.Path(cfg.dataset.manual_dir) / "images"
        if images.is_dir():
            known = tuple(sorted(p.name for p in images.iterdir() if p.is_dir()))
            known += ("trainval",) if {"train", "val"} <= set(known) else ()
            where = f"the folders of {images}"
        else:
            return  # preparing names the missing folder
    elif name in KNOWN_SPLITS:
        known, where = KNOWN_SPLITS[name], f"dataset {name!r}"
    else:
        return
    missing = [p for p in parts if p not in known]
    if missing:
        raise datasets.MissingSplitError(
            f"--split={split}: {where} has no split {missing[0]!r}; one of {', '.join(known)}"
        )


# Where the data lies, not what it is: moved files give the run's own evaluation.
WHERE_KEYS = ("dataset.manual_dir", "dataset.data_dir")
# Besides the dataset's, the settings that change an evaluation's numbers (the weights' own
# cannot change; crops, augmentation and schedules do not enter an evaluation).
EVALUATION_KEYS = ("input.eval_size", "ignore_label", "model.dtype")


def _changes_results(key: str) -> bool:
    if key.startswith("dataset."):
        return key not in WHERE_KEYS
    return key in EVALUATION_KEYS


def _difference(
    changes: Sequence[saved_run.Change], options: EvalOptions, backend: onnx_backend.Backend
) -> str:
    """'' for the run's own settings, else '_<what differs>' (e.g. '_flip_num_val-40',
    '_onnxruntime-int8'): the folder suffix of an evaluation that must not overwrite the run's
    own (made with JAX)."""
    parts = [
        f"{c.key.rsplit('.', 1)[-1]}-{_text(c.now)}" for c in changes if _changes_results(c.key)
    ]
    if backend.name != "jax":
        parts.append(backend.describe().replace(" ", "-"))
    if options.flip:
        parts.append("flip")
    scales = tuple(float(s) for s in options.scales)
    if scales != (1.0,):
        parts.append("scales-" + "-".join(f"{s:g}" for s in scales))
    if not parts:
        return ""
    text = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts)).strip("_")
    if len(text) > 60:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        text = f"{text[:50]}_{digest}"
    return "_" + text


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "_".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    if isinstance(value, tuple | list):
        return "x".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_classes(info: Any, loaded: saved_run.LoadedCheckpoint) -> None:
    if info.num_classes != loaded.num_classes:
        raise errors.UserError(
            f"dataset {info.name!r} has {info.num_classes} classes but the checkpoint's classifier "
            f"{loaded.num_classes}: evaluate on the run's own dataset (leave out the --config "
            "dataset changes listed above)"
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
    target: _Target, evaluator: Evaluator, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """metrics.json's content: the metrics, the dataset, the number of images, the protocol and
    the settings that differ from the run's."""
    loaded = target.loaded
    protocol = evaluator.protocol()
    return loop.make_summary(
        loaded.step,
        target.split,
        results,
        **protocol,
        checkpoint=str(loaded.path),
        backend=target.backend.describe(),
        flip=evaluator.flip,
        scales=list(evaluator.scales),
        eval_size=protocol["protocol"]["eval_size"],
        from_checkpoint={s.key: s.value for s in loaded.settings},
        changed_from_run={c.key: {"run": c.run, "now": c.now} for c in loaded.changes},
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
        loop.write_metrics(out, summary)
        region_line = regions.write(out)
        visualize.plot_per_class_iou(
            {b: r["per_class"] for b, r in results.items()},
            out / "per_class_iou.png",
            title=f"Per-class IoU ({target.title})",
        )
        _log.info(f"\nstep {target.loaded.step}, {target.split}:\n"
                  + loop.format_table(results, class_names))  # fmt: skip
        _log.info(region_line)
    else:
        _log.info(f"{target.split} has no labelled pixels (as Cityscapes' test split): no metrics")
    rate = regions.num_images / max(seconds, 1e-9)
    _log.info(f"{regions.num_images} images in {seconds:.1f}s ({rate:.2f} images/s, compilation "
              f"included); outputs in {out}")  # fmt: skip
