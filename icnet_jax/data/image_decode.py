"""The one image decoder of dataset preparation and prediction: file bytes to upright RGB.

Dataset preparation (``builders``) and prediction (``inference.image_io.read_image``) both decode
through ``decode_image``, so a photo is seen the same way in training and at inference:

* **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a phone photo taken in
  portrait comes out upright, as image viewers and annotation tools show it (labels are drawn
  on that view; label PNGs carry no orientation).
* **Alpha** (RGBA, LA, palette with transparency) is *dropped*: the stored colour of each pixel
  is kept as is, not composited on any background.
* **Grayscale** (L, 1-bit) is replicated to three channels.
* **16-bit** images (16-bit grayscale PNG/TIFF) are scaled to 8 bits by ``>> 8`` (the high byte),
  a fixed scaling that does not depend on the image's content; Pillow already reads 16-bit
  RGB(A) PNGs this way. 32-bit integer images are clipped to ``[0, 65535]`` first; float images
  are clipped to ``[0, 255]``.
* **Palette** (P) images are expanded through their palette.
* Multi-frame files (GIF, TIFF) give their first frame.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored upright


class DecodedImage(NamedTuple):
    """``pixels``: uint8 ``[H, W, 3]`` RGB, upright. ``orientation``: the file's EXIF orientation
    (1 when it has none). ``plain``: the file is 8-bit RGB stored upright, so any decoder that
    ignores EXIF gives exactly ``pixels`` from its bytes."""

    pixels: np.ndarray
    orientation: int
    plain: bool


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow image to uint8 ``[H, W, 3]`` RGB, following the module's conventions."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image)
        if values.ndim != 2:
            raise ValueError(f"unexpected array shape {values.shape} for mode {mode}")
        gray = (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's warning; alpha dropped below
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        image = image.convert("RGBA" if mode != "LA" else "LA")
        array = np.asarray(image)
        if array.shape[2] == 2:  # LA: gray + alpha
            return np.repeat(array[:, :, :1], 3, axis=2)
        return np.ascontiguousarray(array[:, :, :3])
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"unexpected array {array.dtype} {array.shape} for mode {mode}")
    return array


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: treat as none
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def decode_image(data: bytes) -> DecodedImage:
    """Decodes image file bytes (PNG, JPEG, BMP, TIFF, ...) per the module's conventions.

    Raises:
      ValueError: not an image, truncated or otherwise undecodable; the message says why.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # Image.open is lazy: decoding errors surface here
            orientation = _orientation(image)
            upright: Image.Image = image
            if orientation != 1:
                try:
                    upright = ImageOps.exif_transpose(image) or image
                except Exception:  # a broken EXIF block must not lose the pixels
                    orientation = 1
            plain = image.mode == "RGB" and orientation == 1
            return DecodedImage(_to_rgb_array(upright), orientation, plain)
    except Image.UnidentifiedImageError:
        raise ValueError("not an image file (format not recognised)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error
