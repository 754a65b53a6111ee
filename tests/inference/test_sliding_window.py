"""Sliding-window inference: the windows and their average against an independent numpy version
of mmsegmentation's `slide` mode, equality with whole-image inference when one window covers the
image, the automatic switch above the pixel budget, and out of memory as one error line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from icnet_jax import cli, errors
from icnet_jax import state as state_lib
from icnet_jax.inference import load as inference
from icnet_jax.inference import multiscale as test_time
from icnet_jax.inference import predict as prediction
from icnet_jax.inference import sliding_window as sw
from tests.checkpoint_fakes import NUM_CLASSES
from tests.inference.test_predict import RedBandModel, cli_config

REPO = pathlib.Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
MIX, GLOBAL = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))


def toy_window_fn(window: np.ndarray) -> np.ndarray:
    """Probabilities [h, w, 5] of each pixel and of the window's mean colour: not translation
    equivariant, so every window's own contribution shows in the average."""
    x = window.astype(np.float64) / 255
    logits = x @ MIX + x.mean(axis=(0, 1)) @ GLOBAL
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def reference_slide(image, window_fn, size, stride):
    """mmsegmentation's `slide_inference`, on a full canvas: [H, W, C] probabilities."""
    h_img, w_img = image.shape[:2]
    (h_crop, w_crop), (h_stride, w_stride) = size, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds, count = None, np.zeros((h_img, w_img), np.float64)
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            p = window_fn(image[y1:y2, x1:x2]).astype(np.float64)
            if preds is None:
                preds = np.zeros((h_img, w_img, p.shape[-1]))
            preds[y1:y2, x1:x2] += p
            count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    return preds / count[..., None]


@pytest.mark.parametrize(
    "length, window, stride, starts",
    [(10, 4, 3, [0, 3, 6]), (10, 4, 4, [0, 4, 6]), (3, 8, 5, [0]), (8, 8, 2, [0]), (9, 3, 3,
     [0, 3, 6])],
)  # fmt: skip
def test_window_starts(length, window, stride, starts):
    assert sw.window_starts(length, window, stride) == starts


SHAPES = [((37, 53), (16, 24), (11, 16)), ((37, 53), (16, 24), (16, 24)), ((20, 30), (64, 64),
          (32, 32)), ((40, 9), (7, 5), (3, 2)), ((33, 65), (33, 20), (1, 7))]  # fmt: skip


@pytest.mark.parametrize("shape, size, stride", SHAPES)
def test_the_average_is_mmsegmentations_slide_mode(shape, size, stride):
    image = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tiling = sw.Tiling(size, stride)
    bands = list(sw.averaged_bands(image, toy_window_fn, tiling))
    # Consecutive bands of at most a window's height: what bounds the memory.
    assert [top for top, _ in bands] == np.cumsum([0] + [b.shape[0] for _, b in bands])[
        :-1
    ].tolist()
    assert sum(b.shape[0] for _, b in bands) == shape[0]
    assert all(b.shape[0] <= size[0] for _, b in bands)
    got = np.concatenate([b for _, b in bands])
    expected = reference_slide(image, toy_window_fn, size, stride)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    labels = sw.segment(image, toy_window_fn, tiling, np.uint8)
    assert labels.dtype == np.uint8
    ties = np.sort(expected, -1)[..., -1] - np.sort(expected, -1)[..., -2] < 1e-4
    np.testing.assert_array_equal(labels[~ties], expected.argmax(-1)[~ties])


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return inference.load_checkpoint(tiny_checkpoint[0], cli_config())


@pytest.mark.slow  # three compilations of the network
def test_one_window_covering_the_image_is_whole_image_inference(loaded):
    """The checkpoint's ICNet: probabilities and labels identical, bit for bit."""
    image = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    whole = prediction.Segmenter(loaded)
    tiled = prediction.Segmenter(loaded, tiles=sw.TilePolicy(size=(64, 64)))
    np.testing.assert_array_equal(tiled(image), whole(image))
    model = state_lib.inference_model(loaded.config, loaded.num_classes, "sub124")
    whole_probabilities = jax.jit(
        lambda v, x: test_time.average_probabilities(model, v, x, align_corners=True)
    )
    (p,) = whole_probabilities(loaded.variables, whole._prepare(image)[None]).values()
    (band,) = sw.averaged_bands(image, tiled._window, sw.Tiling((37, 53), (37, 53)))
    assert band[0] == 0
    np.testing.assert_array_equal(band[1], np.asarray(p[0]))


def test_overlapping_windows_of_a_pointwise_model_give_its_labels(loaded, monkeypatch):
    monkeypatch.setattr(state_lib, "inference_model", lambda *a, **k: RedBandModel())
    image = RNG.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    segmenter = prediction.Segmenter(loaded, tiles=sw.TilePolicy(size=(16, 24), stride=(5, 7)))
    np.testing.assert_array_equal(segmenter(image), image[..., 0] // 32)


def test_the_switch_to_windows_above_the_pixel_budget(loaded, monkeypatch, capsys):
    monkeypatch.setattr(state_lib, "inference_model", lambda *a, **k: RedBandModel())
    calls = []
    segment = sw.segment
    monkeypatch.setattr(sw, "segment", lambda *a: calls.append(a[2]) or segment(*a))
    image = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for max_pixels, tiled in ((40 * 50, False), (40 * 50 - 1, True), (0, False)):
        calls.clear()
        segmenter = prediction.Segmenter(loaded, tiles=sw.TilePolicy(max_pixels=max_pixels))
        np.testing.assert_array_equal(segmenter(image), image[..., 0] // 32)
        # Windows of the checkpoint's training crop (33x65), every two thirds of it.
        assert calls == ([sw.Tiling((33, 65), (22, 43))] if tiled else [])
    assert "a 40x50 image (above --max_pixels=1999): segmented in 33x65 windows every 22x43" in (
        capsys.readouterr().out
    )


def test_the_default_budget_keeps_ordinary_images_whole():
    policy = sw.TilePolicy().for_checkpoint((1025, 1025))
    assert policy.tiling_for((1024, 2048, 3)) is None
    assert policy.tiling_for((2160, 3840, 3)) is None
    assert policy.tiling_for((8000, 8000, 3)) == sw.Tiling((1025, 1025), (683, 683))


def test_out_of_memory_is_one_error_naming_the_flag(loaded, monkeypatch, tmp_path):
    monkeypatch.setattr(state_lib, "inference_model", lambda *a, **k: RedBandModel())
    segmenter = prediction.Segmenter(loaded)

    def exhausted(*args):
        raise jax_runtime_error("RESOURCE_EXHAUSTED: Out of memory allocating 9000000000 bytes.")

    monkeypatch.setattr(segmenter, "_predict", exhausted)
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(sw.OutOfMemoryError, match=r"a 40x50 image whole; .*--tile=33,65"):
        segmenter(image)
    monkeypatch.setattr(segmenter, "tiles", sw.TilePolicy(size=(20, 20)).for_checkpoint((1, 1)))
    monkeypatch.setattr(segmenter, "_window", lambda w: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(sw.OutOfMemoryError, match=r"in 20x20 windows every 13x13; .*--tile=10,10"):
        segmenter(image)
    monkeypatch.setattr(segmenter, "_window", lambda w: (_ for _ in ()).throw(ValueError("x")))
    with pytest.raises(ValueError):  # anything else stays what it is
        segmenter(image)
    assert issubclass(sw.OutOfMemoryError, errors.UserError)  # cli.run: one line, exit 2


def jax_runtime_error(message):
    return jax.errors.JaxRuntimeError(message)


def test_predict_stops_at_out_of_memory_instead_of_skipping(tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(state_lib, "inference_model", lambda *a, **k: RedBandModel())

    def exhausted(self, image):
        raise sw.out_of_memory_error(image.shape, None, self.tiles)

    monkeypatch.setattr(prediction.Segmenter, "__call__", exhausted)
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(sw.OutOfMemoryError, match="--tile="):
        prediction.predict(
            cli_config(),
            tiny_checkpoint[0],
            image,
            tmp_path / "o",
            prediction.PredictOptions(progress=False),
        )


@pytest.mark.parametrize(
    "tile, stride, max_pixels, message",
    [("0,5", "", 10, "--tile=0,5: expected two positive"), ("a", "", 10, "--tile=a: expected"),
     ("", "3,x", 10, "--tile_stride=3,x"), ("8,8", "9,4", 10, "--tile_stride=9,4: larger"),
     ("", "", -1, "--max_pixels=-1: must be >= 0")],
)  # fmt: skip
def test_bad_tile_flags(tile, stride, max_pixels, message):
    with pytest.raises(errors.UserError, match=message):
        sw.make_policy(tile, stride, max_pixels)


def test_tile_flags():
    assert sw.make_policy("", "", 0) == sw.TilePolicy(max_pixels=0)
    policy = sw.make_policy("16", "8,12", 5)
    assert policy.tiling_for((10, 10)) == sw.Tiling((16, 16), (8, 12))
    with pytest.raises(errors.UserError, match="--tile_stride=40,40: larger than the window 33x65"):
        sw.make_policy("", "40,40", 5).for_checkpoint((33, 65))


def test_labels_are_of_the_classes(loaded, monkeypatch):
    monkeypatch.setattr(state_lib, "inference_model", lambda *a, **k: RedBandModel())
    segmenter = prediction.Segmenter(loaded, tiles=sw.TilePolicy(size=(8, 8)))
    labels = segmenter(RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    assert labels.dtype == np.uint8 and labels.max() < NUM_CLASSES


@pytest.mark.slow  # a subprocess
def test_predict_cli_refuses_bad_tile_flags_before_writing(tiny_checkpoint, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    command = [
        sys.executable, "predict.py", f"--checkpoint={tiny_checkpoint[0]}", f"--input={image}",
        f"--output={out}", "--tile_stride=40,40",
    ]  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == cli.EXIT_USAGE, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --tile_stride=40,40: larger than the window 33x65 would leave pixels no window "
        "covers; give a stride no larger than the window (--tile)"
    ]
    assert not out.exists()
