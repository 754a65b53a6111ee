"""Segmenting images and videos with a checkpoint: what `predict.py` documents (inputs collected,
outputs named, failures counted)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
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
    video,
    visualize,
)

_log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
)  # fmt: skip
# What a video gives: its overlay and colour-map videos, its class ids as PNG frames.
VIDEO_OUTPUTS: tuple[str, ...] = ("overlay", "color", "labels")


class MissingInputError(errors.UserError, FileNotFoundError):
    """The input path does not exist."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One input: its path, the output name (relative, no extension) and 'image', 'video',
    'frames' (a folder: one video) or 'stream' (a camera index or URL, kept as given in `spec`)."""

    path: pathlib.Path
    stem: str
    kind: str
    spec: str = ""


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


def collect_inputs(
    path: str | os.PathLike, recursive: bool = False, *, frames: bool = False
) -> list[Item]:
    """The items of an image, video, folder (images and videos, sorted; hidden files skipped;
    with `frames`, the folder's images as the frames of one video), camera index or URL.

    Output stems are paths relative to the folder without extension; two files differing only in
    extension (`a.png`, `a.jpg`) get the extension appended to the later one's stem.

    Raises:
      FileNotFoundError: `path` does not exist.
    """
    root = pathlib.Path(path)
    spec = os.fspath(path)
    if not root.exists() and video.is_stream(spec):
        name = f"camera{spec}" if spec.isdigit() else (root.stem or "stream")
        return [Item(root, name, "stream", spec)]
    if frames and root.is_dir():
        return [Item(root, root.name, "frames")]
    if not root.exists():
        raise MissingInputError(
            f"input {spec!r} does not exist; give an image, a video, a folder, a camera index "
            "or a URL"
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

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The network input of a uint8 RGB image: `float32 [H, W, 3]`, normalised."""
        c = self.config.input
        return normalize(image, c.mean, c.std, c.bgr)

    def __call__(self, image: np.ndarray, prepared: np.ndarray | None = None) -> np.ndarray:
        """Class ids `[H, W]` of a uint8 RGB image (`prepared`: its `prepare(image)`, made
        ahead, e.g. by another thread)."""
        tiling = self.tiles.tiling_for(image.shape)
        try:
            if tiling is not None:
                self._tell(image.shape, tiling)
                return self._segment_tiled(image, tiling)
            x = self.prepare(image) if prepared is None else prepared
            return self._segment_whole(x[None])[0]
        except Exception as error:
            if not sliding_window.is_out_of_memory(error):
                raise
            raise sliding_window.out_of_memory_error(image.shape, tiling, self.tiles) from None

    def segment_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class ids `[H, W]` of each of several uint8 RGB images of one size, in one call of
        the network (those segmented in windows: one at a time)."""
        if len(images) == 1 or self.tiles.tiling_for(images[0].shape) is not None:
            return [self(image) for image in images]
        try:
            labels = self._segment_whole(np.stack([self.prepare(image) for image in images]))
        except Exception as error:
            if not sliding_window.is_out_of_memory(error):
                raise
            raise sliding_window.out_of_memory_error(images[0].shape, None, self.tiles) from None
        return list(labels)

    def make_ready(self, size: tuple[int, ...]) -> None:
        """Makes the network ready for whole images of `size` (H, W): an onnxruntime network's
        sessions of every input size the test-time options feed (made outside any traced
        function; nothing for JAX)."""
        onnx_backend.prepare_for_images(
            self.network, size, self._scales, self._eval_size, self.config.model.align_corners
        )

    def _segment_whole(self, batch: np.ndarray) -> np.ndarray:
        """Class ids `[N, H, W]` of prepared images `[N, H, W, 3]`, whole."""
        self.make_ready(batch.shape[1:3])
        (labels,) = self._predict(self.variables, batch).values()
        return np.asarray(labels)

    def _segment_tiled(self, image: np.ndarray, tiling: sliding_window.Tiling) -> np.ndarray:
        """Windows over the image as the network sees whole images: resized to the eval size
        (normalised whole, then resized), else as is (each window normalised alone)."""
        align_corners = self.config.model.align_corners
        if self._eval_size is None:
            view, window_fn = image, lambda w: self._window(self.prepare(w))
        else:
            view = sliding_window.resized(self.prepare(image), self._eval_size, align_corners)
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


def _segment_image(segmenter, item, output, palette, o: PredictOptions) -> list[pathlib.Path]:
    image = image_io.read_image(item.path)
    return _write_image(item, image, segmenter(image), output, palette, o.alpha)


def _write_image(item, image, labels, output, palette, alpha: float) -> list[pathlib.Path]:
    colour = visualize.colorize(labels, palette, ignore_label=None)
    paths = {
        "labels": image_io.write_png(output / f"{item.stem}_labels.png", labels),
        "color": image_io.write_png(output / f"{item.stem}_color.png", colour),
        "overlay": image_io.write_png(
            output / f"{item.stem}_overlay.png", visualize.overlay(image, colour, alpha)
        ),
    }
    return list(paths.values())


def _video_outputs(output: pathlib.Path, stem: str, kinds: Iterable[str]) -> video.Outputs:
    kinds = set(kinds)
    return video.Outputs(
        overlay=output / f"{stem}_overlay.mp4" if "overlay" in kinds else None,
        colour=output / f"{stem}_color.mp4" if "color" in kinds else None,
        label_frames=output / f"{stem}_labels" if "labels" in kinds else None,
    )


def _segment_video(segmenter, item, output, palette, o: PredictOptions) -> list[pathlib.Path]:
    """A video, stream or folder of frames through `video.segment`; prints its speeds."""
    source = video.open_source(item.spec or str(item.path), fps=o.fps)
    outputs = _video_outputs(output, item.stem, o.video_outputs)
    with tqdm(desc=source.name, unit="frame", leave=False, disable=not o.progress) as bar:
        report = video.segment(
            source, segmenter, palette, outputs, alpha=o.alpha, drop_late=o.drop_late,
            on_frame=lambda frame: bar.update(),
        )  # fmt: skip
    if report.frames == 0:
        raise image_io.VideoError(item.spec or item.path, "no frame could be decoded")
    paths = [p for p in dataclasses.astuple(outputs) if p is not None]
    t = report.timing
    model, end_to_end = t.model_fps(), t.end_to_end_fps(report.frames)
    dropped = f", {report.dropped} dropped (--drop_late)" if report.dropped else ""
    _log.info(
        f"{item.spec or item.path}: {report.frames} frames at {source.fps:g} fps{dropped} -> "
        f"{', '.join(map(str, paths))}; end to end {end_to_end:.2f} fps, the network "
        f"{model:.2f} fps (its median time per frame; {end_to_end / max(model, 1e-9):.2f}x; "
        "after the first frame)"
    )
    return paths


def _attempt(summary: Summary, items: Sequence[Item], function, *args):
    """`function(*args)`, or None with each of `items` named, skipped and counted as failed
    when it raises (out of memory is raised: the next large input would fail too, and the
    message says what to do)."""
    try:
        return function(*args)
    except (KeyboardInterrupt, SystemExit, sliding_window.OutOfMemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - name the file, go on with the rest
        reason = str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        for item in items:
            _log.info(f"skipped {item.path}: {reason}")
            summary.failed.append((str(item.path), reason))
        return None


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """What `predict` makes of each input (predict.py's flags).

    Attributes:
      branch: ICNet's output (sub4, sub24, sub124). flip, scales: test-time augmentation.
      alpha: weight of the colours in the overlays. recursive: read sub-folders too.
      command_line_wins: config keys whose command-line value beats the checkpoint's.
      progress: progress bars. tiles: when and how to segment in windows (None: the default
      policy). backend: what runs the network (JAX, onnxruntime float32 or int8, or auto:
      `onnx_backend.Backend.resolve`). frames: a folder is the frames of one video, at `fps`.
      video_outputs: what a video gives (`VIDEO_OUTPUTS`). drop_late: a live source's frames
      that arrive while the pipeline is full replace the oldest waiting one. batch: images of
      one size segmented together, this many per call of the network.
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
    frames: bool = False
    fps: float = 30.0
    video_outputs: Sequence[str] = ("overlay",)
    drop_late: bool = False
    batch: int = 1


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
    backend, why = o.backend.resolve()
    backend.check()
    items = collect_inputs(inputs, o.recursive, frames=o.frames)
    if not items:
        raise errors.UserError(
            f"no images or videos in {os.fspath(inputs)}"
            + ("" if o.recursive else " (--recursive reads its sub-folders)")
        )
    errors.check_writable(output, "--output")
    loaded = saved_run.load_checkpoint(checkpoint, config, command_line_wins=o.command_line_wins)
    _log.info(loaded.header())
    info = loaded.info
    _log.info(f"backend: {backend.describe()} ({why})")
    segmenter = Segmenter(
        loaded, branch=o.branch, flip=o.flip, scales=o.scales, tiles=o.tiles, backend=backend
    )
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    groups: dict[tuple[int, ...], list[tuple[Item, np.ndarray]]] = {}  # images by size

    def flush(group: list[tuple[Item, np.ndarray]]) -> None:
        labels = _attempt(summary, [i for i, _ in group], segmenter.segment_batch,
                          [image for _, image in group])  # fmt: skip
        for (item, image), ids in zip(group, labels or ()):
            paths = _attempt(summary, [item], _write_image, item, image, ids, output,
                             info.palette, o.alpha)  # fmt: skip
            if paths is not None:
                summary.succeeded[str(item.path)] = paths

    for item in tqdm(items, desc="predicting", unit="file", disable=not o.progress):
        if item.kind == "image" and o.batch > 1:
            image = _attempt(summary, [item], image_io.read_image, item.path)
            if image is not None:
                groups.setdefault(image.shape, []).append((item, image))
                if len(groups[image.shape]) == o.batch:
                    flush(groups.pop(image.shape))
            continue
        handle = _segment_image if item.kind == "image" else _segment_video
        paths = _attempt(summary, [item], handle, segmenter, item, output, info.palette, o)
        if paths is not None:
            summary.succeeded[str(item.path)] = paths
    for group in groups.values():
        flush(group)
    _log.info(
        f"{len(summary.succeeded)} of {len(items)} inputs segmented into {output}"
        + (f"; {len(summary.failed)} failed:" if summary.failed else "")
    )
    for path, reason in summary.failed:
        _log.info(f"  {path}: {reason}")
    return summary
