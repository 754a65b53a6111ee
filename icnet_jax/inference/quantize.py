"""int8 ONNX models: onnxruntime's static quantisation (QDQ format, weights per output channel,
int8 weights and activations, MinMax ranges) calibrated on images normalised as the model
expects.

`dataset_images(config, size, n)` gives the calibration images of a checkpoint: `n` images of
the training split of its dataset (`config.dataset`, read through `data.datasets`), spread evenly
over the split, normalised as `config.input` says (`augment.normalize`) and resized to the
network input `size` as inference resizes them (bilinear, the model's align-corners convention).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np

from icnet_jax.data import augment, datasets


def dataset_images(config, size: tuple[int, int], n: int) -> Iterator[np.ndarray]:
    """`n` calibration images `float32 [1, H, W, 3]` (`size` = (H, W)) from the training split
    of `config.dataset` (see the module docstring)."""
    import jax.numpy as jnp

    from icnet_jax.models.layers import resize_bilinear

    split = config.dataset.get("train_split", "train")
    source, _ = datasets.config_source(config, split)
    c = config.input
    for index in np.unique(np.linspace(0, len(source) - 1, n).round().astype(int)):
        image, _ = augment.validate_example(source[int(index)])
        x = augment.normalize(image, c.mean, c.std, c.bgr)[None]
        if x.shape[1:3] != tuple(size):
            x = resize_bilinear(jnp.asarray(x), size, config.model.align_corners)
        yield np.asarray(x, np.float32)


def quantize_static(
    model: str | os.PathLike, output: str | os.PathLike, images: Iterable[np.ndarray]
) -> None:
    """Writes the int8 QDQ model of the float32 ONNX `model` to `output`, its activation ranges
    calibrated on `images` (each `float32 [N, H, W, 3]`, as the model's input)."""
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._images = iter(images)

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {"images": image}

    q.quantize_static(
        str(model),
        str(output),
        Reader(),
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        # MinMax reduces each activation to its range inside the calibration graph: memory
        # does not grow with the image size (full-size activations are never kept).
        calibrate_method=q.CalibrationMethod.MinMax,
    )
