"""Videos and streams segmented as a pipeline: decoding, pre-processing, the network,
colouring/blending and encoding run at the same time, each stage in its own thread, joined by
bounded queues (`run_stages`). onnxruntime, XLA, OpenCV and most of numpy release the GIL, so
on a CPU the stages around the network take the time the network leaves, instead of adding to it.

Frames stay in order (one thread per stage, first in first out) and none is dropped unless
`drop_late` is set: then a source that decodes faster than the pipeline takes frames (a camera,
a stream) replaces the oldest waiting frame with the newest instead of waiting, so the output
stays current; the frames dropped are counted.

Sources (`open_source`): anything `cv2.VideoCapture` opens (a file, a camera index such as `0`,
an RTSP or HTTP URL) or a folder of frames (its images, sorted by name).
"""

from __future__ import annotations

import dataclasses
import pathlib
import queue
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from icnet_jax.inference import image_io, visualize

# How many frames wait between two stages: enough to absorb one slow frame, few enough that a
# 1024x2048 frame's copies stay small (each frame is a few MB).
QUEUE_SIZE = 4
_END = object()
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclasses.dataclass
class Source:
    """Frames to segment: `frames` yields uint8 RGB `[H, W, 3]`; `fps` their rate (a folder's:
    the one asked for); `live` for a camera or a network stream (frames come at their own pace)."""

    name: str
    fps: float
    frames: Iterator[np.ndarray]
    live: bool = False


def is_stream(spec: str) -> bool:
    """Whether `spec` names a camera (an index such as `0`) or a URL (`rtsp://...`)."""
    return spec.isdigit() or bool(_URL.match(spec))


def capture_frames(capture: Any) -> Iterator[np.ndarray]:
    """The frames of an opened `cv2.VideoCapture`-like object (`read() -> (ok, BGR frame)`,
    `release()`) as uint8 RGB, until a read fails; releases the capture at the end."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield image_io.bgr_to_rgb(frame)
    finally:
        capture.release()


def open_source(spec: str, *, fps: float = 30.0, opener: Callable[..., Any] = cv2.VideoCapture):
    """A `Source` for `spec`: a folder (its images are the frames, at `fps`), a camera index,
    a URL or a video file (`opener`, OpenCV's capture, is given the index or the string).

    Raises:
      image_io.VideoError: the source cannot be opened.
    """
    path = pathlib.Path(spec)
    if path.is_dir():
        files = image_io.list_images(path, image_io.IMAGE_EXTENSIONS)
        if not files:
            raise image_io.VideoError(spec, "a folder of frames without images")
        return Source(path.name, fps, (image_io.read_image(f) for f in files))
    stream = is_stream(spec)
    if not stream and not path.is_file():
        raise image_io.VideoError(spec, "no such file")
    capture = opener(int(spec) if spec.isdigit() else spec)
    if not capture.isOpened():
        capture.release()
        raise image_io.VideoError(spec, "cannot be opened (no such camera, stream or video)")
    rate = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    rate = rate if np.isfinite(rate) and rate > 0 else fps
    name = f"camera{spec}" if spec.isdigit() else (path.stem or "stream")
    return Source(name, rate, capture_frames(capture), live=stream)


class Stopped(Exception):
    """A stage saw that another one failed (its error is the one raised)."""


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise Stopped


def _put_latest(out: queue.Queue, item: Any) -> int:
    """Puts without waiting: a full queue loses its oldest item. Returns the items dropped."""
    dropped = 0
    while True:
        try:
            out.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                out.get_nowait()
                dropped += 1
            except queue.Empty:
                continue


@dataclasses.dataclass
class Counts:
    """What went through a pipeline: `dropped` frames (with `drop_late`)."""

    dropped: int = 0


def run_stages(
    items: Iterable[Any],
    stages: Sequence[Callable[[Any], Any]],
    *,
    queue_size: int = QUEUE_SIZE,
    drop_late: bool = False,
    counts: Counts | None = None,
) -> Iterator[Any]:
    """`stage_n(...stage_1(item))` of each item, in order, each stage (and the iteration of
    `items`) in its own thread; the caller's loop over the results is the last stage. With
    `drop_late` the first queue drops its oldest item when full (counted in `counts.dropped`).
    An exception in any stage stops the others and is raised here."""
    stop = threading.Event()
    errors: list[BaseException] = []
    queues: list[queue.Queue] = [queue.Queue(maxsize=queue_size) for _ in range(len(stages) + 1)]
    counts = counts if counts is not None else Counts()

    def feed() -> None:
        for item in items:
            if stop.is_set():
                return
            if drop_late:
                counts.dropped += _put_latest(queues[0], item)
            else:
                _put(queues[0], item, stop)
        _put(queues[0], _END, stop)

    def work(stage: Callable[[Any], Any], source: queue.Queue, out: queue.Queue) -> None:
        while True:
            item = _get(source, stop)
            _put(out, item if item is _END else stage(item), stop)
            if item is _END:
                return

    def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except Stopped:
                pass
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
                errors.append(error)
                stop.set()

        return run

    threads = [threading.Thread(target=guarded(feed), daemon=True, name="decode")]
    for i, stage in enumerate(stages):
        name = getattr(stage, "__name__", f"stage{i}")
        target = guarded(work, stage, queues[i], queues[i + 1])
        threads.append(threading.Thread(target=target, daemon=True, name=name))
    for thread in threads:
        thread.start()
    try:
        while True:
            try:
                item = _get(queues[-1], stop)
            except Stopped:
                break
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5.0)  # a stream's read may block: its thread is a daemon
    if errors:
        raise errors[0]


def _get(source: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            continue
    raise Stopped


@dataclasses.dataclass
class Frame:
    """One frame on its way: `index` in the source, the uint8 RGB `image`, then (None until a
    stage makes them) its `prepared` network input, class ids `labels [H, W]` and the `colour`
    map and `overlay` (uint8 RGB)."""

    index: int
    image: np.ndarray
    prepared: Any = None
    labels: Any = None
    colour: Any = None
    overlay: Any = None


@dataclasses.dataclass
class Timing:
    """Seconds: `network` per frame (the model's own time), `start` and `first` and `end`
    (`time.perf_counter` at the start, when the first frame was written, at the end)."""

    network: list[float] = dataclasses.field(default_factory=list)
    start: float = 0.0
    first: float = 0.0
    end: float = 0.0

    def end_to_end_fps(self, frames: int) -> float:
        """Frames per second after the first frame (its compilation and start-up left out)."""
        if frames < 2:
            return frames / max(self.end - self.start, 1e-9)
        return (frames - 1) / max(self.end - self.first, 1e-9)

    def model_fps(self) -> float:
        """1 / the median network time per frame (after the first: compilation)."""
        times = self.network[1:] or self.network
        return 1.0 / max(statistics.median(times), 1e-9) if times else 0.0


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a segmented source goes (None: not written): `overlay` and `colour` videos (the
    colour maps blended over the frames, and alone), `label_frames` a folder of class-id PNGs
    (`000000.png`, ... by source index: a lossy video cannot keep class ids)."""

    overlay: pathlib.Path | None = None
    colour: pathlib.Path | None = None
    label_frames: pathlib.Path | None = None


@dataclasses.dataclass
class Report:
    """What `segment` did: `frames` written, `dropped` (with `drop_late`), the `timing`."""

    frames: int
    dropped: int
    timing: Timing


class _Writers:
    """The encoding stage: the videos opened at the first frame's size, the PNGs."""

    def __init__(self, outputs: Outputs, fps: float) -> None:
        self._outputs, self._fps = outputs, fps
        self._videos: dict[str, image_io.VideoWriter] = {}

    def write(self, frame: Frame) -> None:
        o = self._outputs
        for key, path, image in (("overlay", o.overlay, frame.overlay),
                                 ("colour", o.colour, frame.colour)):  # fmt: skip
            if path is None:
                continue
            if key not in self._videos:
                size = (frame.image.shape[1], frame.image.shape[0])
                self._videos[key] = image_io.VideoWriter(path, self._fps, size)
            self._videos[key].write(image)
        if o.label_frames is not None:
            image_io.write_png(o.label_frames / f"{frame.index:06d}.png", frame.labels)

    def close(self) -> None:
        for writer in self._videos.values():
            writer.close()


def segment(
    source: Source,
    segmenter: Any,
    palette: np.ndarray,
    outputs: Outputs,
    *,
    alpha: float = 0.5,
    drop_late: bool = False,
    on_frame: Callable[[Frame], None] | None = None,
) -> Report:
    """Segments every frame of `source` into `outputs` through the pipeline (decode, prepare,
    network, colour and blend, encode). `segmenter` has `prepare(image) -> network input` and
    `segmenter(image, prepared) -> labels [H, W]` (`predict.Segmenter`); `on_frame` is called
    with each frame written (progress). `drop_late` applies to live sources only: a file's
    frames wait for the network, never lost."""
    timing = Timing(start=time.perf_counter())
    counts = Counts()

    def prepare(frame: Frame) -> Frame:
        frame.prepared = segmenter.prepare(frame.image)
        return frame

    def network(frame: Frame) -> Frame:
        start = time.perf_counter()
        frame.labels = segmenter(frame.image, frame.prepared)
        timing.network.append(time.perf_counter() - start)
        frame.prepared = None
        return frame

    def render(frame: Frame) -> Frame:
        if outputs.colour is not None:
            frame.colour = visualize.colorize(frame.labels, palette, ignore_label=None)
        if outputs.overlay is not None:
            frame.overlay = visualize.overlay_labels(frame.image, frame.labels, palette, alpha)
        return frame

    frames = (Frame(i, image) for i, image in enumerate(source.frames))
    writers = _Writers(outputs, source.fps)
    written = 0
    try:
        for frame in run_stages(
            frames, (prepare, network, render), drop_late=drop_late and source.live, counts=counts
        ):
            writers.write(frame)
            written += 1
            if written == 1:
                timing.first = time.perf_counter()
            if on_frame is not None:
                on_frame(frame)
    finally:
        writers.close()
        timing.end = time.perf_counter()
    return Report(written, counts.dropped, timing)
