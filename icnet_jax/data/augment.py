"""Training augmentations and input normalisation for semantic segmentation, in numpy and OpenCV.

Every random function takes an explicit `np.random.Generator`, so that a pipeline can make the
randomness a function of its seed and the example's position (no global RNG anywhere).

Conventions: images are `[H, W, 3]` RGB, `uint8` (or `float32` once padded with a fractional
fill); labels are `[H, W]` class ids (`uint8` on input, 255 = ignore); sizes are `(height, width)`
in pixels.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from icnet_jax.data.input_spec import InputSpec

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    """`(height, width)` from an int (square) or a pair; both must be positive."""
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    """Raises ValueError unless `image` is `[H, W, 3]` and `label` is `[H, W]`."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"label must be [H, W] = {image.shape[:2]} like its image, got shape {label.shape}"
        )


def file_name_of(example: Mapping[str, Any]) -> str:
    """The example's `file_name` as `str` (tfds gives `bytes`); `'<unnamed>'` when absent."""
    name = example.get("file_name", "<unnamed>")
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def validate_example(example: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Checks a source example and returns `(image [H, W, 3] uint8, label [H, W] uint8)`.

    Raises:
      ValueError: naming the example's `file_name`, when a key is missing, a dtype is not uint8,
        the image is not `[H, W, 3]`, the label is not `[H, W, 1]` (or `[H, W]`), or their
        heights and widths differ.
    """
    name = file_name_of(example)
    for key in ("image", "label"):
        if key not in example:
            raise ValueError(f"example {name!r} has no {key!r} (keys: {sorted(example)})")
    image = np.asarray(example["image"])
    label = np.asarray(example["label"])
    for key, array in (("image", image), ("label", label)):
        if array.dtype != np.uint8:
            raise ValueError(f"example {name!r}: {key} must be uint8, got {array.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"example {name!r}: image must be [H, W, 3], got shape {image.shape}")
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2:
        raise ValueError(f"example {name!r}: label must be [H, W, 1], got shape {label.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"example {name!r}: image is {image.shape[:2]} but label is {label.shape} (H, W)"
        )
    return image, label


def random_resize(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Rescales both sides by one factor drawn uniformly from `scale_range`.

    The image is resized bilinearly (half-pixel centres); the label by nearest neighbour, so its
    values are always a subset of the input's (never a blend of two classes).

    Args:
      image: `[H, W, 3]`.
      label: `[H, W]`.
      rng: source of the scale.
      scale_range: `(low, high)` factors, `0 < low <= high`.

    Returns:
      `(image [h, w, 3], label [h, w])` with `h = round(H * s)`, `w = round(W * s)` (at least 1);
      the inputs themselves when the size does not change.
    """
    _check_pair(image, label)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    scale = rng.uniform(low, high)
    h, w = label.shape
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) == (h, w):
        return image, label
    # cv2 takes (width, height). INTER_NEAREST_EXACT samples the pixel whose centre is nearest;
    # plain INTER_NEAREST is shifted by half a pixel.
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, label


def pad_to(
    image: np.ndarray,
    label: np.ndarray,
    size: Size,
    image_fill: Sequence[float],
    ignore_label: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Pads at the bottom and right up to at least `size`; never crops.

    Args:
      image: `[H, W, 3]`.
      label: `[H, W]`.
      size: minimum `(height, width)` (or an int for both).
      image_fill: per-channel value of padded image pixels, in the image's channel order; pass
        the normalisation mean so that padding becomes 0 after `normalize`.
      ignore_label: value of padded label pixels.

    Returns:
      `(image [max(H, h), max(W, w), 3], label [max(H, h), max(W, w)])`; the inputs themselves
      when no padding is needed. A uint8 image with a fill that is not a whole number comes back
      as float32, so that the fill is exact.
    """
    _check_pair(image, label)
    target_h, target_w = _pair(size)
    h, w = label.shape
    pad_h, pad_w = max(0, target_h - h), max(0, target_w - w)
    if pad_h == 0 and pad_w == 0:
        return image, label
    fill = np.asarray(image_fill, dtype=np.float64)
    if fill.shape != (3,):
        raise ValueError(f"image_fill must have 3 values, got {image_fill}")
    if image.dtype == np.uint8 and not np.array_equal(fill, np.round(fill)):
        image = image.astype(np.float32)
    padded_image = np.empty((h + pad_h, w + pad_w, 3), dtype=image.dtype)
    padded_image[...] = fill.astype(image.dtype)
    padded_image[:h, :w] = image
    padded_label = np.full((h + pad_h, w + pad_w), ignore_label, dtype=label.dtype)
    padded_label[:h, :w] = label
    return padded_image, padded_label


def random_crop(
    image: np.ndarray, label: np.ndarray, size: Size, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts the same window, at a uniformly random offset, out of image and label.

    Args:
      image: `[H, W, 3]`, at least `size` (pad first with `pad_to`).
      label: `[H, W]`.
      size: `(height, width)` of the window (or an int for both).
      rng: source of the offset.

    Returns:
      `(image [h, w, 3], label [h, w])`, views into the inputs.
    """
    _check_pair(image, label)
    crop_h, crop_w = _pair(size)
    h, w = label.shape
    if h < crop_h or w < crop_w:
        raise ValueError(f"cannot crop {(crop_h, crop_w)} out of {(h, w)}: pad first")
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    window = np.s_[top : top + crop_h, left : left + crop_w]
    return image[window], label[window]


def random_mirror(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """With probability 1/2 flips both image `[H, W, 3]` and label `[H, W]` left-right (views)."""
    _check_pair(image, label)
    if rng.random() < 0.5:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmsegmentation's PhotoMetricDistortion: random brightness, contrast, saturation and hue.

    Each change happens with probability 1/2, in mmseg's order and ranges: brightness
    `+ U(-32, 32)`; contrast `* U(0.5, 1.5)` either first or last (probability 1/2 each);
    saturation `* U(0.5, 1.5)` and hue `+ U(-18, 18)` OpenCV units (of 180, so +-36 degrees) in
    HSV; values clipped to 0..255 after each change, as uint8 would be.

    Args:
      image: `[H, W, 3]` RGB, values in 0..255, any real dtype.
    Returns:
      float32 `[H, W, 3]` in 0..255.
    """
    x = image.astype(np.float32)  # a copy: the input may be a view into a padded image

    def maybe_contrast(x: np.ndarray) -> np.ndarray:
        if rng.random() < 0.5:
            x = np.clip(x * rng.uniform(0.5, 1.5), 0, 255, out=x)
        return x

    if rng.random() < 0.5:
        x = np.clip(x + rng.uniform(-32, 32), 0, 255, out=x)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        x = maybe_contrast(x)
    change_saturation, change_hue = rng.random() < 0.5, rng.random() < 0.5
    saturation, hue = rng.uniform(0.5, 1.5), rng.uniform(-18, 18)
    if change_saturation or change_hue:
        hsv = cv2.cvtColor(x / 255, cv2.COLOR_RGB2HSV)  # float: H in degrees, S and V in 0..1
        if change_saturation:
            np.clip(hsv[..., 1] * saturation, 0, 1, out=hsv[..., 1])
        if change_hue:
            hsv[..., 0] = np.mod(hsv[..., 0] + 2 * hue, 360)
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255, 0, 255)
    if not contrast_first:
        x = maybe_contrast(x)
    return x


def normalize(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], bgr: bool
) -> np.ndarray:
    """`(image - mean) / std` per channel, optionally reordered to BGR.

    Args:
      image: `[..., 3]` RGB, any real dtype, values in 0..255.
      mean: per-channel mean in RGB order, 0..255 units (ImageNet: 123.68, 116.779, 103.939).
      std: per-channel divisor in RGB order (all ones for the released ICNet, which does not scale).
      bgr: whether the output channels are B, G, R (the released Caffe model) instead of R, G, B.

    Returns:
      float32 `[..., 3]`, contiguous.
    """
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    if image.shape[-1] != 3 or mean_arr.shape != (3,) or std_arr.shape != (3,):
        raise ValueError(
            f"need image [..., 3] and 3 means and stds, got {image.shape}, {mean}, {std}"
        )
    if np.any(std_arr <= 0):
        raise ValueError(f"std must be positive, got {std}")
    if bgr:
        image, mean_arr, std_arr = image[..., ::-1], mean_arr[::-1], std_arr[::-1]
    if image.dtype == np.uint8:
        # A table of the 256 values per channel: the same float32 arithmetic, done once per
        # value (0.45 ms instead of 5.6 for a 512x1024 frame: what a video pipeline's CPU pays).
        table = _normalize_table(tuple(mean_arr.tolist()), tuple(std_arr.tolist()))
        rows = np.ascontiguousarray(image).reshape(-1, image.shape[-2] if image.ndim > 2 else 1, 3)
        return cv2.LUT(rows, table).reshape(image.shape)
    # One pass over the image: the ufunc converts to float32 as it subtracts (a worker spent 14%
    # of its time here with a separate conversion, subtraction and division by a std of ones).
    out = np.empty(image.shape, np.float32)
    np.subtract(image, mean_arr, out=out, dtype=np.float32)
    if np.any(std_arr != 1):
        out /= std_arr
    return out


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 `[1, 256, 3]`: `(v - mean) / std` of every uint8 value `v`, per channel, as the
    ufunc path of `normalize` computes it."""
    values = np.arange(256, dtype=np.float32)[:, None]
    table = np.subtract(values, np.asarray(mean, np.float32), dtype=np.float32)
    return (table / np.asarray(std, np.float32))[None]


def denormalize(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], bgr: bool
) -> np.ndarray:
    """Inverse of `normalize`: the uint8 RGB image `[..., 3]` back (for overlays)."""
    image = np.asarray(image, np.float32)
    if bgr:
        image = image[..., ::-1]
    image = image * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def train_transform(
    example: Mapping[str, Any], rng: np.random.Generator, spec: InputSpec
) -> dict[str, np.ndarray]:
    """One training example: random resize, pad, random crop, photometric distortion (optional),
    random mirror, normalise.

    Args:
      example: `{'image': uint8 [H, W, 3] RGB, 'label': uint8 [H, W, 1], 'file_name': ...}`.
      rng: the example's generator (all randomness comes from it).
      spec: crop size, resize range, mirror, photometric distortion (of the crop's image pixels,
        padding left as it is), normalisation (`normalize`) and the label of padded pixels.

    Returns:
      `{'image': float32 [h, w, 3], 'label': int32 [h, w]}`; padded pixels are 0 in the image
      and `spec.ignore_label` in the label.
    """
    crop_size = spec.crop_size
    image, label = validate_example(example)
    image, label = random_resize(image, label, rng, spec.scale_range)
    height, width = label.shape
    image, label = pad_to(
        image, label, crop_size, image_fill=spec.mean, ignore_label=spec.ignore_label
    )
    image, label = random_crop(image, label, crop_size, rng)
    if spec.photometric:
        # Padding is at the bottom and right, and a crop of a padded side starts at 0: the image
        # pixels are the top-left block. Distorting the padding would move it off the mean.
        h, w = min(height, label.shape[0]), min(width, label.shape[1])
        image = image.astype(np.float32)
        image[:h, :w] = photometric_distortion(image[:h, :w], rng)
    if spec.mirror:
        image, label = random_mirror(image, label, rng)
    return {
        "image": normalize(image, spec.mean, spec.std, spec.bgr),
        "label": label.astype(np.int32),
    }
