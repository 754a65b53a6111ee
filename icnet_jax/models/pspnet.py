"""PSPNet50 (Zhao et al., CVPR 2017): the baseline of the ICNet paper (Tables 1 and 2)."""

from __future__ import annotations

import flax.linen as nn
import jax

from icnet_jax.models import backbone
from icnet_jax.models.layers import (
    ConcatPyramidPooling,
    channels,
    classifier,
    resize_bilinear,
)

Array = jax.Array

# Output stride -> (stride, dilation) of stages 4 and 5 (paper Table 1 left: 8, 16, 32).
_STAGE_GEOMETRY = {8: ((1, 2), (1, 4)), 16: ((2, 1), (1, 2)), 32: ((2, 1), (2, 1))}


class PSPNet(backbone.SegmentationNetwork):
    """PSPNet50 with its concatenating pyramid pooling module.

    Input: images `[N, H, W, 3]` float32 (normalised as the config says), any size.
    - `train=False`: logits `[N, H, W, num_classes]`.
    - `train=True` (with `mutable=['batch_stats']`): `{'psp': logits of the main head,
      'aux': logits of the auxiliary head on conv4}`, both at 1/`output_stride`.

    Attributes (besides those of `backbone.SegmentationNetwork`; `width` 1.0 is PSPNet50, 0.5
    the half-width baseline of Table 2):
      output_stride: 8, 16 or 32.
    Dropout before the classifier is left out, as in the ICNet release.
    """

    output_stride: int = 8

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array | dict[str, Array]:
        if self.output_stride not in _STAGE_GEOMETRY:
            raise ValueError(f"output_stride must be one of {sorted(_STAGE_GEOMETRY)}")
        conv_bn = self.conv_bn
        (s4, d4), (s5, d5) = _STAGE_GEOMETRY[self.output_stride]
        h, w = images.shape[1:3]
        x = backbone.stem(images.astype(self.dtype), conv_bn, self.width, train, trunk=self.trunk)
        x = backbone.residual_stage(x, conv_bn, 2, self.width, train, trunk=self.trunk)
        x = backbone.residual_stage(x, conv_bn, 3, self.width, train, strides=2, trunk=self.trunk)
        conv4 = backbone.residual_stage(
            x, conv_bn, 4, self.width, train, strides=s4, dilation=d4, trunk=self.trunk
        )
        x = backbone.residual_stage(
            conv4, conv_bn, 5, self.width, train, strides=s5, dilation=d5, trunk=self.trunk
        )
        x = ConcatPyramidPooling(
            conv_bn, channels(512, self.width), align_corners=self.align_corners, name="ppm"
        )(x, train)
        logits = classifier(self.num_classes, "conv6", self.dtype, matmul=train)(x)
        if train or self.is_initializing():
            aux = conv_bn(channels(256, self.width), 3, name="conv4_aux")(conv4, train)
            aux_logits = classifier(self.num_classes, "conv6_aux", self.dtype, matmul=train)(aux)
            if train:
                return {"psp": logits, "aux": aux_logits}
        return resize_bilinear(logits, (h, w), self.align_corners)
