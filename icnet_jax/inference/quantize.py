"""int8 ONNX models: onnxruntime's static quantisation (QOperator format: QLinearConv,
QLinearAdd, ...; int8 weights per output channel, uint8 activations, MinMax ranges) of the
convolutions, the additions, the poolings and the concatenations, calibrated on images normalised
as the model expects.

`dataset_images(calibration_config(loaded), size, n)` gives the calibration images of a
checkpoint: `n` images of the training split of the dataset it was trained on (read through
`data.datasets`), spread evenly over the split, normalised as `config.input` says
(`augment.normalize`) and resized to the network input `size` as inference resizes them
(bilinear, the model's align-corners convention).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

import ml_collections
import numpy as np

from icnet_jax import default
from icnet_jax.data import augment, datasets


def calibration_config(loaded) -> ml_collections.ConfigDict:
    """A loaded checkpoint's config whose `dataset` is the one it was trained on (the saved
    config's), read from the command line's `data_dir` / `manual_dir` where those were given
    (differ from the defaults)."""
    merged = loaded.config.to_dict()
    defaults = default.get_config().dataset
    for key, value in loaded.saved_config.get("dataset", {}).items():
        given = key in ("data_dir", "manual_dir") and merged["dataset"].get(key) != defaults[key]
        if not given:
            merged["dataset"][key] = value
    return ml_collections.ConfigDict(merged)


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
            x = np.asarray(resize_bilinear(jnp.asarray(x), size, config.model.align_corners))
        yield np.asarray(x, np.float32)


def quantize_static(
    model: str | os.PathLike, output: str | os.PathLike, images: Iterable[np.ndarray]
) -> None:
    """Writes the int8 model of the float32 ONNX `model` to `output`, its activation ranges
    calibrated on `images` (each `float32 [N, H, W, 3]`, as the model's input)."""
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._images = iter(images)

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {"images": image}

    # onnxruntime logs advice on the root logger at every call (pre-process the model first).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        q.quantize_static(
            str(model),
            str(output),
            Reader(),
            # Quantised operators written out (QLinearConv, QLinearAdd, QLinearAveragePool, ...)
            # rather than Q/DQ pairs for onnxruntime's fuser to find: it also quantises the
            # additions and poolings between the convolutions, which the QDQ fuser left in float
            # between Quantize/DequantizeLinear nodes. 1.7x float32's speed became 1.9x on a
            # 2-core Intel Xeon (docs/inference_speed.md).
            quant_format=q.QuantFormat.QOperator,
            per_channel=True,
            # uint8 activations x int8 weights is what onnxruntime's x86 kernels run (VNNI's
            # u8 x s8 dot product); int8 activations ran 1.2x float32 (docs/inference_speed.md).
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            # 7-bit weights: without VNNI (AVX2) the u8 x s8 products are summed in pairs into
            # int16, which 8-bit weights can saturate. No cost measured with VNNI (speed, mIoU).
            reduce_range=True,
            # MinMax reduces each activation to its range inside the calibration graph: memory
            # does not grow with the image size (full-size activations are never kept).
            calibrate_method=q.CalibrationMethod.MinMax,
            op_types_to_quantize=list(OP_TYPES),
            # Every listed operator quantised, whatever its input: without it an addition or
            # pooling after a float Resize stayed float.
            extra_options={"ForceQuantizeNoInputCheck": True},
        )
    finally:
        root.setLevel(level)


# The convolutions (and the ReLUs after them, which vanish into the uint8 range), the additions,
# poolings and concatenations, and the layout moves between them. Not Resize: onnxruntime 1.32's
# uint8 Resize took 13.6 ms where its float one took 8.5 (512x1024, 2-core Intel Xeon).
OP_TYPES = ("Conv", "Relu", "Add", "Concat", "MaxPool", "AveragePool", "Transpose")
# Names these settings in the export cache's file names (`onnx_backend`): a model cached by an
# earlier recipe is made anew.
RECIPE = "qop"
