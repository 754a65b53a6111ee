"""The one evaluation path (training's periodic evaluation and `evaluate.py`): the jitted step
giving confusion matrices and class-id maps per branch, the loop over a split (several local
devices, several hosts), the official metrics, the printed table and `metrics.json`."""

from __future__ import annotations

import collections
import functools
import json
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from icnet_jax.evaluation.metrics import confusion_matrix, segmentation_metrics
from icnet_jax.evaluation.regions import RegionAccuracy
from icnet_jax.inference.onnx_backend import OnnxModel
from icnet_jax.inference.test_time import predict_labels
from icnet_jax.models.icnet import ALL_BRANCHES, BRANCHES

# The order of branch columns everywhere (tables, metrics.json): the network's output first.
BRANCH_ORDER = tuple(reversed(BRANCHES))

Array = jax.Array


def metrics_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """JSON-friendly metrics (IoU arrays and confusions as lists, NaN as None)."""

    def clean(value):
        if isinstance(value, np.ndarray):
            return [clean(v) for v in value.tolist()]
        if isinstance(value, float) and np.isnan(value):
            return None
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {
        branch: {key: clean(value) for key, value in metrics.items()}
        for branch, metrics in results.items()
    }


def ordered(branches) -> list[str]:
    """Branch names in `BRANCH_ORDER` (others, e.g. PSPNet's 'output', after, as given)."""
    names = list(branches)
    return [b for b in BRANCH_ORDER if b in names] + [b for b in names if b not in BRANCH_ORDER]


def make_summary(step: int, split: str, results: Mapping[str, Mapping[str, Any]], **extra):
    """`metrics.json`'s content: `{"step", "split", "branches": {branch: metrics}, **extra}`."""
    branches = metrics_summary({b: results[b] for b in ordered(results)})
    return {"step": int(step), "split": split, "branches": branches, **extra}


def write_metrics(out: str | pathlib.Path, summary: Mapping[str, Any]) -> pathlib.Path:
    """Writes `out/metrics.json` (the only writer of that file); returns its path."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return out / "metrics.json"


def format_table(results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """Per-class IoU (%) with one column per branch, then mIoU and pixel accuracy."""
    branches = ordered(results)
    width = max(12, *(len(n) for n in class_names))
    lines = [f"{'class':<{width}} " + " ".join(f"{b:>8}" for b in branches)]
    for i, name in enumerate(class_names):
        cells = []
        for b in branches:
            iou = results[b]["iou"][i]
            cells.append(f"{'absent':>8}" if np.isnan(iou) else f"{100 * iou:8.2f}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    for key, label in (("miou", "mIoU"), ("pixel_accuracy", "pixel acc")):
        lines.append(
            f"{label:<{width}} " + " ".join(f"{100 * results[b][key]:8.2f}" for b in branches)
        )
    return "\n".join(lines)


def branch_names(model: nn.Module | OnnxModel) -> tuple[str, ...]:
    """Keys of the dicts of `predict_labels` for `model`."""
    if isinstance(model, OnnxModel):
        return (model.output_name,)
    if getattr(model, "branch", None) == ALL_BRANCHES:
        return BRANCHES
    return ("output",)


def make_step(
    model: nn.Module | OnnxModel,
    num_classes: int,
    *,
    eval_size: Sequence[int] | None = None,
    align_corners: bool = True,
    ignore_label: int = 255,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Callable[[Any, Array, Array], tuple[dict[str, Array], dict[str, Array]]]:
    """A jitted `(variables, images [N,H,W,3], labels [N,H,W]) -> (confusions, predictions)`.

    `confusions`: `{branch: int32 [C, C]}` (`metrics.confusion_matrix`); `predictions`:
    `{branch: [N, H, W]}` argmax class ids (uint8 up to 256 classes, else int32).
    """
    tta = dict(eval_size=eval_size, align_corners=align_corners, scales=tuple(scales), flip=flip)

    @jax.jit
    def step(variables, images, labels):
        predictions = predict_labels(model, variables, images, num_classes, **tta)
        confusions = {
            k: confusion_matrix(labels, p, num_classes, ignore_label)
            for k, p in predictions.items()
        }
        return confusions, predictions

    return step


def default_devices() -> list[jax.Device]:
    """This host's devices to spread evaluation over; one on CPU (simulated CPU devices share
    the same cores, and each would compile its own copy of the step)."""
    devices = jax.local_devices()
    return devices[:1] if devices[0].platform == "cpu" else devices


def sum_over_hosts(tree: Any) -> Any:
    """Sums numpy trees of identical structure over all processes (identity on one process)."""
    if jax.process_count() == 1:
        return tree
    gathered = multihost_utils.process_allgather(tree)
    return jax.tree.map(functools.partial(np.sum, axis=0), gathered)


class PredictionWriter(Protocol):
    """What the loop hands each prediction to (region analysis, pictures, a submission)."""

    def add(self, example: Mapping[str, Any], predictions: Mapping[str, np.ndarray]) -> None:
        """Takes one example and its `{branch: [H, W] class ids}`, in order, on this host."""


def evaluate_examples(
    step: Callable[[Any, Array, Array], tuple[dict[str, Array], dict[str, Array]]],
    variables: Any,
    examples: Iterable[Mapping[str, Any]],
    class_names: Sequence[str],
    branches: Sequence[str],
    *,
    writers: Sequence[PredictionWriter] = (),
    devices: Sequence[jax.Device] | None = None,
    num_examples: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Runs `step` (from `make_step`) over this host's examples; confusions summed over hosts.

    Examples go round-robin to `devices` (default `default_devices()`), each with its own copy of
    the variables, one image at a time, so images of any size mix freely (one compilation per
    size and device); while a device computes, the host handles earlier results.

    Args:
      examples: `{'image': float32 [H, W, 3], 'label': int [H, W], ...}` (`pipeline.eval_dataset`).
      branches: the step's branch names; every host reports each (zeros where it had no example).
      writers: each gets every example of this host and its predictions, in order (`add`);
        their creator closes them.
    Returns:
      `{branch: segmentation_metrics + 'confusion' (int64, summed over all hosts)}`.
    """
    devices = list(devices or default_devices())
    replicas = [jax.device_put(variables, d) for d in devices]
    num_classes = len(class_names)
    totals = {b: np.zeros((num_classes, num_classes), np.int64) for b in branches}
    in_flight: collections.deque = collections.deque()

    def finish():
        example, (confusions, predictions) = in_flight.popleft()
        confusions, predictions = jax.device_get((confusions, predictions))
        for name, confusion in confusions.items():
            if name not in totals:
                raise ValueError(f"the step gave branch {name!r}, not among {list(branches)}")
            totals[name] += np.asarray(confusion, np.int64)
        if writers:
            images = {k: np.asarray(v)[0] for k, v in predictions.items()}
            for writer in writers:
                writer.add(example, images)

    bar = tqdm(examples, total=num_examples, desc="evaluating", disable=not progress)
    for i, example in enumerate(bar):
        d = i % len(devices)
        image = jax.device_put(np.asarray(example["image"])[None], devices[d])
        label = jax.device_put(np.asarray(example["label"])[None], devices[d])
        in_flight.append((example, step(replicas[d], image, label)))
        if len(in_flight) > len(devices):
            finish()
    while in_flight:
        finish()
    bar.close()
    totals = sum_over_hosts(totals)
    return {
        name: {**segmentation_metrics(total, class_names), "confusion": total}
        for name, total in totals.items()
    }


def region_accuracy_over_hosts(accumulator: RegionAccuracy) -> RegionAccuracy:
    """A `RegionAccuracy` with the totals of every host's accumulator (created with the same
    settings and explicit `branches`, so that hosts without examples agree on the structure)."""
    if jax.process_count() == 1:
        return accumulator
    totals = sum_over_hosts(
        {
            "sums": accumulator.sums,
            "counts": accumulator.counts,
            "num_images": np.int64(accumulator.num_images),
            "too_large": np.int64(accumulator.num_regions_too_large),
        }
    )
    accumulator.sums = {b: np.asarray(v) for b, v in totals["sums"].items()}
    accumulator.counts = np.asarray(totals["counts"])
    accumulator.num_images = int(totals["num_images"])
    accumulator.num_regions_too_large = int(totals["too_large"])
    return accumulator
