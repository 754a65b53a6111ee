"""Accuracy of connected regions by region size (ICNet paper, Sec. 5.2 and Fig. 8).

The paper: "For each connected region R_i (of the ground truth) we count its pixels S_i and the
pixels correctly predicted s_i; region accuracy p_i = s_i / S_i. Regions are projected onto a
histogram by size with interval K = 3,000 and 30 bins (sizes 1 to 90K); each bin averages the p_i
of its regions; regions larger than 90K are ignored." It compares the branches' outputs
(sub4 vs. sub24, sub24 vs. sub124) to show that the finer branches help small regions most.

Choices made here:

* **Regions** are the connected components of each class's mask in the ground truth, computed
  class by class with **8-connectivity** (pixels touching diagonally belong to the same region,
  the default of MATLAB's ``bwconncomp`` used by the PSPNet/ICNet evaluation code); pass
  ``connectivity=4`` for edge-only adjacency. Two blobs of the same class that do not touch are
  two regions. Pixels labelled ``ignore_label`` belong to no region.
* **Bins**: bin ``i`` (0-based) holds sizes in ``(i * K, (i + 1) * K]``; with K = 3,000 and 30
  bins, sizes 1..3,000 go to bin 0 and 87,001..90,000 to bin 29; larger regions are ignored
  (counted in ``num_regions_too_large``).
* **Resolution**: sizes are counted at the resolution of the label map given. The paper used
  Cityscapes' full 1024x2048 labels; to evaluate on downsampled labels yet keep the paper's bins,
  pass ``size_scale`` (e.g. 4.0 for labels at half the height and width): each region's pixel
  count is multiplied by it before binning.
* **Differences** are taken between consecutive branches, finer minus coarser: with the ICNet
  branch names the order is ``sub4, sub24, sub124``, giving ``'sub24-sub4'`` and
  ``'sub124-sub24'``; other names keep the order of the first ``update`` (or ``branches``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from icnet_jax.models.icnet import BRANCHES

# ICNet's branches from coarsest to finest; differences are finer minus coarser.
ICNET_BRANCH_ORDER: tuple[str, ...] = BRANCHES


def connected_regions(
    label: np.ndarray, ignore_label: int | None = 255, connectivity: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class connected components of a ground-truth label map.

    Args:
      label: integer ``[H, W]`` label map (non-negative).
      ignore_label: value that forms no region (None: every value forms regions).
      connectivity: 8 (diagonal neighbours connect) or 4.

    Returns:
      ``(region_ids, classes, sizes)``: int32 ``[H, W]`` with 0 outside any region and ``1..N``
      for the regions; int64 ``[N]`` class of region ``j + 1``; int64 ``[N]`` its pixel count.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be integer, got {label.dtype}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    region_ids = np.zeros(label.shape, dtype=np.int32)
    classes: list[np.ndarray] = []
    if label.size == 0:
        return region_ids, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if label.min() < 0:
        raise ValueError(f"label has negative values (min {label.min()})")
    present = np.flatnonzero(np.bincount(label.ravel()))
    # Components numbered 1..n within each class are summed into one map (the class masks are
    # disjoint), then shifted by a per-class offset through a lookup table on the labels.
    offsets = np.zeros(int(present[-1]) + 1, dtype=np.int32)
    offset = 0
    for value in present:
        if ignore_label is not None and value == ignore_label:
            continue
        mask = label == value
        count, components = cv2.connectedComponents(
            mask.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
        )
        n = count - 1  # component 0 is the background
        region_ids += components
        offsets[value] = offset
        classes.append(np.full(n, value, dtype=np.int64))
        offset += n
    if offset:
        region_ids += offsets[label]  # ignored pixels: component 0 + offset 0
    sizes = np.bincount(region_ids.ravel(), minlength=offset + 1)[1:].astype(np.int64)
    region_classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    return region_ids, region_classes, sizes


def region_accuracy(
    label: np.ndarray,
    prediction: np.ndarray,
    ignore_label: int | None = 255,
    connectivity: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy ``p_i = s_i / S_i`` of every ground-truth region of one image.

    Returns:
      ``(classes, sizes, accuracies)``, each ``[N]``: class, pixel count ``S_i``, and fraction of
      its pixels predicted as its class.
    """
    region_ids, classes, sizes = connected_regions(label, ignore_label, connectivity)
    prediction = _check_prediction(prediction, np.shape(label), "prediction")
    return classes, sizes, _accuracies(region_ids, sizes, np.asarray(label), prediction)


def _check_prediction(prediction: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    prediction = np.asarray(prediction)
    if prediction.shape != tuple(shape):
        raise ValueError(
            f"prediction {name!r} has shape {prediction.shape}, label has {tuple(shape)} "
            "(resize predictions to the label resolution first)"
        )
    return prediction


def _accuracies(
    region_ids: np.ndarray, sizes: np.ndarray, label: np.ndarray, prediction: np.ndarray
) -> np.ndarray:
    correct = np.bincount(region_ids[prediction == label], minlength=len(sizes) + 1)[1:]
    return correct[: len(sizes)] / np.maximum(sizes, 1)


class RegionAccuracy:
    """Accumulates per-bin region accuracy of several branches over a whole split.

    Keeps only per-bin sums of ``p_i`` (per branch) and per-bin region counts, so memory does not
    grow with the split. Every ``update`` must give the same branches (the counts are shared).

    Example::

        acc = RegionAccuracy()
        for label, outputs in split:
            acc.update(label, {"sub4": p4, "sub24": p24, "sub124": p124})
        json.dump(acc.result(), f)

    Args:
      bin_size: K, the bin width in pixels (3,000 in the paper).
      num_bins: number of bins (30); regions above ``bin_size * num_bins`` are ignored.
      connectivity: 8 or 4 (see the module docstring).
      ignore_label: ground-truth value that forms no region.
      branches: branch order for the differences; by default ICNet's order when the names are
        ICNet's, else the order of the first ``update``.
      size_scale: factor applied to region pixel counts before binning (see module docstring).
    """

    def __init__(
        self,
        bin_size: int = 3000,
        num_bins: int = 30,
        connectivity: int = 8,
        ignore_label: int | None = 255,
        branches: Sequence[str] | None = None,
        size_scale: float = 1.0,
    ) -> None:
        if bin_size <= 0 or num_bins <= 0:
            raise ValueError(f"bin_size and num_bins must be positive: {bin_size}, {num_bins}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        if not size_scale > 0:
            raise ValueError(f"size_scale must be positive, got {size_scale}")
        self.bin_size = int(bin_size)
        self.num_bins = int(num_bins)
        self.connectivity = connectivity
        self.ignore_label = ignore_label
        self.size_scale = float(size_scale)
        self.branches: list[str] | None = list(branches) if branches is not None else None
        self.sums: dict[str, np.ndarray] = {}
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.num_images = 0
        self.num_regions_too_large = 0
        if self.branches is not None:
            self._init_branches(self.branches)

    def _init_branches(self, branches: Sequence[str]) -> None:
        if len(set(branches)) != len(branches) or not branches:
            raise ValueError(f"branches must be distinct and non-empty, got {list(branches)}")
        self.branches = list(branches)
        self.sums = {b: np.zeros(self.num_bins, dtype=np.float64) for b in self.branches}

    def bin_index(self, sizes: np.ndarray) -> np.ndarray:
        """Bin of each region size (after ``size_scale``); ``-1`` for sizes above the last bin."""
        sizes = np.asarray(sizes)
        if self.size_scale == 1.0 and np.issubdtype(sizes.dtype, np.integer):
            bins = (sizes.astype(np.int64) - 1) // self.bin_size
        else:
            bins = np.ceil(sizes * self.size_scale / self.bin_size).astype(np.int64) - 1
        return np.where((bins >= 0) & (bins < self.num_bins), bins, -1)

    def update(self, label: np.ndarray, predictions: Mapping[str, np.ndarray]) -> None:
        """Adds one image: ground truth ``[H, W]`` and ``{branch: predicted ids [H, W]}``.

        Predictions must be at the label's resolution (upsample the branch outputs first).
        """
        if not predictions:
            raise ValueError("predictions is empty")
        if self.branches is None:
            names = list(predictions)
            if set(names) <= set(ICNET_BRANCH_ORDER):
                names = [b for b in ICNET_BRANCH_ORDER if b in predictions]
            self._init_branches(names)
        elif set(predictions) != set(self.branches):
            raise ValueError(
                f"predictions have branches {sorted(predictions)}, expected {sorted(self.branches)}"
            )
        label = np.asarray(label)
        assert self.branches is not None  # set above
        checked = {b: _check_prediction(predictions[b], label.shape, b) for b in self.branches}
        region_ids, _, sizes = connected_regions(label, self.ignore_label, self.connectivity)
        bins = self.bin_index(sizes)
        kept = bins >= 0
        self.num_regions_too_large += int(np.count_nonzero(~kept & (sizes > 0)))
        self.counts += np.bincount(bins[kept], minlength=self.num_bins)
        for branch, prediction in checked.items():
            accuracies = _accuracies(region_ids, sizes, label, prediction)
            self.sums[branch] += np.bincount(
                bins[kept], weights=accuracies[kept], minlength=self.num_bins
            )
        self.num_images += 1

    def merge(self, other: RegionAccuracy) -> None:
        """Adds another accumulator's totals (e.g. from another process) to this one."""
        same = (self.bin_size, self.num_bins, self.connectivity, self.ignore_label, self.size_scale)
        theirs = (other.bin_size, other.num_bins, other.connectivity, other.ignore_label,
                  other.size_scale)  # fmt: skip
        if same != theirs:
            raise ValueError(f"cannot merge accumulators with settings {same} and {theirs}")
        if other.branches is None:
            return
        if self.branches is None:
            self._init_branches(other.branches)
        elif set(other.branches) != set(self.branches):
            raise ValueError(f"branches differ: {self.branches} vs {other.branches}")
        for branch in other.branches:
            self.sums[branch] += other.sums[branch]
        self.counts += other.counts
        self.num_images += other.num_images
        self.num_regions_too_large += other.num_regions_too_large

    def mean_accuracy(self) -> dict[str, np.ndarray]:
        """``{branch: float [num_bins]}`` mean region accuracy per bin; NaN for empty bins."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                b: np.where(self.counts > 0, s / np.maximum(self.counts, 1), np.nan)
                for b, s in self.sums.items()
            }

    def result(self) -> dict[str, Any]:
        """JSON-serialisable summary (plain lists; ``None`` for empty bins).

        Keys: ``bin_size``, ``num_bins``, ``bin_edges`` (``num_bins + 1`` ints; bin ``i`` holds
        sizes in ``(edges[i], edges[i+1]]``), ``connectivity``, ``size_scale``, ``branches``,
        ``num_images``, ``region_counts`` (per bin), ``num_regions``,
        ``num_regions_too_large``, ``mean_accuracy`` (``{branch: per-bin}``),
        ``overall_accuracy`` (``{branch: mean p_i over all binned regions}``), ``differences``
        (``{'finer-coarser': per-bin}``) and ``difference_pairs`` (``[[finer, coarser], ...]``).
        """
        branches = list(self.branches or [])
        means = self.mean_accuracy()
        total = int(self.counts.sum())

        def listed(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values.tolist()]

        pairs = [[branches[i + 1], branches[i]] for i in range(len(branches) - 1)]
        return {
            "bin_size": self.bin_size,
            "num_bins": self.num_bins,
            "bin_edges": [self.bin_size * i for i in range(self.num_bins + 1)],
            "connectivity": self.connectivity,
            "size_scale": self.size_scale,
            "branches": branches,
            "num_images": self.num_images,
            "region_counts": self.counts.tolist(),
            "num_regions": total,
            "num_regions_too_large": self.num_regions_too_large,
            "mean_accuracy": {b: listed(means[b]) for b in branches},
            "overall_accuracy": {
                b: (float(self.sums[b].sum() / total) if total else None) for b in branches
            },
            "differences": {f"{a}-{b}": listed(means[a] - means[b]) for a, b in pairs},
            "difference_pairs": pairs,
        }
