"""int8 ONNX models: onnxruntime's static quantisation (QDQ format, int8 weights per output
channel, uint8 activations, MinMax ranges) of the convolutions, calibrated on images
normalised as the model expects.

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
    """Writes the int8 QDQ model of the float32 ONNX `model` to `output`, its activation ranges
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
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations x int8 weights is what onnxruntime's x86 kernels run (VNNI's
            # u8 x s8 dot product). With int8 activations its CPU fuser (int8 allowed on ARM
            # only) first rewrites each int8 Q/DQ pair to uint8 and misses those whose
            # DequantizeLinear feeds two convolutions (a residual block's projection and first
            # 1x1): 15 of 64 stayed float Conv between DQ and Q, with layout Transposes around
            # them (39 against 5). Figures: docs/inference_speed.md.
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            # 7-bit weights: without VNNI (AVX2) the u8 x s8 products are summed in pairs into
            # int16, which 8-bit weights can saturate. No cost measured with VNNI (speed, mIoU).
            reduce_range=True,
            # MinMax reduces each activation to its range inside the calibration graph: memory
            # does not grow with the image size (full-size activations are never kept).
            calibrate_method=q.CalibrationMethod.MinMax,
            op_types_to_quantize=list(OP_TYPES),
            nodes_to_exclude=padded_for_max_pooling(model),
        )
    finally:
        root.setLevel(level)


# Convolutions (and the ReLUs after them, which then vanish into the int8 range). With uint8
# activations, adding Add, Concat, MaxPool and AveragePool gained nothing measurable at
# 512x1024 on a 2-core CPU; the float interpolations, over half the int8 model's time while
# the export traced them into Gathers and arithmetic, are single Resize nodes now
# (`onnx_resize`), and int8 runs 2.2x float32 (docs/inference_speed.md).
OP_TYPES = ("Conv", "Relu")
# Names these settings in the export cache's file names (`onnx_backend`): a model cached by an
# earlier recipe (int8 activations: 15 of 64 convolutions left in float32) is made anew.
RECIPE = "u8act"
# Nodes between a -inf padding and its max pooling only move values (layout, shape).
_MOVES = ("Transpose", "Reshape", "Identity")


def padded_for_max_pooling(model: str | os.PathLike) -> list[str]:
    """Names of the nodes that carry -inf: each `Pad` with a constant value of -inf (max
    pooling's padding, as jax2onnx writes it), the layout and shape nodes after it and the
    `MaxPool` that ends it. They stay float: an int8 range cannot hold -inf (its scale would be
    NaN and every later value with it)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = []
    for node in graph.node:
        value = constants.get(node.input[2]) if len(node.input) > 2 else None
        if node.op_type != "Pad" or value is None or not np.all(np.isneginf(value)):
            continue
        names.append(node.name)
        chain = consumers.get(node.output[0], [])
        while len(chain) == 1 and chain[0].op_type in (*_MOVES, "MaxPool"):
            names.append(chain[0].name)
            if chain[0].op_type == "MaxPool":
                break
            chain = consumers.get(chain[0].output[0], [])
    return names
