"""A video end to end against the network alone, per backend and size, in one run: what
`predict.py` achieves on a video (decoding, normalising, the network, colouring, blending and
encoding, pipelined: `icnet_jax/inference/video.py`) as a fraction of the network's own speed.

    PYTHONPATH=. python benchmarks/video_speed.py --checkpoint=DIR --sizes=512x1024 \
        --backends=jax,onnxruntime,int8 --frames=40 --json=video_speed.json

For each size a video of `--frames` frames is written first (CamVid val frames resized to it
when `--manual_dir` has them, else noise), then for each backend in turn: the network alone
(`Segmenter` on one prepared frame, as the pipeline's network stage calls it: `--runs` calls
after a warm-up, median) and the whole video through `video.segment` into an overlay video
(frames per second after the first written frame, so start-up, compilation and the pipeline's
filling are left out). The network runs at the frame size (`input.eval_size` unset). int8 is
calibrated on `--calibration_images` training images of the checkpoint's dataset. Prints a table
and writes `--json`: the CPU model, the load average before and after, and per backend and size
the model's fps, the end-to-end fps and their ratio (the target: at least 0.9). `--batches=1,4`
adds the images/s of `predict.py --batch` (a folder's images of one size) at those batch sizes.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import tempfile
import time
from typing import Any

import cv2
import numpy as np

from configs import camvid
from icnet_jax import cli, errors
from icnet_jax.cli import flags
from icnet_jax.inference import image_io, saved_run, video
from icnet_jax.inference.onnx_backend import Backend
from icnet_jax.inference.predict import Segmenter

BACKENDS = {
    "jax": ("jax", "float32"),
    "onnxruntime": ("onnxruntime", "float32"),
    "int8": ("onnxruntime", "int8"),
}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else `platform.processor()`."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_video(path: pathlib.Path, size: tuple[int, int], frames: int, manual_dir: str) -> None:
    """`frames` frames of `size` (H, W): CamVid val frames resized, else noise."""
    files = image_io.list_images(pathlib.Path(manual_dir) / "val") if manual_dir else []
    rng = np.random.default_rng(0)
    with image_io.VideoWriter(path, 30.0, (size[1], size[0])) as writer:
        for i in range(frames):
            if files:
                image = image_io.read_image(files[i % len(files)])
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            else:
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            writer.write(image)


def measure(loaded, backend: Backend, path: pathlib.Path, runs: int, palette, batches) -> dict:
    """The network alone and the video end to end with one backend (see the module docstring)."""
    segmenter = Segmenter(loaded, backend=backend)
    _, frames = image_io.iter_video_frames(path)
    frame = next(frames)
    frames.close()
    prepared = segmenter.prepare(frame)
    segmenter(frame, prepared)  # export, quantise, compile
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        segmenter(frame, prepared)
        seconds.append(time.perf_counter() - start)
    model_fps = 1.0 / statistics.median(seconds)
    batched = images_per_second(segmenter, frame, batches, max(runs // 2, 1)) if batches else {}
    with tempfile.TemporaryDirectory() as folder:
        outputs = video.Outputs(overlay=pathlib.Path(folder) / "overlay.mp4")
        report = video.segment(video.open_source(str(path)), segmenter, palette, outputs)
    end_to_end = report.timing.end_to_end_fps(report.frames)
    return {
        "model_fps": model_fps,
        "end_to_end_fps": end_to_end,
        "ratio": end_to_end / model_fps,
        "network_fps_in_the_pipeline": report.timing.model_fps(),
        "frames": report.frames,
        "images_per_s_by_batch": batched,
    }


def images_per_second(segmenter: Segmenter, frame, batches: list[int], runs: int) -> dict:
    """Images/s of `Segmenter.segment_batch` (`predict.py --batch`) at each batch size, the
    sizes called in turn `runs` times after a warm-up each (median)."""
    for batch in batches:
        segmenter.segment_batch([frame] * batch)  # compile this batch size
    seconds: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(runs):
        for batch in batches:
            start = time.perf_counter()
            segmenter.segment_batch([frame] * batch)
            seconds[batch].append((time.perf_counter() - start) / batch)
    return {str(b): 1.0 / statistics.median(s) for b, s in seconds.items()}


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        raise errors.UserError(f"--backends: {', '.join(unknown)}: one of {', '.join(BACKENDS)}")
    config = camvid.get_config()
    config.input.eval_size = None  # the network at the frame size
    if args.manual_dir:
        config.dataset.manual_dir = args.manual_dir
    if args.data_dir:
        config.dataset.data_dir = args.data_dir
    batches = [int(b) for b in args.batches]
    loaded = saved_run.load_checkpoint(
        args.checkpoint, config, command_line_wins=("input.eval_size",)
    )
    palette = loaded.info.palette
    result: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for text in args.sizes:
            size = tuple(int(v) for v in text.lower().split("x"))
            path = pathlib.Path(folder) / f"{text}.mp4"
            write_video(path, size, args.frames, args.manual_dir)  # type: ignore[arg-type]
            for name in args.backends:
                backend = Backend(*BACKENDS[name], calibration_images=args.calibration_images)
                row = {
                    "size": text,
                    "backend": name,
                    **measure(loaded, backend, path, args.runs, palette, batches),
                }
                rows.append(row)
                print(
                    f"{text:>10s} {name:12s} model {row['model_fps']:6.2f} fps, end to end "
                    f"{row['end_to_end_fps']:6.2f} fps: {row['ratio']:.2f}x"
                    + "".join(f"; batch {b}: {v:.2f} images/s"
                              for b, v in row["images_per_s_by_batch"].items()),
                    flush=True,
                )  # fmt: skip
    result.update(rows=rows, load_after=os.getloadavg())
    print(f"{result['cpu']}, {result['cores']} cores; load average {result['load_before'][0]:.2f}"
          f" before, {result['load_after'][0]:.2f} after")  # fmt: skip
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    flags.DEFINE_string("checkpoint", None, "The checkpoint.", required=True)
    flags.DEFINE_list("sizes", ["512x1024"], "Frame sizes HxW.")
    flags.DEFINE_list("backends", list(BACKENDS), f"Backends, in turn: {', '.join(BACKENDS)}.")
    flags.DEFINE_integer("frames", 40, "Frames of each video.", lower_bound=3)
    flags.DEFINE_integer("runs", 10, "Timed calls of the network alone.", lower_bound=1)
    flags.DEFINE_integer("calibration_images", 8, "Training images calibrating int8.")
    flags.DEFINE_string("manual_dir", "", "CamVid (SegNet layout): frames and calibration.")
    flags.DEFINE_string("data_dir", "", "Where the dataset is prepared (calibration).")
    flags.DEFINE_list("batches", [], "Also images/s of predict.py's --batch at these sizes.")
    flags.DEFINE_string("json", "", "Write the figures here.")
    cli.run(main)
