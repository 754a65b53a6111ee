"""The video pipeline: frames in order and none lost, a failing stage raised in the caller, a live
source (a fake capture with delays) with and without --drop_late, a folder of frames, and the
outputs of `video.segment` (overlay and colour videos, label PNGs)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from icnet_jax.data import taxonomy
from icnet_jax.inference import image_io, video

H, W = 16, 32


def test_stages_keep_the_order_and_every_item():
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.003, (3, 40))  # stages of uneven speed

    def stage(k):
        def run(item):
            time.sleep(delays[k][item[0]])
            return (*item, k)

        return run

    out = list(video.run_stages(((i,) for i in range(40)), [stage(0), stage(1), stage(2)]))
    assert out == [(i, 0, 1, 2) for i in range(40)]


def test_a_failing_stage_is_raised_and_stops_the_source():
    read = []

    def items():
        for i in range(1000):
            read.append(i)
            yield i

    def fail(item):
        if item == 3:
            raise ValueError("frame 3 is bad")
        return item

    with pytest.raises(ValueError, match="frame 3"):
        list(video.run_stages(items(), [fail], queue_size=2))
    assert len(read) < 1000  # the decoder stopped too


class FakeCapture:
    """Stands in for a camera: `read()` gives `n` BGR frames (blue channel = index), each after
    `delay` seconds; `release()` recorded."""

    def __init__(self, n: int, delay: float = 0.0):
        self.n, self.delay, self.i, self.released = n, delay, 0, False
        self.gate = threading.Event()  # set once `gate_at` frames were read, or all
        self.gate_at = n

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop):
        return 25.0

    def read(self):
        if self.i >= min(self.n, self.gate_at):
            self.gate.set()
        if self.i >= self.n:
            return False, None
        time.sleep(self.delay)
        frame = np.zeros((H, W, 3), np.uint8)
        frame[..., 0] = self.i  # OpenCV's blue: RGB's last channel
        self.i += 1
        return True, frame

    def release(self):
        self.released = True


def test_a_live_source_keeps_every_frame_in_order_without_drop_late():
    capture = FakeCapture(12, delay=0.002)
    source = video.open_source("0", opener=lambda spec: capture)
    assert source.live and source.fps == 25.0 and source.name == "camera0"

    def slow(frame):
        time.sleep(0.005)
        return frame

    indices = [int(f[0, 0, 2]) for f in video.run_stages(source.frames, [slow])]
    assert indices == list(range(12)) and capture.released


def test_drop_late_drops_the_oldest_waiting_frames_and_keeps_the_newest():
    """The network stage waits until the camera has given all its frames: the queue, full,
    keeps the newest ones; the frames that come out are in order and end with the last one."""
    capture = FakeCapture(30)
    source = video.open_source("rtsp://camera/stream", opener=lambda spec: capture)
    assert source.live
    finished = threading.Event()

    def frames():
        yield from source.frames
        finished.set()

    def network(frame):
        finished.wait(timeout=10)
        return int(frame[0, 0, 2])

    counts = video.Counts()
    out = list(video.run_stages(frames(), [network], queue_size=3, drop_late=True, counts=counts))
    assert out == sorted(set(out)) and out[-1] == 29
    assert counts.dropped > 0 and len(out) + counts.dropped == 30
    assert len(out) <= 3 + 1 + 1  # the queue, the frame in the network, one in hand


def test_a_folder_of_frames_is_a_source_in_name_order(tmp_path):
    for i in (2, 0, 1, 10):
        Image.fromarray(np.full((H, W, 3), i, np.uint8)).save(tmp_path / f"f{i:02d}.png")
    source = video.open_source(str(tmp_path), fps=12.0)
    assert not source.live and source.fps == 12.0
    assert [int(f[0, 0, 0]) for f in source.frames] == [0, 1, 2, 10]


def test_an_unopenable_source_is_a_video_error(tmp_path):
    with pytest.raises(image_io.VideoError, match="no such file"):
        video.open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(image_io.VideoError, match="cannot be opened"):
        video.open_source(str(tmp_path / "notes.mp4"))
    with pytest.raises(image_io.VideoError, match="without images"):
        video.open_source(str(tmp_path))


def test_streams_are_told_from_files():
    assert video.is_stream("0") and video.is_stream("rtsp://h/x") and video.is_stream("http://h")
    assert not video.is_stream("clip.mp4") and not video.is_stream("/data/c:/x")


class BlueSegmenter:
    """Stands in for `predict.Segmenter`: class = the frame's index (its blue value) % 9."""

    def __init__(self, gate: threading.Event | None = None):
        self.threads, self.gate = set(), gate

    def prepare(self, image):
        if self.gate is not None:  # the first frame waits while the decoder fills the queue
            self.gate.wait(timeout=10)
            time.sleep(0.05)  # and a dropping decoder would read the rest meanwhile
            self.gate = None
        return image[..., 2].astype(np.int64)

    def __call__(self, image, prepared):
        self.threads.add(threading.current_thread().name)
        return prepared % 9


@pytest.mark.parametrize("drop_late", [False, True])
def test_segment_writes_every_frame_in_order(tmp_path, drop_late):
    """Every frame of a file, in order, even with --drop_late (for live sources only)."""
    capture = FakeCapture(9)
    capture.gate_at = video.QUEUE_SIZE + 1  # the decoder then waits for room
    (tmp_path / "clip.mp4").touch()  # decoded by the fake capture
    source = video.open_source(str(tmp_path / "clip.mp4"), opener=lambda spec: capture)
    assert not source.live
    outputs = video.Outputs(
        overlay=tmp_path / "o.mp4", colour=tmp_path / "c.mp4", label_frames=tmp_path / "labels"
    )
    segmenter = BlueSegmenter(gate=capture.gate)
    report = video.segment(
        source, segmenter, taxonomy.STREET_PALETTE, outputs, alpha=0.5, drop_late=drop_late
    )
    assert report.frames == 9 and report.dropped == 0
    assert len(report.timing.network) == 9 and report.timing.model_fps() > 0
    assert report.timing.end_to_end_fps(9) > 0
    assert threading.current_thread().name not in segmenter.threads  # ran in its own thread
    pngs = sorted((tmp_path / "labels").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(9)]
    for i, png in enumerate(pngs):
        np.testing.assert_array_equal(np.asarray(Image.open(png)), np.full((H, W), i % 9))
    for path in (outputs.overlay, outputs.colour):
        fps, frames = image_io.iter_video_frames(path)
        assert fps == pytest.approx(25.0) and len(list(frames)) == 9
