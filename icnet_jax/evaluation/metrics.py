"""Confusion matrix and the official segmentation metrics (mIoU, per-class IoU, pixel accuracy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def confusion_matrix(
    labels: Array, predictions: Array, num_classes: int, ignore_label: int = 255
) -> Array:
    """Counts of (ground truth, prediction) pairs: int32 `[num_classes, num_classes]`.

    Rows are ground truth, columns predictions. Pixels labelled `ignore_label` (or any value outside
    `[0, num_classes)`) are not counted. Jit-able; sum the result across devices with `psum` and
    across batches on the host in int64 (a split of 1024x2048 images overflows int32).

    Args:
      labels, predictions: integer maps of the same shape, e.g. `[N, H, W]`.
    """
    labels = labels.reshape(-1).astype(jnp.int32)
    predictions = predictions.reshape(-1).astype(jnp.int32)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    index = jnp.where(valid, labels * num_classes + predictions, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def segmentation_metrics(
    confusion: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The official metrics from a confusion matrix summed over a whole split.

    IoU_c = TP / (TP + FP + FN) from integer counts; mIoU is the mean over classes present in the
    ground truth or the predictions; a class absent from both has no IoU (NaN), is left out of the
    mean, and is listed under `absent_classes`. Pixel accuracy is over labelled pixels.

    Returns:
      `{'miou', 'pixel_accuracy', 'mean_accuracy', 'iou' (per class, NaN if absent),
        'per_class' ({name: iou or None}), 'absent_classes', 'num_pixels'}`; fractions in [0, 1].
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    true_positive = np.diag(confusion)
    ground_truth = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    union = ground_truth + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        recall = np.where(ground_truth > 0, true_positive / ground_truth, np.nan)
    total = int(confusion.sum())
    present = union > 0
    return {
        "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_accuracy": float(np.nanmean(recall)) if (ground_truth > 0).any() else float("nan"),
        "iou": iou,
        "per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "absent_classes": [n for n, p in zip(names, present) if not p],
        "num_pixels": total,
    }
