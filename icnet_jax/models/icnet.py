"""ICNet (Zhao et al., ECCV 2018) as the authors released it for Cityscapes."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from icnet_jax.models import backbone
from icnet_jax.models.layers import (
    CascadeFeatureFusion,
    SumPyramidPooling,
    channels,
    classifier,
    resize_bilinear,
    shrink_size,
    zoom_size,
)

Array = jax.Array

BRANCHES = ("sub4", "sub24", "sub124")
ALL_BRANCHES = "all"
CFF_UPSAMPLING = ("bilinear", "deconv3", "deconv5", "deconv7")
# Heads used only for cascade label guidance in training; the released (inference) model has
# no such tensors.
TRAINING_ONLY_LAYERS = ("conv6_sub4", "conv6_sub2")


class ICNet(backbone.SegmentationNetwork):
    """Image cascade network.

    Input: images `[N, H, W, 3]` float32, normalised as the config says (for the released weights:
    BGR minus the ImageNet mean, no scaling), any H and W (the release used 1025x2049; sizes 32k+1
    reproduce its geometry exactly).

    - `train=False`: logits `[N, H, W, num_classes]` of the branch setting `branch`: 'sub4' (low
      resolution branch only), 'sub24' (plus the medium branch) or 'sub124' (all three: the
      network). Branches not needed are not computed. `branch='all'` gives a dict of the three
      (for evaluating every branch in one pass).
    - `train=True` (call with `mutable=['batch_stats']`): a dict of logits of every branch at
      their own resolution for cascade label guidance: 'sub4' at 1/16, 'sub24' at 1/8 and 'sub124'
      at 1/4 of the input.

    Attributes (besides those of `backbone.SegmentationNetwork`):
      width: channel multiplier; 0.5 (the default) is the released network, 1.0 the full width
        it was pruned from (paper Table 1 right: 1, 0.5, 0.25).
      branch: the inference output (paper Table 2).
      cff_upsampling: 'bilinear' (x2 bilinear + 3x3 dilated conv, the paper's CFF) or 'deconvK'
        (a KxK stride-2 deconvolution; paper Table 3).
    """

    width: float = 0.5
    branch: str = "sub124"
    cff_upsampling: str = "bilinear"

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array | dict[str, Array]:
        if self.branch not in (*BRANCHES, ALL_BRANCHES):
            raise ValueError(f"branch must be one of {BRANCHES} or 'all', got {self.branch!r}")
        if self.cff_upsampling not in CFF_UPSAMPLING:
            raise ValueError(f"cff_upsampling must be one of {CFF_UPSAMPLING}")
        conv_bn = self.conv_bn
        resize = functools.partial(resize_bilinear, align_corners=self.align_corners)
        head = functools.partial(classifier, self.num_classes, dtype=self.dtype, matmul=train)
        cff1 = self._cff(conv_bn, head, 4, "conv_sub4", "conv3_1_sub2_proj", "conv6_sub4")
        cff2 = self._cff(conv_bn, head, 2, "conv_sub2", "conv3_sub1_proj", "conv6_sub2")
        # init builds every layer whatever the branch setting, so one checkpoint serves all.
        every = train or self.is_initializing() or self.branch == ALL_BRANCHES
        wanted = BRANCHES if every else (self.branch,)
        deepest = wanted[-1]
        h, w = images.shape[1:3]
        images = images.astype(self.dtype)

        # Medium and low resolution branches share conv1..conv3_1, computed once at 1/2.
        x = resize(images, (shrink_size(h), shrink_size(w)))
        x = backbone.stem(x, conv_bn, self.width, train, trunk=self.trunk)
        x = backbone.residual_stage(x, conv_bn, 2, self.width, train, trunk=self.trunk)
        conv3_1 = backbone.residual_stage(
            x, conv_bn, 3, self.width, train, strides=2, blocks=range(1, 2), trunk=self.trunk
        )
        # Low resolution branch: features of conv3_1 shrunk x2 (1/32 of the input).
        x = resize(conv3_1, tuple(shrink_size(n) for n in conv3_1.shape[1:3]))
        x = backbone.residual_stage(
            x, conv_bn, 3, self.width, train, blocks=range(2, 5), trunk=self.trunk
        )
        x = backbone.residual_stage(x, conv_bn, 4, self.width, train, dilation=2, trunk=self.trunk)
        x = backbone.residual_stage(x, conv_bn, 5, self.width, train, dilation=4, trunk=self.trunk)
        x = SumPyramidPooling(align_corners=self.align_corners)(x)
        conv5_4 = conv_bn(channels(512, self.width), 1, name="conv5_4_k1")(x, train)

        def zoomed(f: Array) -> tuple[int, ...]:
            return tuple(zoom_size(n, 2, self.align_corners) for n in f.shape[1:3])

        logits = {}
        if "sub4" in wanted:
            logits["sub4"] = cff1.label_guidance(conv5_4, conv3_1.shape[1:3])
        if deepest == "sub4":
            return self._output(logits, train, (h, w))
        fused24 = cff1(conv5_4, conv3_1, train)
        if "sub24" in wanted:
            logits["sub24"] = cff2.label_guidance(fused24, zoomed(fused24))
        if deepest == "sub24":
            return self._output(logits, train, (h, w))

        # High resolution branch: three stride-2 convs on the full image (1/8).
        c1, c2, c3 = (channels(c, self.width) for c in (64, 64, 128))
        y = conv_bn(c1, 3, strides=2, name="conv1_sub1")(images, train)
        y = conv_bn(c2, 3, strides=2, name="conv2_sub1")(y, train)
        y = conv_bn(c3, 3, strides=2, name="conv3_sub1")(y, train)
        fused124 = cff2(fused24, y, train)
        logits["sub124"] = head(name="conv6_cls")(resize(fused124, zoomed(fused124)))
        return self._output(logits, train, (h, w))

    def _output(self, logits: dict[str, Array], train: bool, size: tuple[int, int]):
        if train:
            return logits
        if self.branch == ALL_BRANCHES:
            return {k: resize_bilinear(v, size, self.align_corners) for k, v in logits.items()}
        return resize_bilinear(logits[self.branch], size, self.align_corners)

    def _cff(self, conv_bn, head, level: int, low: str, high: str, guide: str):
        """The CFF unit fusing the 1/(4 level) branch into the 1/(2 level) one."""
        features = channels(256, self.width)
        if self.cff_upsampling == "bilinear":
            low_layer = conv_bn(features, 3, dilation=2, relu=False, name=low)
        else:
            k = int(self.cff_upsampling.removeprefix("deconv"))
            low_layer = conv_bn(features, k, strides=2, transpose=True, relu=False, name=low)
        return CascadeFeatureFusion(
            low=low_layer,
            high=conv_bn(features, 1, relu=False, name=high),
            guide=head(name=guide),
            deconv=self.cff_upsampling != "bilinear",
            align_corners=self.align_corners,
            name=f"cff_sub{level}",
        )
