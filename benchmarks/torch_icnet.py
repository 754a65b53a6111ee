"""ICNet in PyTorch, layer for layer as `icnet_jax.models.ICNet` (the release's trunk and CFF,
align corners), written the way the public PyTorch ports write it: NCHW, `nn.Conv2d` +
`nn.BatchNorm2d`, `F.interpolate`. `benchmarks/train_step_speed.py` times its training step
against ours on the same batch and crop; `load_flax` copies a Flax variable tree into it, so a
test can check that the two are the same network (equal logits), not merely of the same size.

Needs torch (requirements-pretrained.txt). Nothing in `icnet_jax` imports this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (bottleneck, output) channels at full width and blocks per stage (the PSPNet50 trunk).
STAGES = {2: (64, 256, 3), 3: (128, 512, 4), 4: (256, 1024, 6), 5: (512, 2048, 3)}
# Strides of the released pyramid-pooling windows along an axis of 33 (icnet_jax.models.layers).
_STRIDE_AT_33 = {1: 33, 2: 16, 3: 10, 6: 5}


def _width(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _shrink(n: int) -> int:
    return (n - 1) // 2 + 1


def _zoom(n: int) -> int:
    return 2 * n - 1


class ConvBN(nn.Sequential):
    """Conv (no bias), BatchNorm (eps 1e-5, running averages decaying by 0.95), optional ReLU."""

    def __init__(
        self, cin: int, cout: int, k: int = 1, stride: int = 1, dilation: int = 1, relu: bool = True
    ):
        pad = dilation * (k - 1) // 2
        layers = [
            nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5, momentum=0.05),
        ]
        super().__init__(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck with the stride on the 1x1 reduce (Caffe's, the release's)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, dilation: int, project: bool):
        super().__init__()
        self.proj = ConvBN(cin, cout, 1, stride, relu=False) if project else None
        self.reduce = ConvBN(cin, mid, 1, stride)
        self.conv3x3 = ConvBN(mid, mid, 3, 1, dilation)
        self.increase = ConvBN(mid, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + shortcut)


def _stage(
    stage: int, width: float, cin: int, blocks: range, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    mid, cout, _ = STAGES[stage]
    mid, cout = _width(mid, width), _width(cout, width)
    layers = []
    for i in blocks:
        layers.append(
            Bottleneck(
                cin if i == 1 else cout, mid, cout, stride if i == 1 else 1, dilation, i == 1
            )
        )
    return nn.Sequential(*layers)


def _pool_window(size: int, bins: int) -> tuple[int, int]:
    """(kernel, stride) of the release's pyramid pooling windows along an axis of `size`."""
    if bins == 1:
        return size, size
    stride = max(1, round(size * _STRIDE_AT_33.get(bins, 33 / bins) / 33))
    kernel = size - stride * (bins - 1)
    if kernel < stride:
        stride = size // bins
        if stride == 0:
            return 1, 1
        kernel = size - stride * (bins - 1)
    return kernel, stride


class CFF(nn.Module):
    """Cascade feature fusion: upsample F1, 3x3 dilation-2 conv + BN; 1x1 conv + BN of F2; sum,
    ReLU. `guide` classifies the upsampled F1 (cascade label guidance)."""

    def __init__(self, c_low: int, c_high: int, features: int, classes: int):
        super().__init__()
        self.low = ConvBN(c_low, features, 3, dilation=2, relu=False)
        self.high = ConvBN(c_high, features, 1, relu=False)
        self.guide = nn.Conv2d(c_low, classes, 1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = _resize(f1, tuple(f2.shape[2:]))
        return F.relu(self.low(up) + self.high(f2)), self.guide(up)


class ICNet(nn.Module):
    """`forward(images [N, 3, H, W])` -> logits `{'sub4': 1/16, 'sub24': 1/8, 'sub124': 1/4}` in
    training mode, the sub124 logits resized to `[N, classes, H, W]` in eval mode."""

    def __init__(self, num_classes: int = 19, width: float = 0.5):
        super().__init__()
        w = lambda c: _width(c, width)  # noqa: E731
        self.stem = nn.Sequential(
            ConvBN(3, w(64), 3, 2),
            ConvBN(w(64), w(64), 3),
            ConvBN(w(64), w(128), 3),
            nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        )
        self.conv2 = _stage(2, width, w(128), range(1, 4))
        self.conv3_1 = _stage(3, width, w(256), range(1, 2), stride=2)
        self.conv3_rest = _stage(3, width, w(512), range(2, 5))
        self.conv4 = _stage(4, width, w(512), range(1, 7), dilation=2)
        self.conv5 = _stage(5, width, w(1024), range(1, 4), dilation=4)
        self.conv5_4 = ConvBN(w(2048), w(512), 1)
        self.cff1 = CFF(w(512), w(512), w(256), num_classes)
        self.sub1 = nn.Sequential(
            ConvBN(3, w(64), 3, 2), ConvBN(w(64), w(64), 3, 2), ConvBN(w(64), w(128), 3, 2)
        )
        self.cff2 = CFF(w(256), w(128), w(256), num_classes)
        self.cls = nn.Conv2d(w(256), num_classes, 1)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for bins in (1, 2, 3, 6):
            (kh, sh), (kw, sw) = (_pool_window(n, bins) for n in x.shape[2:])
            out = out + _resize(F.avg_pool2d(x, (kh, kw), (sh, sw)), tuple(x.shape[2:]))
        return out

    def forward(self, images: torch.Tensor) -> Any:
        h, w = images.shape[2:]
        x = _resize(images, (_shrink(h), _shrink(w)))
        conv3_1 = self.conv3_1(self.conv2(self.stem(x)))
        x = _resize(conv3_1, tuple(_shrink(n) for n in conv3_1.shape[2:]))
        x = self.conv5(self.conv4(self.conv3_rest(x)))
        conv5_4 = self.conv5_4(self.pyramid(x))
        fused24, sub4 = self.cff1(conv5_4, conv3_1)
        fused124, sub24 = self.cff2(fused24, self.sub1(images))
        sub24 = self.cff2.guide(_resize(fused24, tuple(_zoom(n) for n in fused24.shape[2:])))
        sub124 = self.cls(_resize(fused124, tuple(_zoom(n) for n in fused124.shape[2:])))
        if self.training:
            return {"sub4": sub4, "sub24": sub24, "sub124": sub124}
        return _resize(sub124, (h, w))


def _conv_bns(model: ICNet) -> list[tuple[str, Any]]:
    """`(Flax layer path, torch ConvBN)` in the order of `ICNet.__init__`."""
    stem_names = ("conv1_1_3x3_s2", "conv1_2_3x3", "conv1_3_3x3")
    pairs: list[tuple[str, Any]] = list(zip(stem_names, model.stem))
    stages = [
        (2, model.conv2, 1),
        (3, model.conv3_1, 1),
        (3, model.conv3_rest, 2),
        (4, model.conv4, 1),
        (5, model.conv5, 1),
    ]
    for stage, blocks, first in stages:
        for i, block in enumerate(blocks, start=first):
            prefix = f"conv{stage}_{i}"
            if block.proj is not None:
                pairs.append((f"{prefix}/1x1_proj", block.proj))
            pairs += [
                (f"{prefix}/1x1_reduce", block.reduce),
                (f"{prefix}/3x3", block.conv3x3),
                (f"{prefix}/1x1_increase", block.increase),
            ]
    pairs.append(("conv5_4_k1", model.conv5_4))
    pairs += [("conv_sub4", model.cff1.low), ("conv3_1_sub2_proj", model.cff1.high)]
    pairs += [(n, m) for n, m in zip(("conv1_sub1", "conv2_sub1", "conv3_sub1"), model.sub1)]
    pairs += [("conv_sub2", model.cff2.low), ("conv3_sub1_proj", model.cff2.high)]
    return pairs


def _at(tree: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    for key in path.split("/"):
        tree = tree[key]
    return tree


def load_flax(model: ICNet, variables: Mapping[str, Any]) -> ICNet:
    """Copies `{'params', 'batch_stats'}` of a Flax `ICNet` (BatchNorm not folded) into `model`."""
    params, stats = variables["params"], variables["batch_stats"]

    def put(tensor: torch.Tensor, value: Any) -> None:
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(np.array(value, np.float32)))

    for path, layer in _conv_bns(model):
        conv, bn = layer[0], layer[1]
        put(conv.weight, np.transpose(_at(params, path)["conv"]["kernel"], (3, 2, 0, 1)))
        put(bn.weight, _at(params, path)["bn"]["scale"])
        put(bn.bias, _at(params, path)["bn"]["bias"])
        put(bn.running_mean, _at(stats, path)["bn"]["mean"])
        put(bn.running_var, _at(stats, path)["bn"]["var"])
    heads = (
        ("conv6_sub4", model.cff1.guide),
        ("conv6_sub2", model.cff2.guide),
        ("conv6_cls", model.cls),
    )
    for path, conv in heads:
        assert conv.bias is not None  # the heads have biases
        put(conv.weight, np.transpose(_at(params, path)["kernel"], (3, 2, 0, 1)))
        put(conv.bias, _at(params, path)["bias"])
    return model


def nearest_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[N, H, W]` labels at `size` by align-corners nearest neighbour (halves rounded up), as
    `icnet_jax.models.layers.resize_nearest`."""
    for axis, out in ((1, size[0]), (2, size[1])):
        n = labels.shape[axis]
        scale = (n - 1) / (out - 1) if out > 1 else 0.0
        index = np.clip(np.floor(np.arange(out) * scale + 0.5), 0, n - 1).astype(np.int64)
        labels = np.take(labels, index, axis=axis)
    return labels


def cascade_loss(
    logits: Mapping[str, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    ignore_label: int,
) -> torch.Tensor:
    """Sum over branches of weight x mean cross entropy over the labelled pixels."""
    terms = [
        weights[k] * F.cross_entropy(logits[k], labels[k], ignore_index=ignore_label)
        for k in weights
    ]
    return torch.stack(terms).sum()
