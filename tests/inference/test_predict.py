"""predict.py: odd inputs (RGBA, grayscale, 16-bit, EXIF-rotated, corrupt, odd size, video) give
the expected files at the right sizes with valid class ids; failures are named and skipped."""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from icnet_jax import build
from icnet_jax.data import taxonomy
from icnet_jax.inference import image_io, predict, saved_run
from tests import scripts
from tests.checkpoint_fakes import NUM_CLASSES

H, W = 32, 64  # one size for images and video frames (even: mp4 keeps it), one compilation


def cli_config():
    """A command line naming another dataset (Cityscapes, 19 classes) and other settings."""
    from configs import cityscapes

    return cityscapes.get_config()


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint[0]  # dataset 'street', 9 classes


def make_inputs(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Writes the odd inputs; returns `{stem: upright (H, W)}` of those that must succeed."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA").save(
        folder / "rgba.png"
    )
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(gray, "L").save(folder / "gray.png")
    # 16-bit with the same high bytes: read_image gives the same pixels as gray.png.
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    assert Image.open(folder / "gray16.png").mode.startswith("I")
    # Stored in portrait (W x H swapped) with EXIF orientation 6: upright it is H x W.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (W, H, 3), dtype=np.uint8)).save(
        folder / "exif.jpg", exif=exif
    )
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(folder / "odd.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with image_io.VideoWriter(folder / "clip.mp4", 5.0, (W, H)) as writer:
        for _ in range(3):
            writer.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return {"rgba": (H, W), "gray": (H, W), "gray16": (H, W), "exif": (H, W), "odd": (37, 53)}


class RedBandModel:
    """Stands in for ICNet: class = red value // 32 (0..7 of 9), pixel by pixel."""

    def apply(self, variables, images):
        classes = jnp.floor(images[..., 0] / 32.0).astype(jnp.int32)
        return 10.0 * jax.nn.one_hot(classes, NUM_CLASSES)


def check_outputs(out, sizes, printed, inputs=None):
    palette = {
        tuple(c) for c in taxonomy.STREET_PALETTE
    }  # the checkpoint's dataset, not Cityscapes
    for stem, size in sizes.items():
        labels = Image.open(out / f"{stem}_labels.png")
        assert labels.mode == "L"
        labels = np.asarray(labels)
        assert labels.shape == size, stem
        assert labels.max() < NUM_CLASSES
        if inputs is not None:  # RedBandModel: exact labels from the upright RGB image
            (path,) = inputs.glob(f"{stem}.*")
            np.testing.assert_array_equal(labels, image_io.read_image(path)[..., 0] // 32)
        colour = image_io.read_image(out / f"{stem}_color.png")
        assert colour.shape == (*size, 3)
        assert {tuple(c) for c in colour.reshape(-1, 3)} <= palette
        assert image_io.read_image(out / f"{stem}_overlay.png").shape == (*size, 3)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "gray_labels.png")),
        np.asarray(Image.open(out / "gray16_labels.png")),
    )
    assert not list(out.glob("corrupt*"))
    fps, frames = image_io.iter_video_frames(out / "clip_overlay.mp4")
    frames = list(frames)
    assert fps == pytest.approx(5.0) and len(frames) == 3
    assert all(f.shape == (H, W, 3) for f in frames)
    assert "3 frames" in printed and "fps" in printed


def test_odd_inputs_give_the_expected_files(tmp_path, checkpoint, logged, monkeypatch):
    """Every kind of input, with a stand-in network (fast): files, sizes and exact labels."""
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    inputs = tmp_path / "in"
    sizes = make_inputs(inputs)
    out = tmp_path / "out"
    summary = predict.predict(
        cli_config(), checkpoint, inputs, out, predict.PredictOptions(progress=False)
    )

    assert [pathlib.Path(p).name for p, _ in summary.failed] == ["corrupt.png"]
    assert "corrupt.png" in summary.failed[0][1]  # the reason names the file
    assert len(summary.succeeded) == len(sizes) + 1  # + the video
    printed = logged()
    assert "6 of 7 inputs segmented" in printed and "corrupt.png" in printed
    # The checkpoint's normalisation (RGB, mean 0, std 1) feeds the model, not Cityscapes' BGR.
    assert "input.bgr = False   (command line: True)" in printed
    assert summary.exit_code() == 0 and summary.exit_code(strict=True) == 1
    check_outputs(out, sizes, printed, inputs)


@pytest.mark.slow  # two compilations of the network
def test_odd_inputs_through_icnet(tmp_path, checkpoint, logged):
    inputs = tmp_path / "in"
    sizes = make_inputs(inputs)
    out = tmp_path / "out"
    summary = predict.predict(
        cli_config(), checkpoint, inputs, out, predict.PredictOptions(progress=False)
    )
    assert len(summary.succeeded) == 6 and len(summary.failed) == 1
    check_outputs(out, sizes, logged())
    classes = set()
    for stem in sizes:
        classes |= set(np.unique(np.asarray(Image.open(out / f"{stem}_labels.png"))).tolist())
    assert len(classes) > 1


def test_collect_inputs_names_and_kinds(tmp_path):
    for name in ("b.png", "a.png", "a.JPG", "sub/c.png", ".hidden.png", "notes.txt", "v.MP4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items = predict.collect_inputs(tmp_path)
    assert [(i.path.name, i.stem, i.kind) for i in items] == [
        ("a.JPG", "a", "image"),
        ("a.png", "a_png", "image"),
        ("b.png", "b", "image"),
        ("v.MP4", "v", "video"),
    ]
    deep = predict.collect_inputs(tmp_path, recursive=True)
    assert "sub/c" in [i.stem for i in deep]
    assert [i.stem for i in predict.collect_inputs(tmp_path / "b.png")] == ["b"]
    with pytest.raises(FileNotFoundError):
        predict.collect_inputs(tmp_path / "missing.png")


def test_palette_falls_back_to_a_generated_one():
    assert saved_run.dataset_info_for("street", 9) is taxonomy.STREET
    info = saved_run.dataset_info_for("street", 4)  # another number of classes
    assert info.num_classes == 4
    np.testing.assert_array_equal(info.palette, taxonomy.generated_palette(4))
    assert saved_run.dataset_info_for("custom", 3).class_names == ("class_0", "class_1", "class_2")


@pytest.mark.slow
def test_predict_cli_exit_codes(tmp_path, checkpoint):
    make_inputs(tmp_path / "in")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

    def run(*args):
        return scripts.run("predict.py", f"--checkpoint={checkpoint}", *args, env=env)

    done = run(f"--input={tmp_path / 'in' / 'odd.png'}", f"--output={tmp_path / 'o'}",
               "--branch=sub4")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert np.asarray(Image.open(tmp_path / "o" / "odd_labels.png")).shape == (37, 53)
    bad = run(f"--input={tmp_path / 'in' / 'corrupt.png'}", f"--output={tmp_path / 'o'}")
    assert bad.returncode == 1 and "corrupt.png" in bad.stdout
    missing = run(f"--input={tmp_path / 'none'}", f"--output={tmp_path / 'o'}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


class ShapeRecorder:
    """Stands in for a network: records the input sizes it is traced with."""

    def __init__(self):
        self.sizes = []

    def apply(self, variables, images):
        self.sizes.append(tuple(images.shape[1:3]))
        return jnp.zeros((*images.shape[:3], 3))


@pytest.mark.parametrize("eval_size", [None, (25, 41)])
@pytest.mark.parametrize("flip", [False, True])
def test_network_sizes_are_the_inputs_the_prediction_feeds(eval_size, flip):
    """What an onnxruntime network is made ready for before tracing (onnx_backend.prepare)."""
    from icnet_jax.inference import test_time

    model, scales = ShapeRecorder(), (0.5, 1.0, 1.25, 1.0)
    predict_fn = test_time.make_predict_fn(model, 3, eval_size=eval_size, scales=scales, flip=flip)
    jax.eval_shape(predict_fn, {}, jnp.zeros((1, 37, 53, 3)))
    assert test_time.network_sizes((37, 53), scales, eval_size) == list(dict.fromkeys(model.sizes))


class RandomLogits:
    """Stands in for a network: fixed random logits `[N, H, W, 5]`, a few pixels with two
    classes tied at the top."""

    def __init__(self, shape):
        logits = np.random.default_rng(3).normal(0, 4, (*shape, 5)).astype(np.float32)
        logits[:, :2, :2, 3] = logits[:, :2, :2].max(axis=-1)  # ties: the first index wins
        self.logits = logits

    def apply(self, variables, images):
        return {"sub124": jnp.asarray(self.logits)}


def test_one_pass_labels_are_the_argmax_of_the_softmax():
    """`predict_labels` without test-time averaging skips the softmax; its labels are those of
    the probabilities, computed here in float64 numpy."""
    from icnet_jax.inference import test_time

    model = RandomLogits((2, 9, 13))
    labels = test_time.predict_labels(model, {}, jnp.zeros((2, 9, 13, 3)), 5)["sub124"]
    z = model.logits.astype(np.float64)
    probabilities = np.exp(z - z.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    assert labels.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(labels), probabilities.argmax(-1))


def test_auto_backend_without_the_extras_runs_jax(tmp_path, checkpoint, logged, monkeypatch):
    """`--backend=auto` where the export extras are absent (simulated): JAX, said in one line."""
    from icnet_jax.inference import onnx_backend

    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    monkeypatch.setattr(onnx_backend, "extras_available", lambda: False)
    monkeypatch.setattr(onnx_backend.jax, "default_backend", lambda: "cpu")
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    options = predict.PredictOptions(progress=False, backend=onnx_backend.Backend("auto"))
    summary = predict.predict(cli_config(), checkpoint, image, tmp_path / "out", options)
    assert summary.exit_code(strict=True) == 0
    lines = [x for x in logged().splitlines() if x.startswith("backend:")]
    assert len(lines) == 1 and lines[0].startswith("backend: jax (auto: no export extras")
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    np.testing.assert_array_equal(labels, pixels[..., 0] // 32)  # the JAX stand-in ran


def test_a_folder_of_frames_gives_one_video_and_label_frames(tmp_path, checkpoint, monkeypatch):
    """`--frames --video_outputs=overlay,color,labels` with the stand-in network: every frame
    in order, exact labels."""
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        (tmp_path / "seq").mkdir(exist_ok=True)
        Image.fromarray(frame).save(tmp_path / "seq" / f"{i:03d}.png")
    options = predict.PredictOptions(
        progress=False, frames=True, fps=7.0, video_outputs=predict.VIDEO_OUTPUTS
    )
    summary = predict.predict(cli_config(), checkpoint, tmp_path / "seq", tmp_path / "o", options)
    assert summary.exit_code(strict=True) == 0
    fps, video = image_io.iter_video_frames(tmp_path / "o" / "seq_color.mp4")
    assert fps == pytest.approx(7.0) and len(list(video)) == 5
    assert len(list(image_io.iter_video_frames(tmp_path / "o" / "seq_overlay.mp4")[1])) == 5
    for i, frame in enumerate(frames):
        labels = np.asarray(Image.open(tmp_path / "o" / "seq_labels" / f"{i:06d}.png"))
        np.testing.assert_array_equal(labels, frame[..., 0] // 32)


def test_batches_of_same_size_images_give_the_same_files(tmp_path, checkpoint, logged, monkeypatch):
    """`--batch=3` over images of two sizes, a corrupt one and a video: the files and exact
    labels of one at a time, the batches grouped by size (4 of 32x64 in batches of 3 and 1)."""
    calls = []

    class Recorder(RedBandModel):
        def apply(self, variables, images):
            calls.append(images.shape[0])
            return super().apply(variables, images)

    monkeypatch.setattr(build, "inference_model", lambda *a, **k: Recorder())
    inputs = tmp_path / "in"
    sizes = make_inputs(inputs)
    out = tmp_path / "out"
    options = predict.PredictOptions(progress=False, batch=3)
    summary = predict.predict(cli_config(), checkpoint, inputs, out, options)
    assert [pathlib.Path(p).name for p, _ in summary.failed] == ["corrupt.png"]
    assert len(summary.succeeded) == len(sizes) + 1
    check_outputs(out, sizes, logged(), inputs)
    assert 3 in calls  # traced once per batch shape: 3 and 1 images of 32x64, 1 of 37x53
