"""Pooling as the ICNet release computes it: Caffe's ceil-mode max pooling of the stem,
PyTorch's floor-mode and average-pool shortcut variants of downloaded ResNet-50 trunks, and the
windows of the pyramid pooling (`layers.SumPyramidPooling`, `layers.ConcatPyramidPooling`).

Feature maps are NHWC (`[N, H, W, C]`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _max_pool_padded(x: Array, window: int, stride: int, unrolled: bool) -> Array:
    """VALID max pooling of `x`, padded already (with -inf).

    `unrolled`: the max of the window's `window**2` strided slices. Its gradient is elementwise
    selects that fuse, where reduce-window's (a select-and-scatter) compiles on XLA CPU into an
    argmax search about 5x the cost of the forward; the values are the same. The reduce-window
    form is the one exporters (jax2onnx) map onto ONNX's 2-D pool, so inference keeps it.
    """
    if not unrolled:
        # Keyword arguments only: exporters replace Flax's pooling with functions of that
        # signature.
        return nn.max_pool(x, window_shape=(window, window), strides=(stride, stride))
    rows, cols = ((n - window) // stride + 1 for n in x.shape[1:3])
    taps = (
        x[:, i : i + (rows - 1) * stride + 1 : stride, j : j + (cols - 1) * stride + 1 : stride]
        for i in range(window)
        for j in range(window)
    )
    return functools.reduce(jnp.maximum, taps)


def max_pool_ceil(
    x: Array, window: int = 3, stride: int = 2, pad: int = 1, *, unrolled: bool = False
) -> Array:
    """Caffe max pooling (ceil mode): out = ceil((n + 2 pad - window) / stride) + 1.

    As in Caffe, a last window that would start inside the padding is dropped. `unrolled`: the
    form to differentiate (see `_max_pool_padded`); same values.
    """
    padding = []
    for n in x.shape[1:3]:
        out = math.ceil((n + 2 * pad - window) / stride) + 1
        if (out - 1) * stride >= n + pad:
            out -= 1
        padding.append((pad, (out - 1) * stride + window - n - pad))
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    return _max_pool_padded(x, window, stride, unrolled)


def max_pool_floor(
    x: Array, window: int = 3, stride: int = 2, pad: int = 1, *, unrolled: bool = False
) -> Array:
    """PyTorch max pooling (floor mode, as torchvision's and timm's ResNet stems):
    out = floor((n + 2 pad - window) / stride) + 1. Equals `max_pool_ceil` on odd sizes."""
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
    return _max_pool_padded(x, window, stride, unrolled)


def avg_pool_ceil(x: Array, window: int = 2) -> Array:
    """PyTorch `AvgPool2d(window, window, ceil_mode=True, count_include_pad=False)`: the
    average-pool shortcut of deep-stem ResNets (timm `resnet50d`, mmseg `ResNetV1d`).

    `[N, H, W, C] -> [N, ceil(H / window), ceil(W / window), C]`; a last window that overhangs an
    odd side averages only the pixels it covers.
    """
    padding, counts = [], []
    for n in x.shape[1:3]:
        out = -(-n // window)
        padding.append((0, out * window - n))
        counts.append(np.minimum(window, n - window * np.arange(out)))
    count = np.outer(*counts).astype(np.float32)[None, :, :, None]
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    mean = nn.avg_pool(x, window_shape=(window, window), strides=(window, window))
    return mean * jnp.asarray(window * window / count, x.dtype)


# Strides of the released pyramid-pooling windows along an axis of 33 (the 1/32 map of a
# 1025-pixel side). Along 65 the release uses 32, 20, 10: the same fractions, rounded.
_RELEASED_STRIDE_AT_33 = {1: 33, 2: 16, 3: 10, 6: 5}


def pyramid_pool_window(size: int, bins: int) -> tuple[int, int]:
    """(kernel, stride) of the average pool giving `bins` windows along an axis of `size`.

    The windows tile the axis exactly (kernel = size - stride (bins - 1)), with the stride scaled
    from the release: on a 33x65 map this gives its windows exactly (bin 2: 17x33 stride 16x32,
    bin 3: 13x25 stride 10x20, bin 6: 8x15 stride 5x10); other sizes get the same proportions.
    """
    if bins == 1:
        return size, size
    fraction = _RELEASED_STRIDE_AT_33.get(bins, 33 / bins) / 33
    stride = max(1, round(size * fraction))
    kernel = size - stride * (bins - 1)
    if kernel < stride:  # small maps: the largest stride that still tiles the axis
        stride = size // bins
        if stride == 0:  # fewer pixels than bins: one window per pixel
            return 1, 1
        kernel = size - stride * (bins - 1)
    return kernel, stride


def pyramid_average_pool(x: Array, bins: int) -> Array:
    """Average pooling of `[N, H, W, C]` into about `bins x bins` windows (release geometry)."""
    (kh, sh), (kw, sw) = (pyramid_pool_window(n, bins) for n in x.shape[1:3])
    return nn.avg_pool(x, window_shape=(kh, kw), strides=(sh, sw), padding="VALID")
