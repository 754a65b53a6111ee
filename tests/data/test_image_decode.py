"""The one image decoder: a decompression bomb is refused, not decoded."""

import numpy as np
import pytest
from PIL import Image

from icnet_jax.data import image_decode
from icnet_jax.data.builders.decoding import label_png, read_image
from icnet_jax.data.builders.files import BadFileError, DirTree, File
from tests.data_fakes import png, write


def test_images_over_pillows_pixel_limit_are_refused(tmp_path, monkeypatch):
    # Pillow refuses images of more than twice MAX_IMAGE_PIXELS (89 M by default) before
    # allocating them; a 10x10 file stands in for a bomb under a limit of 40 pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    data = png(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="DecompressionBombError"):
        image_decode.decode_image(data)
    file = File(DirTree(tmp_path), "bomb.png")
    write(tmp_path / "bomb.png", data)
    with pytest.raises(BadFileError, match="bomb.png: cannot decode image"):
        read_image(file)
    with pytest.raises(BadFileError, match="bomb.png: cannot decode label"):
        label_png(file)
