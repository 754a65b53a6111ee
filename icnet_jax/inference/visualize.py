"""Colour maps, overlays, prediction files and evaluation plots.

Plots use matplotlib with the non-interactive Agg backend; matplotlib is imported only by the
plotting functions, so the rest of this module works without it.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from icnet_jax.inference.image_io import write_png

PathLike = str | os.PathLike


def colorize(
    labels: np.ndarray,
    palette: np.ndarray,
    ignore_label: int | None = 255,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Colours a label map: uint8 ``[H, W, 3]`` with ``palette[c]`` at pixels of class ``c``.

    Args:
      labels: integer ``[H, W]`` class ids in ``[0, K)``, or ``ignore_label``.
      palette: uint8 ``[K, 3]`` RGB colour per class (``DatasetInfo.palette``).
      ignore_label: value drawn in ``ignore_color`` (``None``: no such value). It wins over the
        palette if it happens to be ``< K``.
      ignore_color: RGB colour of ignored pixels.

    Raises:
      ValueError: a label is negative or ``>= K`` and not ``ignore_label``.
    """
    labels = np.asarray(labels)
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [K, 3], got {palette.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    num_classes = palette.shape[0]
    size = num_classes if ignore_label is None else max(num_classes, int(ignore_label) + 1)
    if labels.dtype == np.uint8 and labels.ndim == 2 and size <= 256:
        # uint8 maps (the predictions of up to 256 classes) through OpenCV's table lookup: a
        # quarter of numpy's indexing time, what a video's colouring stage pays per frame.
        table = np.zeros((256, 3), np.uint8)
        valid = np.zeros(256, np.uint8)
    else:
        table = np.zeros((size, 3), dtype=np.uint8)
        valid = None
    table[:num_classes] = palette.astype(np.uint8)
    if ignore_label is not None:
        table[int(ignore_label)] = np.asarray(ignore_color, dtype=np.uint8)
    if valid is None:
        ok = (labels >= 0) & (labels < num_classes)
        if ignore_label is not None:
            ok |= labels == ignore_label
    else:
        valid[:num_classes] = 1
        if ignore_label is not None:
            valid[int(ignore_label)] = 1
        ok = cv2.LUT(labels, valid).view(bool)
    if not ok.all():
        bad = np.unique(labels[~ok])[:10].tolist()
        raise ValueError(
            f"label values {bad} are neither classes [0, {num_classes}) nor ignore ({ignore_label})"
        )
    if valid is None:
        return table[labels.astype(np.intp)]
    return cv2.LUT(cv2.merge([labels, labels, labels]), table[None])


_BAND_ROWS = 256


def overlay(
    image: np.ndarray,
    colour_map: np.ndarray,
    alpha: float = 0.5,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Blends a colour map over an image: ``round((1 - alpha) * image + alpha * colour_map)``.

    Rounding is half up (``floor(x + 0.5)``), so 0 and 255 at ``alpha=0.5`` give 128.

    Args:
      image: uint8 ``[H, W, 3]`` RGB (``[H, W]`` grayscale is replicated).
      colour_map: uint8 ``[H, W, 3]``, e.g. from ``colorize``.
      alpha: weight of the colour map, in ``[0, 1]``.
      mask: optional bool ``[H, W]``; where False the image is kept unchanged.

    Returns:
      uint8 ``[H, W, 3]``.
    """
    image = np.asarray(image)
    colour_map = np.asarray(colour_map)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape != colour_map.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"overlay needs image and colour map of the same [H, W, 3] shape, got {image.shape} "
            f"and {colour_map.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 0.5 and image.dtype == colour_map.dtype == np.uint8:
        # The default, in uint8: (a + b + 1) // 2 = (a | b) - ((a ^ b) >> 1), no float copies.
        out = (image | colour_map) - ((image ^ colour_map) >> 1)
    else:
        out = _blend(image, colour_map, alpha)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} differs from image {image.shape[:2]}")
        out = np.where(mask[:, :, None], out, image.astype(np.uint8))
    return out


def _blend(image: np.ndarray, colour_map: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty(image.shape, np.uint8)
    # Bands of rows: float64 copies of a whole 8000x8000 image would take 3 GiB.
    for top in range(0, image.shape[0], _BAND_ROWS):
        rows = slice(top, top + _BAND_ROWS)
        blended = (1.0 - alpha) * image[rows].astype(np.float64)
        blended += alpha * colour_map[rows].astype(np.float64)
        out[rows] = np.clip(np.floor(blended + 0.5), 0, 255)
    return out


def overlay_labels(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """`overlay(image, colorize(labels, palette, ignore_label=None), alpha)`, the same bytes,
    read from a table of every (class, value, channel) blend instead of computed per pixel:
    about a third of their time, what lets a video's colouring keep up with the network.

    Args:
      image: uint8 `[H, W, 3]` RGB.
      labels: integer `[H, W]` class ids in `[0, K)`.
      palette: uint8 `[K, 3]`.

    Returns:
      uint8 `[H, W, 3]`.
    """
    image, labels, palette = np.asarray(image), np.asarray(labels), np.asarray(palette)
    if image.ndim != 3 or image.shape[2] != 3 or labels.shape != image.shape[:2]:
        raise ValueError(
            f"image [H, W, 3] and labels [H, W] needed, got {image.shape}, {labels.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    num_classes = palette.shape[0]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"label values outside the classes [0, {num_classes})")
    if alpha == 0.5:  # the default: overlay's uint8 path is faster still
        return overlay(image, colorize(labels, palette, ignore_label=None))
    values = np.arange(256, dtype=np.float64)[None, :, None]
    table = (1.0 - alpha) * values + alpha * palette.astype(np.float64)[:, None, :]
    flat = np.clip(np.floor(table + 0.5), 0, 255).astype(np.uint8).reshape(-1)  # [K * 256 * 3]
    rows = labels.astype(np.intp) * (256 * 3)
    out = np.empty(image.shape, np.uint8)
    for channel in range(3):
        out[..., channel] = flat[rows + image[..., channel].astype(np.intp) * 3 + channel]
    return out


def save_prediction(
    out_dir: PathLike,
    stem: str,
    image: np.ndarray | None,
    labels: np.ndarray,
    palette: np.ndarray,
    ignore_label: int | None = 255,
    alpha: float = 0.5,
) -> dict[str, pathlib.Path]:
    """Writes a prediction as ``{stem}_labels.png``, ``{stem}_color.png``, ``{stem}_overlay.png``.

    ``_labels`` holds the class ids (8-bit grayscale PNG, pixel value = train id), ``_color`` the
    palette colours, ``_overlay`` the colours blended over ``image`` (skipped when ``image`` is
    None). ``stem`` may contain sub-folders (``"frankfurt/frankfurt_000000_000294"``); folders are
    created.

    Args:
      labels: integer ``[H, W]`` predicted class ids, the same size as ``image``.

    Returns:
      ``{'labels': path, 'color': path, 'overlay': path}`` (no ``'overlay'`` without an image).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got {labels.shape}")
    base = pathlib.Path(out_dir)
    colour = colorize(labels, palette, ignore_label=ignore_label)
    paths = {
        "labels": write_png(base / f"{stem}_labels.png", labels),
        "color": write_png(base / f"{stem}_color.png", colour),
    }
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise ValueError(
                f"save_prediction({stem!r}): image is {image.shape[:2]} but labels are "
                f"{labels.shape}; resize the prediction to the image first"
            )
        paths["overlay"] = write_png(base / f"{stem}_overlay.png", overlay(image, colour, alpha))
    return paths


# --- Plots -----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas; pyplot's global state and backend are untouched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def _save(fig, path: PathLike) -> pathlib.Path:
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    return out


def plot_region_accuracy(
    histograms: Mapping[str, Any],
    path: PathLike,
    bin_size: int = 3000,
    percent: bool = True,
    title: str | None = "Region accuracy difference between branches",
) -> pathlib.Path:
    """Bar plot of accuracy differences per region-size bin, like Fig. 8 of the ICNet paper.

    Args:
      histograms: either the dict of ``region_analysis.RegionAccuracy.result()`` (its
        ``'differences'`` and ``'bin_edges'`` are plotted), or ``{series name: per-bin values}``
        such as ``{'sub24 - sub4': [...30 values...], 'sub124 - sub24': [...]}``. ``None`` or NaN
        marks an empty bin (no bar).
      path: output PNG.
      bin_size: bin width in pixels when ``histograms`` has no ``'bin_edges'``.
      percent: plot values times 100 (values are accuracy fractions).
      title: plot title, or None.

    Returns:
      The written path.
    """
    if "differences" in histograms and "bin_edges" in histograms:
        pairs = histograms.get("difference_pairs")
        names = [f"{a} - {b}" for a, b in pairs] if pairs else None
        series = {
            (names[i] if names else key): values
            for i, (key, values) in enumerate(histograms["differences"].items())
        }
        edges = [float(e) for e in histograms["bin_edges"]]
    else:
        series = dict(histograms)
        num_bins = max((len(v) for v in series.values()), default=0)
        edges = [float(bin_size * i) for i in range(num_bins + 1)]
    num_bins = len(edges) - 1
    scale = 100.0 if percent else 1.0
    fig = _figure(max(8.0, 0.35 * num_bins + 2), 4.5)
    ax = fig.add_subplot()
    x = np.arange(num_bins)
    width = 0.8 / max(len(series), 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, (name, values) in enumerate(series.items()):
        values = np.array([_as_float(v) for v in values], dtype=np.float64) * scale
        if len(values) != num_bins:
            raise ValueError(f"series {name!r} has {len(values)} bins, expected {num_bins}")
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, np.nan_to_num(values), width, label=name,
               color=colours[i % len(colours)], edgecolor="none")  # fmt: skip
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{e / 1000:g}K" for e in edges[1:]], rotation=90, fontsize=8)
    ax.set_xlim(-0.6, num_bins - 0.4)
    ax.set_xlabel("region size (pixels), upper edge of each bin")
    ax.set_ylabel("accuracy difference" + (" (%)" if percent else ""))
    ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    if series:
        ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_per_class_iou(
    metrics_by_branch: Mapping[str, Mapping[str, float | None]],
    path: PathLike,
    percent: bool = True,
    title: str | None = "Per-class IoU",
) -> pathlib.Path:
    """Grouped bars of per-class IoU, one bar per branch (e.g. sub4, sub24, sub124) per class.

    Args:
      metrics_by_branch: ``{branch: {class name: IoU or None}}``, e.g. each branch's
        ``segmentation_metrics(...)['per_class']``. Classes appear in first-seen order; None
        (class absent) draws no bar.
      path: output PNG.
      percent: plot IoU times 100 (values are fractions in [0, 1]).
      title: plot title, or None; the legend shows each branch's mean over its non-None values.

    Returns:
      The written path.
    """
    classes: list[str] = []
    for per_class in metrics_by_branch.values():
        classes.extend(c for c in per_class if c not in classes)
    scale = 100.0 if percent else 1.0
    fig = _figure(max(8.0, 0.5 * len(classes) + 2), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    width = 0.8 / max(len(metrics_by_branch), 1)
    for i, (branch, per_class) in enumerate(metrics_by_branch.items()):
        values = np.array([_as_float(per_class.get(c)) for c in classes]) * scale
        known = values[~np.isnan(values)]
        label = f"{branch} (mean {known.mean():.1f})" if known.size else branch
        offset = (i - (len(metrics_by_branch) - 1) / 2) * width
        ax.bar(x + offset, np.nan_to_num(values), width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU" + (" (%)" if percent else ""))
    ax.set_ylim(0, 1.12 * scale)  # headroom for the legend
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    if metrics_by_branch:
        ax.legend(fontsize=8, loc="upper center", ncol=max(len(metrics_by_branch), 1))
    if title:
        ax.set_title(title)
    return _save(fig, path)
