"""What a config says about the network's input: augmentation, normalisation, evaluation size.

One record, built once from `config.input` and `config.ignore_label` and handed to the
augmentation, the pipelines and the evaluation, instead of the same keywords spelled out at
every call.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import ml_collections


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input settings of a config.

    Attributes:
      crop_size: training crop `(height, width)` in pixels.
      scale_range: `(low, high)` random resize factors; `(1.0, 1.0)` turns resizing off.
      mirror: whether training flips left-right with probability 1/2.
      photometric: mmseg's photometric distortion of training crops.
      mean: per-channel mean in RGB order, 0..255 units (subtracted; also the padding's fill).
      std: per-channel divisor in RGB order.
      bgr: whether the network takes B, G, R (the released Caffe model) instead of R, G, B.
      ignore_label: label of unlabelled and padded pixels.
      eval_size: `(height, width)` evaluation resizes to; None = native resolution.
    """

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    mirror: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool
    ignore_label: int = 255
    photometric: bool = False
    eval_size: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> InputSpec:
        """The record of `config.input` and `config.ignore_label`."""
        cfg = config.input
        return cls(
            crop_size=_pair(_ints(cfg.crop_size)),
            scale_range=_pair(_floats(cfg.scale_range)),
            mirror=bool(cfg.mirror),
            mean=_floats(cfg.mean),
            std=_floats(cfg.std),
            bgr=bool(cfg.bgr),
            ignore_label=int(config.ignore_label),
            photometric=bool(cfg.get("photometric", False)),
            eval_size=_ints(cfg.eval_size) if cfg.get("eval_size") else None,
        )


_T = TypeVar("_T")


def _ints(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _pair(values: tuple[_T, ...]) -> tuple[_T, _T]:
    """The two values of a pair (config_checks has refused any other length)."""
    first, second = values
    return first, second
