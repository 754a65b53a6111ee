"""Building blocks shared by ICNet and PSPNet: resizing, conv-BN, pyramid pooling, CFF (the
pools themselves: `pooling`).

Conventions: feature maps are NHWC (`[N, H, W, C]`); spatial sizes follow the authors' Caffe
release (explicit symmetric padding, ceil-mode max pooling, align-corners bilinear interpolation),
so that on inputs of the form 32k+1 every intermediate map has exactly the released size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax.models.pooling import pyramid_average_pool

Array = jax.Array
ModuleDef = Any

BN_EPSILON = 1e-5


# ----------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------


def shrink_size(size: int, factor: int = 2) -> int:
    """Caffe `Interp` shrink: `(size - 1) // factor + 1` (every other pixel of an odd size)."""
    return (size - 1) // factor + 1


def zoom_size(size: int, factor: int = 2, align_corners: bool = True) -> int:
    """Size after an x`factor` zoom: Caffe's `size + (size - 1)(factor - 1)` with align corners."""
    return size + (size - 1) * (factor - 1) if align_corners else size * factor


def _source_coordinates(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """Where each output pixel samples the input, in input pixel units (float64, `[out_size]`)."""
    out = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        return out * scale
    # Half-pixel centres (TF2 / PyTorch align_corners=False), clamped at the borders.
    return np.clip((out + 0.5) * in_size / out_size - 0.5, 0.0, in_size - 1)


def _resize_axis(x: Array, axis: int, out_size: int, align_corners: bool) -> Array:
    """Linear interpolation of `x` along one axis to `out_size` samples.

    Two taps per output sample. The exact ratios of the released geometry take fast paths whose
    gradients are slices and pads rather than scatter-adds (which XLA CPU compiles slowly):
    an x`z` align-corners zoom (`out = (in - 1) z + 1`) and an integer-step shrink.
    """
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    if align_corners and in_size > 1 and out_size > 1:
        if (out_size - 1) % (in_size - 1) == 0:  # exact zoom by z
            z = (out_size - 1) // (in_size - 1)
            lo = jax.lax.slice_in_dim(x, 0, in_size - 1, axis=axis)
            hi = jax.lax.slice_in_dim(x, 1, in_size, axis=axis)
            frac = jnp.arange(z, dtype=x.dtype) / z
            frac = frac.reshape((z,) + (1,) * (x.ndim - axis - 1))
            steps = jnp.expand_dims(lo, axis + 1) + (jnp.expand_dims(hi - lo, axis + 1) * frac)
            shape = x.shape[:axis] + ((in_size - 1) * z,) + x.shape[axis + 1 :]
            last = jax.lax.slice_in_dim(x, in_size - 1, in_size, axis=axis)
            return jnp.concatenate([steps.reshape(shape), last], axis=axis)
        if (in_size - 1) % (out_size - 1) == 0:  # exact shrink: every s-th pixel
            step = (in_size - 1) // (out_size - 1)
            return jax.lax.slice_in_dim(x, 0, in_size, stride=step, axis=axis)
    src = _source_coordinates(in_size, out_size, align_corners)
    i0 = np.clip(np.floor(src).astype(np.int32), 0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    weight = (src - i0).astype(np.float32).reshape((out_size,) + (1,) * (x.ndim - axis - 1))
    lo = jnp.take(x, i0, axis=axis)
    hi = jnp.take(x, i1, axis=axis)
    return lo + (hi - lo) * jnp.asarray(weight, x.dtype)


def resize_bilinear(x: Array, size: Sequence[int], align_corners: bool = True) -> Array:
    """Bilinear resize of `[N, H, W, C]` to `[N, size[0], size[1], C]`, without antialiasing.

    `align_corners=True` is the release's convention (Caffe `Interp`: corners map to corners, sample
    ratio `(in - 1) / (out - 1)`); `False` is the half-pixel convention. `jax.image.resize` offers
    neither exactly: it has no align-corners mode and antialiases when it shrinks.
    """
    x = _resize_axis(x, 1, int(size[0]), align_corners)
    return _resize_axis(x, 2, int(size[1]), align_corners)


def resize_nearest(labels: Array, size: Sequence[int], align_corners: bool = True) -> Array:
    """Nearest-neighbour resize of integer maps `[N, H, W]` (labels: never blends two classes)."""
    for axis, out_size in ((1, int(size[0])), (2, int(size[1]))):
        in_size = labels.shape[axis]
        if in_size == out_size:
            continue
        if align_corners:  # the nearest sample position, halves rounded up
            index = np.floor(_source_coordinates(in_size, out_size, True) + 0.5)
        else:
            index = np.floor((np.arange(out_size) + 0.5) * in_size / out_size)
        index = np.clip(index, 0, in_size - 1).astype(np.int32)
        labels = jnp.take(labels, index, axis=axis)
    return labels


# ----------------------------------------------------------------------------------------------
# Convolution + BatchNorm
# ----------------------------------------------------------------------------------------------


def channels(base: int, width: float) -> int:
    """Channel count of a layer whose full-width count is `base`, at width multiplier `width`."""
    return max(1, int(round(base * width)))


def pointwise_matmul(
    lhs: Array,
    rhs: Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> Array:
    """A 1x1 convolution of `[N, H, W, Cin]` by `[1, 1, Cin, Cout]` as a matrix product, with
    `lax.conv_general_dilated`'s signature (`nn.Conv(conv_general_dilated=...)`).

    The same values; on XLA CPU a training step of ICNet is about 13% faster this way, because
    the weight gradient of a 1x1 convolution becomes one matrix product where XLA's convolution
    gradient first transposes the activations to `[Cin, H, W, N]`. Inference and export keep
    the convolution (exporters map it onto ONNX's Conv, which int8 quantises).
    """
    no_padding = padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding)
    if rhs.shape[:2] != (1, 1) or not no_padding:
        raise ValueError(f"a 1x1 convolution without padding, got {rhs.shape} and {padding}")
    if feature_group_count != 1 or any(
        d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))
    ):
        raise ValueError("a 1x1 convolution without groups or dilation")
    s0, s1 = window_strides
    if s0 > 1 or s1 > 1:
        lhs = lhs[:, ::s0, ::s1, :]
    return jax.lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())), precision=precision)


class ConvBN(nn.Module):
    """Convolution (no bias) + BatchNorm (eps 1e-5) + optional ReLU; padding as in Caffe.

    With `fold_bn=True` the layer is the inference form of the release: a convolution with bias
    and no BatchNorm (see `icnet_jax.models.folding`). `transpose=True` makes it a stride-2
    deconvolution of output size `2 * in - 1` (paper Table 3). `frozen_layers` names the
    top-level layers (the first name of a module's path; '*': every layer) whose BatchNorm
    normalises with its running statistics in training too and never updates them (mmseg's
    `norm_eval`): statistics loaded from a file, above all the placeholders of BN-folded weights
    (mean 0, variance 1 - eps), which batch statistics would replace by different ones.
    """

    features: int
    kernel_size: int = 1
    strides: int = 1
    dilation: int = 1
    relu: bool = True
    transpose: bool = False
    fold_bn: bool = False
    bn_momentum: float = 0.95  # the release's (config.model.bn_momentum)
    axis_name: str | None = None
    dtype: Any = jnp.float32
    frozen_layers: tuple[str, ...] = ()

    @property
    def frozen(self) -> bool:
        """Whether this layer's BatchNorm statistics are frozen (see the class docstring)."""
        top = self.path[0] if self.path else self.name
        return "*" in self.frozen_layers or top in self.frozen_layers

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        k, s, d = self.kernel_size, self.strides, self.dilation
        pad = d * (k - 1) // 2
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
        if self.transpose:
            x = nn.ConvTranspose(
                self.features,
                (k, k),
                strides=(s, s),
                padding=[(pad, pad)] * 2,
                use_bias=self.fold_bn,
                kernel_init=init,
                dtype=self.dtype,
                name="conv",
            )(x)
        else:
            x = nn.Conv(
                self.features,
                (k, k),
                strides=(s, s),
                padding=[(pad, pad)] * 2,
                kernel_dilation=(d, d),
                conv_general_dilated=pointwise_matmul if k == 1 and train else None,
                use_bias=self.fold_bn,
                kernel_init=init,
                dtype=self.dtype,
                name="conv",
            )(x)
        if not self.fold_bn:
            x = nn.BatchNorm(
                use_running_average=not train or self.frozen,
                momentum=self.bn_momentum,
                epsilon=BN_EPSILON,
                axis_name=self.axis_name,
                dtype=self.dtype,
                name="bn",
            )(x)
        return nn.relu(x) if self.relu else x


def classifier(
    num_classes: int, name: str, dtype: Any = jnp.float32, matmul: bool = False
) -> nn.Conv:
    """A 1x1 convolution with bias producing logits; `matmul`: computed as `pointwise_matmul`
    (for training)."""
    conv = pointwise_matmul if matmul else None
    return nn.Conv(num_classes, (1, 1), dtype=dtype, name=name, conv_general_dilated=conv)


# ----------------------------------------------------------------------------------------------
# Pyramid pooling
# ----------------------------------------------------------------------------------------------


class SumPyramidPooling(nn.Module):
    """ICNet's pyramid pooling: each pooled map resized back and SUMMED with the input.

    No convolutions and no concatenation, so it costs almost nothing: `[N, H, W, C] -> same`.
    """

    bins: Sequence[int] = (1, 2, 3, 6)
    align_corners: bool = True

    def __call__(self, x: Array) -> Array:
        size = x.shape[1:3]
        out = x
        for b in self.bins:
            out = out + resize_bilinear(pyramid_average_pool(x, b), size, self.align_corners)
        return out


class ConcatPyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: per bin a 1x1 conv to C/4, resize, concatenate, 3x3 conv.

    `[N, H, W, C] -> [N, H, W, features]`.
    """

    conv_bn: ModuleDef
    features: int
    bins: Sequence[int] = (1, 2, 3, 6)
    align_corners: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        size = x.shape[1:3]
        branches = [x]
        for b in self.bins:
            y = pyramid_average_pool(x, b)
            y = self.conv_bn(x.shape[-1] // len(self.bins), name=f"conv5_3_pool{b}_conv")(y, train)
            branches.append(resize_bilinear(y, size, self.align_corners))
        x = jnp.concatenate(branches, axis=-1)
        return self.conv_bn(self.features, 3, name="conv5_4")(x, train)


# ----------------------------------------------------------------------------------------------
# Cascade feature fusion
# ----------------------------------------------------------------------------------------------


class CascadeFeatureFusion(nn.Module):
    """The CFF unit (paper Sec. 3.3, Fig. 3).

    F1 (low resolution) is upsampled to F2's size and refined by `low` (3x3 dilation-2 conv + BN,
    or a deconvolution + BN), F2 is projected by `high` (1x1 conv + BN); the sum goes through a
    ReLU. For cascade label guidance (Sec. 3.4) `guide` classifies the upsampled F1.

    `low`, `high` and `guide` are created by the parent so that their parameters keep the
    release's names (e.g. `conv_sub4`, `conv3_1_sub2_proj`, `conv6_sub4`).
    """

    low: nn.Module
    high: nn.Module
    guide: nn.Module
    deconv: bool = False
    align_corners: bool = True

    def upsample(self, f1: Array, size: Sequence[int]) -> Array:
        return resize_bilinear(f1, size, self.align_corners)

    def label_guidance(self, f1: Array, size: Sequence[int]) -> Array:
        """Logits of the upsampled F1: `[N, h, w, C1] -> [N, size[0], size[1], classes]`."""
        return self.guide(self.upsample(f1, size))

    def __call__(self, f1: Array, f2: Array, train: bool = False) -> Array:
        """`f1 [N, h, w, C1]`, `f2 [N, H, W, C2]` (H about 2h) -> fused `[N, H, W, C3]`."""
        size = f2.shape[1:3]
        if self.deconv:
            # A stride-2 deconvolution gives 2h - 1; other geometries differ by a pixel.
            low = self.upsample(self.low(f1, train), size)
        else:
            low = self.low(self.upsample(f1, size), train)
        return nn.relu(low + self.high(f2, train))
