"""Segments images or videos with a checkpoint.

    python predict.py --checkpoint=runs/quickstart --input=IMAGE|FOLDER|VIDEO --output=DIR

For each image `<stem>_labels.png` (8-bit class ids), `<stem>_color.png` (the dataset's palette)
and `<stem>_overlay.png` (colours blended over the image); a video gives `<stem>_overlay.mp4`
(same frame rate) and its achieved frames per second are printed. A folder is read in sorted
order (its images and videos; `--recursive` for sub-folders, whose structure is kept under DIR).

Images of any size and kind are read by `image_io.read_image`: RGBA (alpha dropped), grayscale,
16-bit, palette, EXIF-rotated (upright as viewers show them). Preprocessing and the model come
from the config saved with the checkpoint (as in evaluate.py: `config.model.*`,
`config.input.mean/std/bgr/eval_size`); `--config` matters only for what the checkpoint lacks.
The palette and class names are those of the checkpoint's dataset (`config.dataset.name`:
cityscapes, camvid, coco_stuff, street), else a generated palette with as many colours as the
checkpoint's classifier has classes. `--branch` picks ICNet's output (sub4, sub24, sub124).

A file that cannot be read or segmented is named, skipped, and the rest processed; a summary at
the end counts the failures. Exit status: 0 when at least one input was segmented (with
`--strict`: and none failed), 1 when every input failed (or `--strict` and any failed), 2 when
nothing could start (missing input, a folder without images or videos, a missing or unreadable
checkpoint, a bad `--scales`; absl itself exits with 1 on unknown or missing flags).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from icnet_jax import image_io, inference, visualize
from icnet_jax.data.augment import normalize
from icnet_jax.models.icnet import BRANCHES

FLAGS = flags.FLAGS

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
)  # fmt: skip


def define_flags() -> None:
    """The command-line flags (defined by `__main__` only; see evaluate.define_flags)."""
    config_flags.DEFINE_config_file(
        "config", "configs/quickstart.py",
        "Config; the checkpoint's saved model, input and dataset name settings win.",
        lock_config=True,
    )  # fmt: skip
    flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints dir or step dir.")
    flags.DEFINE_string("input", None, "An image, a folder of images/videos, or a video.")
    flags.DEFINE_string("output", None, "Output folder.")
    flags.DEFINE_enum("branch", "sub124", BRANCHES, "ICNet output branch.")
    flags.DEFINE_bool("flip", False, "Average probabilities with the mirrored image.")
    flags.DEFINE_string(
        "scales", "1.0", "Comma-separated input scales whose probabilities average."
    )
    flags.DEFINE_float("alpha", 0.5, "Weight of the colours in the overlays.")
    flags.DEFINE_bool("recursive", False, "Also read the input folder's sub-folders.")
    flags.DEFINE_bool("strict", False, "Exit with status 1 if any input failed.")
    flags.DEFINE_list(
        "command_line_wins", [],
        "Config keys (e.g. input.eval_size) whose command-line value beats the checkpoint's.",
    )  # fmt: skip
    flags.mark_flags_as_required(["checkpoint", "input", "output"])


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
        raise FileNotFoundError(f"input {os.fspath(path)!r} does not exist")
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
    """A checkpoint's model as `uint8 RGB [H, W, 3] -> class ids [H, W]`, any H and W."""

    def __init__(
        self,
        loaded: inference.LoadedCheckpoint,
        *,
        branch: str = "sub124",
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
    ) -> None:
        cfg = loaded.config
        self.config = cfg
        self.variables = loaded.variables
        model = inference.inference_model(cfg, loaded.num_classes, branch)
        eval_size = tuple(cfg.input.eval_size) if cfg.input.eval_size else None
        self._predict = inference.make_predict_fn(
            model,
            loaded.num_classes,
            eval_size=eval_size,
            align_corners=cfg.model.align_corners,
            scales=scales,
            flip=flip,
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        c = self.config.input
        x = normalize(image, c.mean, c.std, c.bgr)
        (labels,) = self._predict(self.variables, x[None]).values()
        return np.asarray(labels)[0]


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
    tqdm.write(
        f"{item.path}: {count} frames at {fps:g} fps in -> {path}; achieved {rate:.2f} fps "
        f"(first frame's compilation included{steady})"
    )
    return [path]


def predict(
    config: ml_collections.ConfigDict,
    checkpoint: str | os.PathLike,
    inputs: str | os.PathLike,
    output: str | os.PathLike,
    *,
    branch: str = "sub124",
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    alpha: float = 0.5,
    recursive: bool = False,
    command_line_wins: Iterable[str] = (),
    progress: bool = True,
) -> Summary:
    """Segments every item of `inputs` into `output` (see the module docstring).

    Raises:
      FileNotFoundError: `inputs` or the checkpoint does not exist.
    """
    items = collect_inputs(inputs, recursive)
    loaded = inference.load_checkpoint(checkpoint, config, command_line_wins=command_line_wins)
    print(f"checkpoint {loaded.path} (step {loaded.step}, {loaded.num_classes} classes)")
    print(inference.describe_settings(loaded.settings))
    name = loaded.saved_config.get("dataset", {}).get("name") or loaded.config.dataset.name
    info = inference.dataset_info_for(name, loaded.num_classes)
    segmenter = Segmenter(loaded, branch=branch, flip=flip, scales=scales)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for item in tqdm(items, desc="predicting", unit="file", disable=not progress):
        try:
            if item.kind == "video":
                paths = _segment_video(segmenter, item, output, info.palette, alpha, progress)
            else:
                paths = _segment_image(segmenter, item, output, info.palette, alpha)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - name the file, go on with the rest
            reason = (
                str(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
            )
            tqdm.write(f"skipped {item.path}: {reason}")
            summary.failed.append((str(item.path), reason))
            continue
        summary.succeeded[str(item.path)] = paths
    print(
        f"{len(summary.succeeded)} of {len(items)} inputs segmented into {output}"
        + (f"; {len(summary.failed)} failed:" if summary.failed else "")
    )
    for path, reason in summary.failed:
        print(f"  {path}: {reason}")
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax's INFO lines drown the output
    try:
        scales = inference.parse_scales(FLAGS.scales)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if not collect_inputs(FLAGS.input, FLAGS.recursive):
            print(f"error: no images or videos in {FLAGS.input}", file=sys.stderr)
            return 2
        summary = predict(
            FLAGS.config,
            FLAGS.checkpoint,
            FLAGS.input,
            FLAGS.output,
            branch=FLAGS.branch,
            flip=FLAGS.flip,
            scales=scales,
            alpha=FLAGS.alpha,
            recursive=FLAGS.recursive,
            command_line_wins=FLAGS.command_line_wins,
        )
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return summary.exit_code(FLAGS.strict)


if __name__ == "__main__":
    define_flags()
    app.run(main)
