"""Whole-image evaluation: confusion matrices per branch over a split, then the official metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from icnet_jax.metrics import confusion_matrix, segmentation_metrics
from icnet_jax.models.layers import resize_bilinear

Array = jax.Array


def predict_probabilities(
    model: nn.Module,
    variables: Any,
    images: Array,
    *,
    eval_size: Sequence[int] | None = None,
    align_corners: bool = True,
) -> dict[str, Array]:
    """Class probabilities `[N, H, W, C]` per branch at the images' own resolution.

    With `eval_size` the release's protocol: images resized to `eval_size` (align corners),
    softmax, probabilities resized back. `model` returns logits or a dict of branch logits.
    """
    h, w = images.shape[1:3]
    inputs = images if eval_size is None else resize_bilinear(images, eval_size, align_corners)
    logits = model.apply(variables, inputs)
    if not isinstance(logits, Mapping):
        logits = {"output": logits}
    probabilities = {}
    for name, value in logits.items():
        p = jax.nn.softmax(value.astype(jnp.float32), axis=-1)
        probabilities[name] = resize_bilinear(p, (h, w), align_corners)
    return probabilities


def make_eval_step(
    model: nn.Module, num_classes: int, *, eval_size=None, align_corners=True, ignore_label=255
) -> Callable[[Any, Array, Array], dict[str, Array]]:
    """A jitted `(variables, images [N,H,W,3], labels [N,H,W]) -> {branch: confusion [C, C]}`."""

    @jax.jit
    def step(variables, images, labels):
        probabilities = predict_probabilities(
            model, variables, images, eval_size=eval_size, align_corners=align_corners
        )
        return {
            name: confusion_matrix(labels, jnp.argmax(p, axis=-1), num_classes, ignore_label)
            for name, p in probabilities.items()
        }

    return step


def evaluate(
    eval_step: Callable[[Any, Array, Array], dict[str, Array]],
    variables: Any,
    examples: Iterable[Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    *,
    num_examples: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Runs `eval_step` over this host's examples and sums the confusions over all hosts.

    Args:
      examples: `{'image': float32 [H, W, 3], 'label': int [H, W]}` (one image at a time; images
        of one size share one compilation).
    Returns:
      branch -> `segmentation_metrics` plus the summed int64 `confusion`.
    """
    totals: dict[str, np.ndarray] = {}
    for example in tqdm(examples, total=num_examples, desc="evaluating", disable=not progress):
        confusions = eval_step(variables, example["image"][None], example["label"][None])
        for name, confusion in jax.device_get(confusions).items():
            totals[name] = totals.get(name, 0) + np.asarray(confusion, np.int64)
    if jax.process_count() > 1:
        # Hosts may hold different numbers of images; every host has every branch key.
        gathered = multihost_utils.process_allgather(totals)
        totals = jax.tree.map(functools.partial(np.sum, axis=0), gathered)
    return {
        name: {**segmentation_metrics(total, class_names), "confusion": total}
        for name, total in totals.items()
    }


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


def format_table(results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """Per-class IoU (%) with one column per branch, then mIoU and pixel accuracy."""
    branches = list(results)
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
