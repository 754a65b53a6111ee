"""The PSPNet50 trunk (dilated ResNet-50 with a three-conv stem), shared by ICNet and PSPNet.

Layers are created in the caller's scope with the release's names (`conv1_1_3x3_s2`,
`conv3_1/1x1_reduce`, ...), so parameter trees read like the authors' network definitions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from icnet_jax.models.layers import ConvBN, channels, max_pool_ceil

Array = jax.Array
ConvBNDef = Callable[..., ConvBN]

# Full-width (width 1.0) channels: stem convs, then per stage (bottleneck, output).
STEM_CHANNELS = (64, 64, 128)
STAGE_CHANNELS = {2: (64, 256), 3: (128, 512), 4: (256, 1024), 5: (512, 2048)}
STAGE_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}


class SegmentationNetwork(nn.Module):
    """The attributes ICNet and PSPNet share, and the `conv_bn` they build their layers with.

    Attributes:
      num_classes: number of output classes.
      width: channel multiplier (1.0: PSPNet50's channels).
      align_corners: resizing convention; True is the release's.
      fold_bn: the inference form with BatchNorm folded into the convolutions (see `folding`).
      bn_momentum: decay of BatchNorm's running averages.
      axis_name: pmap axis over which BatchNorm statistics are averaged in training.
      dtype: computation dtype (parameters stay float32).
    """

    num_classes: int = 19
    width: float = 1.0
    align_corners: bool = True
    fold_bn: bool = False
    bn_momentum: float = 0.9
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @property
    def conv_bn(self) -> ConvBNDef:
        return functools.partial(
            ConvBN,
            fold_bn=self.fold_bn,
            bn_momentum=self.bn_momentum,
            axis_name=self.axis_name,
            dtype=self.dtype,
        )


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1x1 reduce (carries the stride, as in the release), 3x3 (dilated),
    1x1 increase, plus a 1x1 projection when `project`; sum, then ReLU.
    `[N, H, W, C] -> [N, H / stride, W / stride, features]`.
    """

    conv_bn: ConvBNDef
    bottleneck: int
    features: int
    strides: int = 1
    dilation: int = 1
    project: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        shortcut = x
        if self.project:
            shortcut = self.conv_bn(
                self.features, 1, strides=self.strides, relu=False, name="1x1_proj"
            )(x, train)
        y = self.conv_bn(self.bottleneck, 1, strides=self.strides, name="1x1_reduce")(x, train)
        y = self.conv_bn(self.bottleneck, 3, dilation=self.dilation, name="3x3")(y, train)
        y = self.conv_bn(self.features, 1, relu=False, name="1x1_increase")(y, train)
        return nn.relu(y + shortcut)


def stem(x: Array, conv_bn: ConvBNDef, width: float, train: bool) -> Array:
    """conv1_1 (3x3 stride 2), conv1_2, conv1_3, then 3x3 stride-2 max pool: 1/4 of `x`."""
    c1, c2, c3 = (channels(c, width) for c in STEM_CHANNELS)
    x = conv_bn(c1, 3, strides=2, name="conv1_1_3x3_s2")(x, train)
    x = conv_bn(c2, 3, name="conv1_2_3x3")(x, train)
    x = conv_bn(c3, 3, name="conv1_3_3x3")(x, train)
    return max_pool_ceil(x)


def residual_stage(
    x: Array,
    conv_bn: ConvBNDef,
    stage: int,
    width: float,
    train: bool,
    *,
    strides: int = 1,
    dilation: int = 1,
    blocks: range | None = None,
) -> Array:
    """Bottlenecks `conv{stage}_{i}` for i in `blocks` (default: the whole stage).

    Block 1 carries the projection and the stride. ICNet runs conv3_1 and conv3_2..4 at different
    resolutions, hence `blocks`.
    """
    bottleneck, features = (channels(c, width) for c in STAGE_CHANNELS[stage])
    for i in blocks or range(1, STAGE_BLOCKS[stage] + 1):
        first = i == 1
        x = Bottleneck(
            conv_bn,
            bottleneck,
            features,
            strides=strides if first else 1,
            dilation=dilation,
            project=first,
            name=f"conv{stage}_{i}",
        )(x, train)
    return x
