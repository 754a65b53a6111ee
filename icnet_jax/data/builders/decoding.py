"""Decoding and checking image and label files into what the builders store."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from icnet_jax.data import taxonomy
from icnet_jax.data.builders.files import BadFileError, File
from icnet_jax.data.image_decode import DecodedImage, decode_image


def read_image(file: File) -> DecodedImage:
    """The file's pixels, upright per its EXIF orientation (``image_decode.decode_image``)."""
    try:
        return decode_image(file.read())
    except ValueError as e:
        if isinstance(e, BadFileError):
            raise
        raise BadFileError(f"{file}: cannot decode image ({e})") from e


def label_png(file: File) -> np.ndarray:
    """Raw label values of a PNG: ``[H, W]`` ints (palette PNGs give their indices), or
    ``[H, W, 3]`` RGB for colour-coded labels."""
    try:
        with Image.open(io.BytesIO(file.read())) as img:
            if img.mode in ("RGBA", "RGB"):
                return np.asarray(img.convert("RGB"))
            return np.asarray(img)
    except BadFileError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadFileError(f"{file}: cannot decode label ({e})") from e


def label_mat(file: File) -> np.ndarray:
    """Field ``S`` of a COCO-Stuff 10K annotation .mat file, ``[H, W]`` ints."""
    from scipy import io as sio  # only the 10K release needs scipy

    try:
        return np.asarray(sio.loadmat(io.BytesIO(file.read()))["S"])
    except BadFileError:
        raise
    except Exception as e:
        raise BadFileError(f"{file}: cannot read field 'S' ({e})") from e


def check_label_values(label: np.ndarray, num_classes: int, where: str) -> None:
    """Raises BadFileError unless every value is a class id in [0, num_classes) or 255."""
    bad = (label >= num_classes) & (label != taxonomy.IGNORE_LABEL)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise BadFileError(f"{where}: label values {values} outside [0, {num_classes}) and not 255")


def table_reader(read: Callable[[File], np.ndarray], table: np.ndarray):
    def read_label(self, file: File) -> np.ndarray:
        raw = read(file)
        if raw.ndim != 2:
            raise BadFileError(f"{file}: label has shape {raw.shape}, expected one channel")
        return taxonomy.map_labels(raw, table)

    return read_label
