"""The PSPNet50 trunk (dilated ResNet-50 with a three-conv stem), shared by ICNet and PSPNet.

Layers are created in the caller's scope with the release's names (`conv1_1_3x3_s2`,
`conv3_1/1x1_reduce`, ...), so parameter trees read like the authors' network definitions.

`Trunk` switches the three places where the ImageNet ResNet-50s people download differ from the
release's trunk, so that their weights load exactly (`icnet_jax.weights.imagenet`); the defaults are
the release:
- `stem`: 'release' (3x3 convs 64/64/128, the first stride 2, then a 3x3/2 max pool in Caffe's
  ceil mode), 'resnet' (one 7x7/2 conv `conv1_7x7_s2` of 64, then a 3x3/2 max pool with pad 1 in
  PyTorch's floor mode: torchvision, timm `resnet50`) or 'deep' (3x3 convs 32/32/64 with the same
  names as the release's, then the floor-mode pool: timm `resnet50c/d`, mmseg `ResNetV1c/d`).
  On odd image sides (the release's 8k+1 geometry) all three give the same map sizes.
- `stride_on`: which conv of a strided bottleneck carries the stride: '1x1' (the reduce conv:
  Caffe's ResNet, the release) or '3x3' (ResNet v1.5: torchvision, timm, mmseg 'pytorch' style).
- `shortcut`: the projection of a stage's first block: 'conv' (a strided 1x1 conv) or 'avgpool'
  (a 2x2/2 average pool, ceil mode, padding not counted, then a 1x1 conv: timm `resnet50d`,
  mmseg `ResNetV1d`; a block without stride, including those of dilated stages, has no pool,
  as in mmseg).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from icnet_jax.models.layers import ConvBN, channels
from icnet_jax.models.pooling import avg_pool_ceil, max_pool_ceil, max_pool_floor

Array = jax.Array
ConvBNDef = Callable[..., ConvBN]

# Full-width (width 1.0) channels per stage: (bottleneck, output).
STAGE_CHANNELS = {2: (64, 256), 3: (128, 512), 4: (256, 1024), 5: (512, 2048)}
STAGE_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}
# Stem conv names and full-width channels per stem kind (see the module docstring).
STEM_LAYERS = {
    "release": (("conv1_1_3x3_s2", 3, 64), ("conv1_2_3x3", 3, 64), ("conv1_3_3x3", 3, 128)),
    "resnet": (("conv1_7x7_s2", 7, 64),),
    "deep": (("conv1_1_3x3_s2", 3, 32), ("conv1_2_3x3", 3, 32), ("conv1_3_3x3", 3, 64)),
}
STRIDE_ON = ("1x1", "3x3")
SHORTCUTS = ("conv", "avgpool")


class Trunk(NamedTuple):
    """The trunk's architecture switches (module docstring); the defaults are the release's."""

    stem: str = "release"
    stride_on: str = "1x1"
    shortcut: str = "conv"

    def check(self) -> Trunk:
        for name, value, known in (
            ("stem", self.stem, tuple(STEM_LAYERS)),
            ("stride_on", self.stride_on, STRIDE_ON),
            ("shortcut", self.shortcut, SHORTCUTS),
        ):
            if value not in known:
                raise ValueError(f"{name} must be one of {known}, got {value!r}")
        return self


RELEASE = Trunk()
FROZEN_BN = ("none", "trunk", "all")


def trunk_layer_names(trunk: Trunk) -> tuple[str, ...]:
    """Top-level names of the trunk's layers: the stem's convs and the bottlenecks."""
    stem_names = tuple(name for name, _, _ in STEM_LAYERS[trunk.stem])
    blocks = tuple(f"conv{s}_{i}" for s, n in STAGE_BLOCKS.items() for i in range(1, n + 1))
    return stem_names + blocks


def frozen_layers(frozen_bn: str, trunk: Trunk) -> tuple[str, ...]:
    """`ConvBN.frozen_layers` of a network whose `frozen_bn` is one of `FROZEN_BN`."""
    if frozen_bn not in FROZEN_BN:
        raise ValueError(f"frozen_bn must be one of {FROZEN_BN}, got {frozen_bn!r}")
    return {"none": (), "trunk": trunk_layer_names(trunk), "all": ("*",)}[frozen_bn]


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
      frozen_bn: which layers' BatchNorm uses and keeps its running statistics in training too
        (those loaded from a file): 'none', 'trunk' (the stem and conv2_1 ... conv5_3) or 'all'.
      stem, stride_on, shortcut: the trunk's architecture (`Trunk`); defaults: the release.
    """

    num_classes: int = 19
    width: float = 1.0
    align_corners: bool = True
    fold_bn: bool = False
    bn_momentum: float = 0.95  # the release's (config.model.bn_momentum)
    axis_name: str | None = None
    dtype: Any = jnp.float32
    frozen_bn: str = "none"
    stem: str = "release"
    stride_on: str = "1x1"
    shortcut: str = "conv"

    @property
    def conv_bn(self) -> ConvBNDef:
        return functools.partial(
            ConvBN,
            fold_bn=self.fold_bn,
            bn_momentum=self.bn_momentum,
            axis_name=self.axis_name,
            dtype=self.dtype,
            frozen_layers=frozen_layers(self.frozen_bn, self.trunk),
        )

    @property
    def trunk(self) -> Trunk:
        return Trunk(self.stem, self.stride_on, self.shortcut).check()


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1x1 reduce, 3x3 (dilated), 1x1 increase, plus a projection when
    `project`; sum, then ReLU. The stride is on the 1x1 reduce (the release) or on the 3x3
    (`trunk.stride_on`). `[N, H, W, C] -> [N, H / stride, W / stride, features]`.
    """

    conv_bn: ConvBNDef
    bottleneck: int
    features: int
    strides: int = 1
    dilation: int = 1
    project: bool = False
    trunk: Trunk = RELEASE

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        s = self.strides
        shortcut = x
        if self.project:
            if self.trunk.shortcut == "avgpool" and s > 1:
                shortcut = avg_pool_ceil(x, s)
                s_proj = 1
            else:
                s_proj = s
            shortcut = self.conv_bn(self.features, 1, strides=s_proj, relu=False, name="1x1_proj")(
                shortcut, train
            )
        s1, s3 = (s, 1) if self.trunk.stride_on == "1x1" else (1, s)
        y = self.conv_bn(self.bottleneck, 1, strides=s1, name="1x1_reduce")(x, train)
        y = self.conv_bn(self.bottleneck, 3, strides=s3, dilation=self.dilation, name="3x3")(
            y, train
        )
        y = self.conv_bn(self.features, 1, relu=False, name="1x1_increase")(y, train)
        return nn.relu(y + shortcut)


def stem(x: Array, conv_bn: ConvBNDef, width: float, train: bool, trunk: Trunk = RELEASE) -> Array:
    """The stem convs (the first with stride 2), then a 3x3 stride-2 max pool: 1/4 of `x`.

    'release': conv1_1_3x3_s2, conv1_2_3x3, conv1_3_3x3 (64, 64, 128) and a ceil-mode pool;
    'resnet': conv1_7x7_s2 (64); 'deep': the release's three convs at 32, 32, 64; the last two
    with PyTorch's floor-mode pool.
    """
    for i, (name, k, c) in enumerate(STEM_LAYERS[trunk.stem]):
        x = conv_bn(channels(c, width), k, strides=2 if i == 0 else 1, name=name)(x, train)
    pool = max_pool_ceil if trunk.stem == "release" else max_pool_floor
    return pool(x, unrolled=train)


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
    trunk: Trunk = RELEASE,
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
            trunk=trunk,
            name=f"conv{stage}_{i}",
        )(x, train)
    return x
