"""Sliding-window inference for images too large to segment whole (mmsegmentation's `slide` mode).

Windows of `size` start every `stride` pixels; the last row and column of windows is shifted back
to end at the border, so no window leaves the image and every pixel is covered; a window larger
than the image is cut to the image. Each window goes through the network alone (with the
test-time scales and flips, at its own resolution: `input.eval_size` describes whole frames, not
windows); the class probabilities of overlapping windows are summed and divided by the number of
windows that cover each pixel (the count map), then the class ids taken.

Memory: one window's activations on the device, and on the host the averaged probabilities of
one band of rows (about a window high x the image width x classes, float32): a finished band
(rows no later window reaches) is turned into class ids and dropped. The whole image's
probabilities, [H, W, C] float32, are never held: 4.5 GiB for 19 classes at 8000x8000.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from icnet_jax import errors
from icnet_jax.inference import multiscale as test_time

# Above this many pixels predict.py segments an image in windows (4096x4096; a 4K UHD frame and a
# Cityscapes frame stay whole).
MAX_PIXELS = 4096 * 4096
# mmsegmentation's Cityscapes windows: 512x1024 every 341x683 pixels, two thirds of the size.
STRIDE_FRACTION = 2 / 3

WindowFn = Callable[[np.ndarray], np.ndarray]  # image window [h, w, 3] -> probabilities [h, w, C]


class OutOfMemoryError(errors.UserError):
    """Segmenting an image ran out of memory; the message names the flags that avoid it."""


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Windows of `size` (height, width) every `stride` (height, width) pixels."""

    size: tuple[int, int]
    stride: tuple[int, int]

    def describe(self) -> str:
        return f"{self.size[0]}x{self.size[1]} windows every {self.stride[0]}x{self.stride[1]}"


@dataclasses.dataclass(frozen=True)
class TilePolicy:
    """When and how predict.py tiles: always with `size` given (`--tile`), else above
    `max_pixels` (0: never) in windows of `default_size` (the checkpoint's training crop).
    `stride` None: two thirds of the window."""

    size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    max_pixels: int = MAX_PIXELS
    default_size: tuple[int, int] | None = None

    def for_checkpoint(self, crop_size: Sequence[int]) -> TilePolicy:
        """This policy with `crop_size` as the default window unless one is set; checks that
        the stride leaves no pixel uncovered."""
        policy = self
        if policy.default_size is None:
            policy = dataclasses.replace(policy, default_size=tuple(crop_size))
        window = policy.size or policy.default_size
        if policy.stride is not None and any(
            s > n for s, n in zip(policy.stride, window, strict=True)
        ):
            raise errors.UserError(
                f"--tile_stride={policy.stride[0]},{policy.stride[1]}: larger than the window "
                f"{window[0]}x{window[1]} would leave pixels no window covers; give a stride no "
                "larger than the window (--tile)"
            )
        return policy

    def tiling_for(self, shape: Sequence[int]) -> Tiling | None:
        """The tiling of an image of `shape` (H, W, ...), or None to segment it whole."""
        h, w = shape[:2]
        size = self.size
        if size is None:
            if not self.max_pixels or h * w <= self.max_pixels:
                return None
            size = self.default_size or (1025, 1025)
        stride = self.stride or tuple(max(1, round(n * STRIDE_FRACTION)) for n in size)
        return Tiling(tuple(size), tuple(stride))  # type: ignore[arg-type]


def parse_pair(text: str, flag: str) -> tuple[int, int]:
    """`'H,W'` (or `'N'`: N,N) -> two positive ints; else a UserError naming `flag`."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise errors.UserError(f"{flag}={text}: expected two positive integers HEIGHT,WIDTH")
    return values  # type: ignore[return-value]


def make_policy(tile: str, stride: str, max_pixels: int) -> TilePolicy:
    """predict.py's `--tile`, `--tile_stride` and `--max_pixels` as a TilePolicy, checked (the
    stride against the default window once the checkpoint gives it: `for_checkpoint`)."""
    if max_pixels < 0:
        raise errors.UserError(f"--max_pixels={max_pixels}: must be >= 0 (0: never tile)")
    size = parse_pair(tile, "--tile") if tile else None
    policy = TilePolicy(size, parse_pair(stride, "--tile_stride") if stride else None, max_pixels)
    return policy.for_checkpoint(size) if size else policy


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First pixels of the windows along one axis (mmseg: the last shifted to end at `length`)."""
    window = min(window, length)
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, length - window) for i in range(count)]


def averaged_bands(
    image: np.ndarray, window_fn: WindowFn, tiling: Tiling
) -> Iterator[tuple[int, np.ndarray]]:
    """`(first row, averaged probabilities [rows, W, C])` of consecutive bands of `image`
    `[H, W, ...]`, top to bottom, each final (no later window reaches it)."""
    h, w = image.shape[:2]
    ys = window_starts(h, tiling.size[0], tiling.stride[0])
    xs = window_starts(w, tiling.size[1], tiling.stride[1])
    wh, ww = min(tiling.size[0], h), min(tiling.size[1], w)
    top, sums, counts = 0, None, None
    for y in ys:
        if sums is not None and y > top:  # rows above y are final
            yield top, sums[: y - top] / counts[: y - top, :, None]
            sums, counts, top = sums[y - top :], counts[y - top :], y
        for x in xs:
            p = np.asarray(window_fn(image[y : y + wh, x : x + ww]), np.float32)
            if sums is None:
                sums, counts = np.zeros((0, w, p.shape[-1]), np.float32), np.zeros((0, w))
            missing = y - top + wh - sums.shape[0]
            if missing > 0:  # the band reaches rows below those held
                sums = np.concatenate([sums, np.zeros((missing, *sums.shape[1:]), np.float32)])
                counts = np.concatenate([counts, np.zeros((missing, w))])
            sums[y - top : y - top + wh, x : x + ww] += p
            counts[y - top : y - top + wh, x : x + ww] += 1
    assert sums is not None and counts is not None
    yield top, sums / counts[..., None]


def segment(image: np.ndarray, window_fn: WindowFn, tiling: Tiling, dtype: Any) -> np.ndarray:
    """Class ids `[H, W]` (`dtype`) of `image` `[H, W, 3]`, window by window (module docstring)."""
    labels = np.empty(image.shape[:2], dtype)
    for top, probabilities in averaged_bands(image, window_fn, tiling):
        labels[top : top + probabilities.shape[0]] = probabilities.argmax(-1)
    return labels


def make_window_fn(
    model: nn.Module,
    variables: Any,
    prepare: Callable[[np.ndarray], np.ndarray],
    *,
    align_corners: bool = True,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> WindowFn:
    """`window [h, w, 3] -> probabilities [h, w, C]` of the model's (single) output: `prepare`
    (normalisation) on the host, then the test-time scales and flips of `average_probabilities`,
    jitted (every window of an image has one shape: one compilation)."""
    tta = dict(align_corners=align_corners, scales=tuple(scales), flip=flip)

    @jax.jit
    def probabilities(variables, images):
        (p,) = test_time.average_probabilities(model, variables, images, **tta).values()
        return p[0]

    return lambda window: np.asarray(probabilities(variables, prepare(window)[None]))


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError (numpy, the host) or XLA's RESOURCE_EXHAUSTED (an allocation that failed)."""
    return isinstance(error, MemoryError) or (
        isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
    )


def out_of_memory_error(
    shape: Sequence[int], tiling: Tiling | None, policy: TilePolicy
) -> OutOfMemoryError:
    """What to do when an image of `shape` ran out of memory, whole (`tiling` None) or tiled."""
    h, w = shape[:2]
    if tiling is None:
        size = policy.default_size or (1025, 1025)
        return OutOfMemoryError(
            f"out of memory segmenting a {h}x{w} image whole; segment it in windows: "
            f"--tile={size[0]},{size[1]} (or a --max_pixels below {h * w}, above which images "
            "are tiled)"
        )
    half = tuple(max(1, n // 2) for n in tiling.size)
    return OutOfMemoryError(
        f"out of memory segmenting a {h}x{w} image in {tiling.describe()}; give smaller "
        f"windows, e.g. --tile={half[0]},{half[1]}"
    )
