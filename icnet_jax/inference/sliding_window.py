"""Sliding-window inference for images too large to segment whole, after mmsegmentation's
`slide` mode.

The windows see the image at the scale whole-image inference gives the network: resized to the
checkpoint's `input.eval_size` first where it has one (`segment`'s `image` is that view, and
window sizes and strides are pixels of it, as mmseg's crop size is of the resized image).
Windows of `size` start every `stride` pixels; the last row and column of windows is shifted back
to end at the border, so no window leaves the image and every pixel is covered; a window larger
than the image is cut to the image. Each window goes through the network alone; as in mmseg, the
logits of overlapping windows are summed and divided by the number of windows that cover each
pixel (the count map), then turned into probabilities by a softmax, resized to the image's own
size where it was resized (bilinear, the model's align-corners convention) and the class ids
taken. One window covering the image is whole-image inference: the same labels.

Test-time augmentation is applied per window (mmseg resizes and mirrors the whole image and
slides over each): each scale resizes the window (the logits are resized back to it), a flip
mirrors it; the windows' logits are averaged per pass, and the passes' probabilities averaged.
At scale 1, with or without flip, one covering window still gives the whole-image labels; other
scales resize the window rather than the image, so labels can differ from whole-image
inference near window borders.

Memory: one window's activations on the device, and on the host the averaged logits of one
band of rows (about a window high x the image width x classes x passes, float32): a finished
band (rows no later window reaches) is turned into class ids and dropped, so the whole image's
probabilities, [H, W, C] float32, are never held (4.5 GiB for 19 classes at 8000x8000). With an
`input.eval_size` the probabilities of the resized view are kept and resized to the image's
size at once, as whole-image inference does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax import errors
from icnet_jax.inference import test_time
from icnet_jax.models.layers import resize_bilinear

# Above this many pixels predict.py segments an image in windows (4096x4096; a 4K UHD frame and a
# Cityscapes frame stay whole).
MAX_PIXELS = 4096 * 4096
# mmsegmentation's Cityscapes windows: 512x1024 every 341x683 pixels, two thirds of the size.
STRIDE_FRACTION = 2 / 3

# A window [h, w, 3] of the image as the network sees it -> logits [h, w, passes, C].
WindowFn = Callable[[np.ndarray], np.ndarray]


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
            policy = dataclasses.replace(policy, default_size=(crop_size[0], crop_size[1]))
        window = policy.size or policy.default_size
        assert window is not None  # set just above
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
    """`(first row, averaged window outputs [rows, W, ...])` of consecutive bands of `image`
    `[H, W, ...]`, top to bottom, each final (no later window reaches it): the sum of the
    outputs of the windows covering each pixel divided by their number."""
    h, w = image.shape[:2]
    ys = window_starts(h, tiling.size[0], tiling.stride[0])
    xs = window_starts(w, tiling.size[1], tiling.stride[1])
    wh, ww = min(tiling.size[0], h), min(tiling.size[1], w)
    top = 0
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    for y in ys:
        if sums is not None and counts is not None and y > top:  # rows above y are final
            yield top, sums[: y - top] / _expand(counts[: y - top], sums.ndim)
            sums, counts, top = sums[y - top :], counts[y - top :], y
        for x in xs:
            p = np.asarray(window_fn(image[y : y + wh, x : x + ww]), np.float32)
            if sums is None or counts is None:
                sums, counts = np.zeros((0, w, *p.shape[2:]), np.float32), np.zeros((0, w))
            missing = y - top + wh - sums.shape[0]
            if missing > 0:  # the band reaches rows below those held
                sums = np.concatenate([sums, np.zeros((missing, *sums.shape[1:]), np.float32)])
                counts = np.concatenate([counts, np.zeros((missing, w))])
            sums[y - top : y - top + wh, x : x + ww] += p
            counts[y - top : y - top + wh, x : x + ww] += 1
    assert sums is not None and counts is not None
    yield top, sums / _expand(counts, sums.ndim)


def _expand(counts: np.ndarray, ndim: int) -> np.ndarray:
    return counts.reshape(counts.shape + (1,) * (ndim - counts.ndim))


@jax.jit
def _probabilities(logits: jax.Array) -> jax.Array:
    """`[rows, W, passes, C]` averaged logits -> `[rows, W, C]` probabilities: softmax per
    pass, then the passes' mean (summed in order, as `average_probabilities` sums them)."""
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    total = p.sum(axis=2)
    return total if logits.shape[2] == 1 else total / logits.shape[2]


@functools.partial(jax.jit, static_argnames=("size", "align_corners", "dtype"))
def _resized_labels(probabilities, size, align_corners, dtype):
    """Class ids `[H, W]` of `[h, w, C]` probabilities resized to `size` (H, W)."""
    p = resize_bilinear(probabilities[None], size, align_corners)[0]
    return jnp.argmax(p, axis=-1).astype(dtype)


def resized(image: np.ndarray, size: Sequence[int], align_corners: bool = True) -> np.ndarray:
    """`image` `[H, W, C]` resized to `size` (H, W) as whole-image inference resizes it."""
    return np.asarray(_resize(jnp.asarray(image)[None], tuple(size), align_corners))[0]


_resize = jax.jit(resize_bilinear, static_argnums=(1, 2))


def segment(
    image: np.ndarray,
    window_fn: WindowFn,
    tiling: Tiling,
    dtype: Any,
    *,
    output_size: tuple[int, int] | None = None,
    align_corners: bool = True,
) -> np.ndarray:
    """Class ids `[H, W]` (`dtype`) of `image` `[h, w, 3]` as the network sees it, window by
    window (module docstring); `output_size` (H, W): the probabilities resized to it first."""
    h, w = image.shape[:2]
    if output_size is None or tuple(output_size) == (h, w):
        labels = np.empty((h, w), dtype)
        for top, logits in averaged_bands(image, window_fn, tiling):
            labels[top : top + logits.shape[0]] = np.asarray(_probabilities(logits)).argmax(-1)
        return labels
    bands = [np.asarray(_probabilities(b)) for _, b in averaged_bands(image, window_fn, tiling)]
    size = tuple(int(n) for n in output_size)
    labels = _resized_labels(np.concatenate(bands), size, align_corners, np.dtype(dtype))
    return np.asarray(labels)


def window_sizes(
    image_size: Sequence[int], tiling: Tiling, scales: Sequence[float], align_corners: bool
) -> list[tuple[int, int]]:
    """The network input sizes (H, W) of the windows of `tiling` over an image of `image_size`
    (as the network sees it) at the test-time `scales`."""
    window = tuple(min(t, n) for t, n in zip(tiling.size, image_size[:2], strict=True))
    return test_time.network_sizes(window, scales, None, align_corners)


def make_window_fn(
    model: nn.Module,
    variables: Any,
    *,
    align_corners: bool = True,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> WindowFn:
    """`window [h, w, 3] (normalised) -> logits [h, w, passes, C]` of the model's (single)
    output, one pass per scale (the window resized by it, the logits resized back) and, with
    `flip`, per mirrored window (the logits mirrored back); jitted (every window of an image has
    one shape: one compilation)."""

    @jax.jit
    def logits(variables, window):
        h, w = window.shape[:2]
        images = jnp.stack([window, window[:, ::-1]]) if flip else window[None]
        passes = []
        for scale in scales:
            size = test_time.network_size((h, w), scale, None, align_corners)
            x = images if size is None else resize_bilinear(images, size, align_corners)
            out = model.apply(variables, x)
            (out,) = out.values() if isinstance(out, Mapping) else (out,)
            out = out.astype(jnp.float32)
            if size is not None:
                out = resize_bilinear(out, (h, w), align_corners)
            passes += [out[0], out[1, :, ::-1]] if flip else [out[0]]
        return jnp.stack(passes, axis=2)

    return lambda window: np.asarray(logits(variables, jnp.asarray(window, jnp.float32)))


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
