"""Per-class pixel counts of a prepared split, counted once and stored beside the prepared data,
and the class weights made from them (SegNet's median frequency, ENet's 1 / ln(1.02 + p)).

    stats = load_or_count("camvid", "train", data_dir="data/tfds", manual_dir=...)
    weights = class_weights(stats, "median_frequency")  # float64 [C]

A class absent from the counted split gets weight 0: it never occurs as a label of that split, so
its weight multiplies nothing in training, and 0 (rather than SegNet's infinite median / 0) keeps
the vector finite; it is logged, since an absent class usually means a wrong split or label map.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from icnet_jax.data import datasets
from icnet_jax.errors import UserError

_log = logging.getLogger(__name__)

METHODS = ("median_frequency", "enet")
_FORMAT = 1  # bump when the stored counts change meaning


def count_pixels(source: Any, num_classes: int, ignore_label: int = 255) -> dict[str, Any]:
    """Counts labelled pixels per class over every example of `source`.

    Returns:
      `{'num_images', 'pixels': [C] pixels of each class, 'image_pixels': [C] labelled pixels of
      the images in which the class occurs}` (ints; `ignore_label` pixels are not counted).
    """
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for i in range(len(source)):
        label = np.asarray(source[i]["label"]).ravel()
        counts = np.bincount(label, minlength=256)
        counts[ignore_label] = 0
        if counts[num_classes:].any():
            bad = int(np.flatnonzero(counts[num_classes:])[0]) + num_classes
            raise ValueError(f"example {i}: label value {bad} is not a class id (< {num_classes})")
        counts = counts[:num_classes]
        pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
    return {
        "num_images": len(source),
        "pixels": pixels.tolist(),
        "image_pixels": image_pixels.tolist(),
    }


def load_or_count(
    name: str,
    split: str,
    *,
    data_dir: str | pathlib.Path,
    manual_dir: str | pathlib.Path | None = None,
    ignore_label: int = 255,
    **builder_kwargs: Any,
) -> dict[str, Any]:
    """The class counts of `split`, from `class_counts-<split>.json` in the prepared dataset's
    folder (`<data_dir>/icnet_<name>/<config>/<version>`), counted and stored on first use.

    Returns:
      `count_pixels`' dict plus `dataset`, `split` and `class_names`.
    """
    builder = datasets.get_builder(name, data_dir=data_dir, manual_dir=manual_dir, **builder_kwargs)
    path = pathlib.Path(builder.data_dir) / f"class_counts-{_file_part(split)}.json"
    if path.exists():
        stats = json.loads(path.read_text())
        if stats.get("format") == _FORMAT and stats.get("split") == split:
            return stats
    source, info = datasets.get_data_source(
        name, split, data_dir=data_dir, manual_dir=manual_dir, **builder_kwargs
    )
    _log.info("counting the pixels of each class of %s %s (once)", name, split)
    stats = {
        "format": _FORMAT,
        "dataset": name,
        "split": split,
        "class_names": list(info.class_names),
        **count_pixels(source, len(info.class_names), ignore_label),
    }
    # Written whole then renamed: another host or a killed run never sees half a file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stats, indent=1))
    tmp.replace(path)
    return stats


def _file_part(split: str) -> str:
    return re.sub(r"[^\w.+-]", "_", split)


def median_frequency_weights(pixels: Sequence[int], image_pixels: Sequence[int]) -> np.ndarray:
    """SegNet: `w_c = median(f) / f_c`, `f_c = pixels of c / pixels of the images containing c`;
    the median over the classes present; 0 for absent classes."""
    counts = np.asarray(pixels, np.float64)
    present = counts > 0
    freq = counts[present] / np.asarray(image_pixels, np.float64)[present]
    weights = np.zeros_like(counts)
    weights[present] = np.median(freq) / freq
    return weights


def enet_weights(pixels: Sequence[int], c: float = 1.02) -> np.ndarray:
    """ENet: `w_c = 1 / ln(c + p_c)`, `p_c` the fraction of labelled pixels of class c; 0 for
    absent classes."""
    counts = np.asarray(pixels, np.float64)
    weights = 1.0 / np.log(c + counts / counts.sum())
    return np.where(counts > 0, weights, 0.0)


def class_weights(stats: dict[str, Any], method: str) -> np.ndarray:
    """`[C]` float64 weights of `method` ('median_frequency' or 'enet') from `load_or_count`."""
    absent = [n for n, p in zip(stats["class_names"], stats["pixels"]) if p == 0]
    if absent:
        _log.warning("%s %s has no pixel of %s: weight 0", stats["dataset"], stats["split"], absent)
    if method == "median_frequency":
        return median_frequency_weights(stats["pixels"], stats["image_pixels"])
    if method == "enet":
        return enet_weights(stats["pixels"])
    raise UserError(
        f"config.loss.class_weights={method!r}: use '' (none), one of {', '.join(METHODS)}, "
        "or a list with one weight per class"
    )


def weights_from_config(config: Any, num_classes: int | None = None) -> np.ndarray | None:
    """`config.loss.class_weights` as a `[C]` vector: None for '', SegNet's or ENet's weights
    from the pixel counts of the training split (counted once, stored with the prepared data),
    or an explicit comma-separated list such as '1,1,4,1,2,2,5,5,1,5,8', whose length must be
    `num_classes` when given."""
    spec = config.loss.class_weights
    if isinstance(spec, str) and not spec.strip():
        return None
    if isinstance(spec, str) and spec.strip() in METHODS:
        d = config.dataset
        stats = load_or_count(
            d.name,
            d.train_split,
            data_dir=str(pathlib.Path(d.data_dir).expanduser()),
            manual_dir=d.manual_dir or None,
            ignore_label=config.ignore_label,
            **d.builder_kwargs.to_dict(),
        )
        return class_weights(stats, spec.strip())
    items = spec.strip("()[] ").split(",") if isinstance(spec, str) else list(spec)
    try:
        weights = np.asarray([float(w) for w in items], np.float64)
    except ValueError:
        weights = np.asarray([np.nan])
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and np.any(weights > 0)):
        raise UserError(
            f"config.loss.class_weights={spec!r}: use '' (none), "
            f"{' or '.join(map(repr, METHODS))}, or one non-negative weight per "
            "class separated by commas"
        )
    if num_classes is not None and len(weights) != num_classes:
        raise UserError(
            f"config.loss.class_weights has {len(weights)} weights for {num_classes} classes: "
            "give one per class, in the dataset's class order"
        )
    return weights
