"""How prepared examples store their pixels: ``image_format``, chosen when a dataset is prepared.

- ``'png'`` (default): images as their original PNG/JPEG bytes (re-encoded as PNG when not plain
  8-bit upright RGB), labels as PNG. Smallest on disk, slowest to read: decoding the PNG pair
  is most of a worker's time at Cityscapes' 1024x2048.
- ``'raw'``: the uint8 arrays, image ``[H, W, 3]`` and label ``[H, W, 1]``; reading them is
  about 3x cheaper than decoding PNGs (``benchmarks/pipeline_throughput.py --image-format png
  raw --cpu-cost``). array_record compresses each record, so on disk they take about half of
  their 4 bytes a pixel on real photos: CamVid (360x480) 331 KiB an example against 91 KiB as
  PNG; at Cityscapes' 1024x2048 about 4 MiB an example, some 12 GiB for the 2975 training
  examples where PNG storage takes about 6.5 GiB.

Both read back the same pixels: ``image`` uint8 ``[H, W, 3]``, ``label`` uint8 ``[H, W, 1]``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.errors import UserError

ImageFormat = Literal["png", "raw"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "raw")


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
        # "bytes": one flat buffer a record (tfds' only way to store [None, None, C] arrays).
        image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="bytes")
        label = tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint8, encoding="bytes")
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
