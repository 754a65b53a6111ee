"""How prepared examples store their pixels: ``image_format``, chosen when a dataset is prepared.

- ``'png'`` (default): images as their original PNG/JPEG bytes (re-encoded as PNG when not plain
  8-bit upright RGB), labels as PNG. Smallest on disk (Cityscapes' 2975 training examples:
  about 6.5 GiB), slowest to read: decoding a 1024x2048 PNG pair costs about 80 CPU-ms.
- ``'raw'``: uint8 arrays as they are, image ``[H, W, 3]`` and label ``[H, W, 1]``: 4 bytes a
  pixel, 8 MiB per 1024x2048 example (Cityscapes train: about 23 GiB); reading is a copy.
- ``'zlib'``: the same arrays zlib-compressed (tfds' ``Tensor(encoding='zlib')``): smaller than
  raw (labels shrink most; natural images by a fourth or so), reading costs an inflate (about
  a fourth of PNG decoding), preparation a slow deflate.

Every format reads back the same pixels (``image`` uint8 ``[H, W, 3]``, ``label`` uint8
``[H, W, 1]``).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.errors import UserError

ImageFormat = Literal["png", "raw", "zlib"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "raw", "zlib")
_TENSOR_ENCODING = {"raw": "bytes", "zlib": "zlib"}


def check_image_format(image_format: str) -> None:
    if image_format not in IMAGE_FORMATS:
        raise UserError(
            f"image_format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)} "
            "(--config.dataset.builder_kwargs.image_format)"
        )


def features(image_format: str) -> tfds.features.FeaturesDict:
    """The stored features: ``image`` ``[H, W, 3]``, ``label`` ``[H, W, 1]``, ``file_name``."""
    if image_format == "png":
        image = tfds.features.Image(shape=(None, None, 3))
        label = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    else:
        encoding = _TENSOR_ENCODING[image_format]
        image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding=encoding)
        label = tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding=encoding)
    return tfds.features.FeaturesDict(
        {"image": image, "label": label, "file_name": tfds.features.Text()}
    )


def stored_image(image_format: str, pixels: np.ndarray, encoded: bytes | None = None):
    """What ``image`` holds for uint8 RGB ``pixels [H, W, 3]``: PNG/JPEG bytes (``encoded`` if
    given: bytes that decode to exactly ``pixels``) or the array itself."""
    if image_format != "png":
        return np.ascontiguousarray(pixels)
    if encoded is not None:
        return encoded
    return cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()


def stored_label(image_format: str, label: np.ndarray):
    """What ``label`` holds for uint8 train ids ``[H, W]``: PNG bytes or a ``[H, W, 1]`` array."""
    if image_format != "png":
        return np.ascontiguousarray(label, dtype=np.uint8)[:, :, None]
    return cv2.imencode(".png", label)[1].tobytes()
