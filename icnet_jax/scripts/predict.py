"""Segments images or videos with a checkpoint.

    python predict.py --checkpoint=runs/quickstart --input=IMAGE|FOLDER|VIDEO|CAMERA|URL \
        --output=DIR

For each image `<stem>_labels.png` (8-bit class ids), `<stem>_color.png` (the dataset's palette)
and `<stem>_overlay.png` (colours blended over the image); a video gives `<stem>_overlay.mp4`
(same frame rate; `--video_outputs=color` adds `<stem>_color.mp4`, `--video_outputs=labels` the
class ids as `<stem>_labels/000000.png`, ...). A folder is read in sorted order (its images and
videos; `--recursive` for sub-folders, whose structure is kept under DIR); with `--frames` its
images are the frames of one video (at `--fps`). A camera index (`--input=0`) or a URL
(`rtsp://`, `http://`) is read as a video until it ends (Ctrl-C stops it, keeping the video);
`--drop_late` drops the frames that arrive while the network is still busy, so the output stays
live (cameras and URLs; a file's frames are never dropped). Videos run as a pipeline
(`icnet_jax/inference/video.py`): decoding, normalising, the network, colouring and encoding
overlap in threads, frames in order; the end-to-end frames per second and the network's own are
printed.

Images of any size and kind are read by `image_io.read_image`: RGBA (alpha dropped), grayscale,
16-bit, palette, EXIF-rotated (upright as viewers show them). Preprocessing and the model come
from the run's config saved with the checkpoint (as in evaluate.py); `--config` and
`--config.KEY=VALUE` are optional and only change it (each change printed as
`key: run=A, now=B`; a setting that describes the weights is refused). The palette and class
names are the run's record, else those of the checkpoint's dataset (`config.dataset.name`), else
a generated palette with as many colours as the checkpoint's classifier has classes.
`--branch` picks ICNet's output (sub4, sub24, sub124).

An image above `--max_pixels` (default 4096x4096) is segmented in overlapping windows of the
checkpoint's training crop (`--tile=H,W` for other windows, or for every image), every two thirds
of a window (`--tile_stride=H,W`), over the image resized to `input.eval_size` as whole images
are, their logits averaged (docs/evaluation.md, icnet_jax/inference/sliding_window.py).
Running out of memory stops with one `error:` line naming the flag that avoids it (exit status
2; the inputs before it keep their outputs).
`--backend=auto` (the default) runs the network on onnxruntime where JAX's device is the CPU and
the extras of requirements-export.txt are installed (about twice JAX's speed there), else on
JAX, and prints which in one line. `--backend=onnxruntime` runs the network on onnxruntime:
exported to ONNX once per network input size and cached under
`<workdir>/export/` (`icnet_jax/inference/onnx_backend.py`); the labels agree with JAX's.
`--dtype=int8` quantises that export (static, per channel), calibrated on
`--calibration_images` training images of the checkpoint's dataset (`--config.dataset.*` says
where it is prepared).

`--batch=N` segments a folder's images of one size N at a time, in one call of the network
each (images are grouped by size as they are read; windows are segmented one image at a time).

A file that cannot be read or segmented is named, skipped, and the rest processed; a summary at
the end counts the failures. Exit status: 0 when at least one input was segmented (with
`--strict`: and none failed), 1 when every input failed (or `--strict` and any failed), 2 when
nothing could start (missing input, a folder without images or videos, a missing or unreadable
checkpoint, a bad `--scales`, an unknown or missing flag), with one `error:` line and nothing
written; 130 interrupted (Ctrl-C or SIGTERM).
"""

from absl import flags

from icnet_jax import cli, config_checks, errors
from icnet_jax.inference import predict, saved_run, sliding_window, test_time
from icnet_jax.models.icnet import BRANCHES

FLAGS = flags.FLAGS
cli.define_config(
    "configs/quickstart.py",
    "Optional: changes to the run's saved config (its weights settings win).",
    lock_config=True,
)
flags.DEFINE_string("checkpoint", None, "A workdir, checkpoints dir or step dir.", required=True)
flags.DEFINE_string(
    "input", None, "An image, a folder of images/videos, or a video.", required=True
)
cli.define_output("output", None, "Output folder.", required=True)
flags.DEFINE_enum("branch", "sub124", BRANCHES, "ICNet output branch.")
flags.DEFINE_bool("flip", False, "Average probabilities with the mirrored image.")
flags.DEFINE_string("scales", "1.0", "Comma-separated input scales whose probabilities average.")
flags.DEFINE_float("alpha", 0.5, "Weight of the colours in the overlays.")
flags.DEFINE_bool("recursive", False, "Also read the input folder's sub-folders.")
flags.DEFINE_bool("strict", False, "Exit with status 1 if any input failed.")
flags.DEFINE_string("tile", "", "Segment every image in windows of H,W pixels.")
flags.DEFINE_string("tile_stride", "", "Window step H,W (default: two thirds of the window).")
flags.DEFINE_integer(
    "max_pixels", sliding_window.MAX_PIXELS, "Images above this many pixels are tiled (0: never)."
)
cli.define_backend_flags("auto")
flags.DEFINE_bool("frames", False, "The input folder's images are the frames of one video.")
flags.DEFINE_float("fps", 30.0, "Frame rate of --frames (and of a video that states none).")
flags.DEFINE_multi_enum(
    "video_outputs", ["overlay"], predict.VIDEO_OUTPUTS,
    "Per video: overlay (<stem>_overlay.mp4), color (<stem>_color.mp4), labels (PNGs).",
)  # fmt: skip
flags.DEFINE_integer("batch", 1, "Images of one size per call of the network.", lower_bound=1)
flags.DEFINE_bool("drop_late", False, "Live sources: drop frames the network cannot keep up with.")
flags.DEFINE_list(
    "command_line_wins", [],
    "Config keys (e.g. input.eval_size) whose command-line value beats the checkpoint's.",
)  # fmt: skip


def main(argv):
    if len(argv) > 1:
        raise errors.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    config_checks.check(FLAGS.config)
    try:
        scales = test_time.parse_scales(FLAGS.scales)
    except ValueError as error:
        raise errors.UserError(f"--scales={FLAGS.scales}: {error}") from None
    tiles = sliding_window.make_policy(FLAGS.tile, FLAGS.tile_stride, FLAGS.max_pixels)
    options = predict.PredictOptions(
        branch=FLAGS.branch,
        flip=FLAGS.flip,
        scales=scales,
        alpha=FLAGS.alpha,
        recursive=FLAGS.recursive,
        command_line_wins=tuple(FLAGS.command_line_wins),
        tiles=tiles,
        backend=cli.backend_from_flags(),
        frames=FLAGS.frames,
        fps=FLAGS.fps,
        video_outputs=tuple(FLAGS.video_outputs),
        drop_late=FLAGS.drop_late,
        batch=FLAGS.batch,
    )
    given, overrides = cli.config_given()
    command_line = saved_run.CommandLine(
        FLAGS.config, given, overrides, tuple(FLAGS.command_line_wins)
    )
    summary = predict.predict(command_line, FLAGS.checkpoint, FLAGS.input, FLAGS.output, options)
    return summary.exit_code(FLAGS.strict)


if __name__ == "__main__":
    cli.run(main)
