"""Segmenting images and videos with a checkpoint: what `predict.py` documents (inputs collected,
outputs named, failures counted)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import time
from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from icnet_jax import errors
from icnet_jax.data.augment import normalize
from icnet_jax.inference import (
    image_io,
    onnx_backend,
    saved_run,
    sliding_window,
    test_time,
    visualize,
)

_log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
)  # fmt: skip


class MissingInputError(errors.UserError, FileNotFoundError):
    """The input path does not exist."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One input: its path, the output name (relative, no extension) and 'image' or 'video'."""

    path: pathlib.Path
    stem: str
    kind: str


@dataclasses.dataclass
class Summary:
    """What `predict` did: inputs segmented (with their output files) and failures."""

    succeeded: dict[str, list[pathlib.Path]] = dataclasses.field(default_factory=dict)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def exit_code(self, strict: bool = False) -> int:
        if not self.succeeded or (strict and self.failed):
            return 1
        return 0


def is_video(path: pathlib.Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def collect_inputs(path: str | os.PathLike, recursive: bool = False) -> list[Item]:
    """The items of an image, video or folder (images and videos, sorted; hidden files skipped).

    Output stems are paths relative to the folder without extension; two files differing only in
    extension (`a.png`, `a.jpg`) get the extension appended to the later one's stem.

    Raises:
      FileNotFoundError: `path` does not exist.
    """
    root = pathlib.Path(path)
    if not root.exists():
        raise MissingInputError(
            f"input {os.fspath(path)!r} does not exist; give an image, a video or a folder"
        )
    if not root.is_dir():
        return [Item(root, root.stem or root.name, "video" if is_video(root) else "image")]
    extensions = image_io.IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    items, used = [], set()
    for file in image_io.list_images(root, extensions, recursive=recursive):
        stem = file.relative_to(root).with_suffix("").as_posix()
        if stem in used:
            stem = f"{stem}_{file.suffix.lstrip('.').lower()}"
        used.add(stem)
        items.append(Item(file, stem, "video" if is_video(file) else "image"))
    return items


class Segmenter:
    """A checkpoint's model as `uint8 RGB [H, W, 3] -> class ids [H, W]`, any H and W: whole, or
    in windows as `tiles` says (default: above `sliding_window.MAX_PIXELS` pixels, windows of the
    checkpoint's training crop); running out of memory is a `sliding_window.OutOfMemoryError`."""

    def __init__(
        self,
        loaded: saved_run.LoadedCheckpoint,
        *,
        branch: str = "sub124",
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        tiles: sliding_window.TilePolicy | None = None,
        backend: onnx_backend.Backend = onnx_backend.JAX,
    ) -> None:
        cfg = loaded.config
        self.config = cfg
        self.variables = loaded.variables if backend.name == "jax" else {}
        self.dtype = test_time.prediction_dtype(loaded.num_classes)
        crop = loaded.saved_config.get("input", {}).get("crop_size") or cfg.input.crop_size
        self.tiles = (tiles or sliding_window.TilePolicy()).for_checkpoint(crop)
        self._told = False
        self.network = onnx_backend.inference_network(loaded, branch, backend)
        self._eval_size = tuple(cfg.input.eval_size) if cfg.input.eval_size else None
        self._scales = tuple(scales)
        self._predict = test_time.make_predict_fn(
            self.network,
            loaded.num_classes,
            eval_size=self._eval_size,
            align_corners=cfg.model.align_corners,
            scales=scales,
            flip=flip,
        )
        self._window = sliding_window.make_window_fn(
            self.network, self.variables, align_corners=cfg.model.align_corners,
            scales=scales, flip=flip,
        )  # fmt: skip

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        c = self.config.input
        return normalize(image, c.mean, c.std, c.bgr)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        tiling = self.tiles.tiling_for(image.shape)
        align_corners = self.config.model.align_corners
        try:
            if tiling is not None:
                self._tell(image.shape, tiling)
                return self._segment_tiled(image, tiling)
            sizes = test_time.network_sizes(
                image.shape[:2], self._scales, self._eval_size, align_corners
            )
            onnx_backend.prepare(self.network, sizes)  # outside the jitted function
            (labels,) = self._predict(self.variables, self._prepare(image)[None]).values()
            return np.asarray(labels)[0]
        except Exception as error:
            if not sliding_window.is_out_of_memory(error):
                raise
            raise sliding_window.out_of_memory_error(image.shape, tiling, self.tiles) from None

    def _segment_tiled(self, image: np.ndarray, tiling: sliding_window.Tiling) -> np.ndarray:
        """Windows over the image as the network sees whole images: resized to the eval size
        (normalised whole, then resized), else as is (each window normalised alone)."""
        align_corners = self.config.model.align_corners
        if self._eval_size is None:
            view, window_fn = image, lambda w: self._window(self._prepare(w))
        else:
            view = sliding_window.resized(self._prepare(image), self._eval_size, align_corners)
            window_fn = self._window
        sizes = sliding_window.window_sizes(view.shape, tiling, self._scales, align_corners)
        onnx_backend.prepare(self.network, sizes)
        return sliding_window.segment(
            view, window_fn, tiling, self.dtype,
            output_size=image.shape[:2], align_corners=align_corners,
        )  # fmt: skip

    def _tell(self, shape, tiling: sliding_window.Tiling) -> None:
        if not self._told:
            why = "--tile" if self.tiles.size else f"above --max_pixels={self.tiles.max_pixels}"
            eval_size = self._eval_size
            _log.info(
                f"a {shape[0]}x{shape[1]} image ({why}): segmented in {tiling.describe()}"
                + (f" of it resized to input.eval_size={eval_size}" if eval_size else "")
            )
            self._told = True


def _segment_image(segmenter, item, output, palette, alpha) -> list[pathlib.Path]:
    image = image_io.read_image(item.path)
    labels = segmenter(image)
    colour = visualize.colorize(labels, palette, ignore_label=None)
    paths = {
        "labels": image_io.write_png(output / f"{item.stem}_labels.png", labels),
        "color": image_io.write_png(output / f"{item.stem}_color.png", colour),
        "overlay": image_io.write_png(
            output / f"{item.stem}_overlay.png", visualize.overlay(image, colour, alpha)
        ),
    }
    return list(paths.values())


def _segment_video(segmenter, item, output, palette, alpha, progress) -> list[pathlib.Path]:
    fps, frames = image_io.iter_video_frames(item.path)
    path = output / f"{item.stem}_overlay.mp4"
    writer = None
    count = 0
    start = time.perf_counter()
    after_first = None
    try:
        for frame in tqdm(frames, desc=item.path.name, unit="frame", leave=False,
                          disable=not progress):  # fmt: skip
            colour = visualize.colorize(segmenter(frame), palette, ignore_label=None)
            if writer is None:
                writer = image_io.VideoWriter(path, fps, (frame.shape[1], frame.shape[0]))
            writer.write(visualize.overlay(frame, colour, alpha))
            count += 1
            if count == 1:
                after_first = time.perf_counter()
    finally:
        if writer is not None:
            writer.close()
    end = time.perf_counter()
    rate = count / max(end - start, 1e-9)
    steady = ""
    if count > 1 and after_first is not None:
        steady = f", {(count - 1) / max(end - after_first, 1e-9):.2f} fps after the first frame"
    _log.info(
        f"{item.path}: {count} frames at {fps:g} fps in -> {path}; achieved {rate:.2f} fps "
        f"(first frame's compilation included{steady})"
    )
    return [path]


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """What `predict` makes of each input (predict.py's flags).

    Attributes:
      branch: ICNet's output (sub4, sub24, sub124). flip, scales: test-time augmentation.
      alpha: weight of the colours in the overlays. recursive: read sub-folders too.
      command_line_wins: config keys whose command-line value beats the checkpoint's.
      progress: progress bars. tiles: when and how to segment in windows (None: the default
      policy). backend: what runs the network (JAX, onnxruntime float32 or int8).
    """

    branch: str = "sub124"
    flip: bool = False
    scales: Sequence[float] = (1.0,)
    alpha: float = 0.5
    recursive: bool = False
    command_line_wins: Iterable[str] = ()
    progress: bool = True
    tiles: sliding_window.TilePolicy | None = None
    backend: onnx_backend.Backend = onnx_backend.JAX


def predict(
    config: ml_collections.ConfigDict | saved_run.CommandLine | None,
    checkpoint: str | os.PathLike,
    inputs: str | os.PathLike,
    output: str | os.PathLike,
    options: PredictOptions = PredictOptions(),
) -> Summary:
    """Segments every item of `inputs` into `output` (see the module docstring).

    Raises:
      FileNotFoundError: `inputs` or the checkpoint does not exist.
    """
    o = options
    o.backend.check()
    items = collect_inputs(inputs, o.recursive)
    if not items:
        raise errors.UserError(
            f"no images or videos in {os.fspath(inputs)}"
            + ("" if o.recursive else " (--recursive reads its sub-folders)")
        )
    errors.check_writable(output, "--output")
    loaded = saved_run.load_checkpoint(checkpoint, config, command_line_wins=o.command_line_wins)
    _log.info(loaded.header())
    info = loaded.dataset_info()
    segmenter = Segmenter(
        loaded, branch=o.branch, flip=o.flip, scales=o.scales, tiles=o.tiles, backend=o.backend
    )
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for item in tqdm(items, desc="predicting", unit="file", disable=not o.progress):
        try:
            if item.kind == "video":
                paths = _segment_video(segmenter, item, output, info.palette, o.alpha, o.progress)
            else:
                paths = _segment_image(segmenter, item, output, info.palette, o.alpha)
        except (KeyboardInterrupt, SystemExit, sliding_window.OutOfMemoryError):
            raise  # out of memory: the next large input would be too; the message says what to do
        except Exception as error:  # noqa: BLE001 - name the file, go on with the rest
            reason = (
                str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
            )
            _log.info(f"skipped {item.path}: {reason}")
            summary.failed.append((str(item.path), reason))
            continue
        summary.succeeded[str(item.path)] = paths
    _log.info(
        f"{len(summary.succeeded)} of {len(items)} inputs segmented into {output}"
        + (f"; {len(summary.failed)} failed:" if summary.failed else "")
    )
    for path, reason in summary.failed:
        _log.info(f"  {path}: {reason}")
    return summary
