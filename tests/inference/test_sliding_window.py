"""Sliding-window inference: the windows and their logits' average against an independent numpy
version of mmsegmentation's `slide` mode, the view resized to the eval size first, equality with
whole-image inference when one window covers the image (with and without an eval size), the
automatic switch above the pixel budget, and out of memory as one error line."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from PIL import Image

from icnet_jax import build, cli, errors
from icnet_jax.inference import predict, saved_run, sliding_window, test_time
from tests import numpy_reference as ref
from tests import scripts
from tests.checkpoint_fakes import NUM_CLASSES
from tests.inference.test_predict import RedBandModel, cli_config

RNG = np.random.default_rng(0)
MIX, GLOBAL = RNG.normal(size=(2, 3, 5)), RNG.normal(size=(2, 3, 5))


def toy_window_fn(window: np.ndarray) -> np.ndarray:
    """Logits [h, w, 2 passes, 5] of each pixel and of the window's mean colour: not translation
    equivariant, so every window's own contribution shows in the average."""
    x = window.astype(np.float64) / 255
    logits = np.einsum("hwc,pck->hwpk", x, 3 * MIX) + np.einsum("c,pck->pk", x.mean((0, 1)), GLOBAL)
    return logits.astype(np.float32)


def reference_slide(image, window_fn, size, stride):
    """mmsegmentation's `slide_inference`, on a full canvas: the windows' logits summed into
    `preds`, divided by `count_mat` ([H, W, ...] float64)."""
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
                preds = np.zeros((h_img, w_img, *p.shape[2:]))
            preds[y1:y2, x1:x2] += p
            count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    return preds / count.reshape(count.shape + (1,) * (preds.ndim - 2))


def reference_probabilities(logits):
    """[H, W, passes, C] averaged logits -> [H, W, C]: softmax per pass, passes averaged."""
    return ref.softmax_probabilities(logits).mean(axis=2)


def not_tied(p, tolerance=1e-4):
    top = np.sort(p, -1)
    return top[..., -1] - top[..., -2] >= tolerance


@pytest.mark.parametrize(
    "length, window, stride, starts",
    [(10, 4, 3, [0, 3, 6]), (10, 4, 4, [0, 4, 6]), (3, 8, 5, [0]), (8, 8, 2, [0]), (9, 3, 3,
     [0, 3, 6])],
)  # fmt: skip
def test_window_starts(length, window, stride, starts):
    assert sliding_window.window_starts(length, window, stride) == starts


SHAPES = [((37, 53), (16, 24), (11, 16)), ((37, 53), (16, 24), (16, 24)), ((20, 30), (64, 64),
          (32, 32)), ((40, 9), (7, 5), (3, 2)), ((33, 65), (33, 20), (1, 7))]  # fmt: skip


@pytest.mark.parametrize("shape, size, stride", SHAPES)
def test_the_average_is_mmsegmentations_slide_mode(shape, size, stride):
    image = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tiling = sliding_window.Tiling(size, stride)
    bands = list(sliding_window.averaged_bands(image, toy_window_fn, tiling))
    # Consecutive bands of at most a window's height: what bounds the memory.
    assert [top for top, _ in bands] == np.cumsum([0] + [b.shape[0] for _, b in bands])[
        :-1
    ].tolist()
    assert sum(b.shape[0] for _, b in bands) == shape[0]
    assert all(b.shape[0] <= size[0] for _, b in bands)
    got = np.concatenate([b for _, b in bands])
    expected = reference_slide(image, toy_window_fn, size, stride)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    labels = sliding_window.segment(image, toy_window_fn, tiling, np.uint8)
    assert labels.dtype == np.uint8
    p = reference_probabilities(expected)
    np.testing.assert_array_equal(labels[not_tied(p)], p.argmax(-1)[not_tied(p)])


@pytest.mark.parametrize("align_corners", [True, False])
def test_probabilities_are_resized_to_the_image_before_the_labels(align_corners):
    """The view was the image resized (to an eval size): labels at the image's own size."""
    view = RNG.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    tiling = sliding_window.Tiling((16, 16), (8, 12))
    labels = sliding_window.segment(
        view, toy_window_fn, tiling, np.int32, output_size=(45, 37), align_corners=align_corners
    )
    assert labels.shape == (45, 37) and labels.dtype == np.int32
    p = reference_probabilities(reference_slide(view, toy_window_fn, (16, 16), (8, 12)))
    p = ref.resize_bilinear(p[None], (45, 37), align_corners)[0]
    np.testing.assert_array_equal(labels[not_tied(p)], p.argmax(-1)[not_tied(p)])


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return saved_run.load_checkpoint(tiny_checkpoint[0], cli_config())


def with_eval_size(loaded, eval_size):
    config = loaded.config.copy_and_resolve_references()
    config.input.eval_size = eval_size
    return dataclasses.replace(loaded, config=config)


@pytest.mark.slow  # four compilations of the network
@pytest.mark.parametrize("flip", [False, True])
def test_one_window_covering_the_image_is_whole_image_inference(loaded, flip):
    """The checkpoint's ICNet: identical labels; the probabilities equal to rounding (the softmax
    is compiled apart from the network, a few probabilities differ in their last digits)."""
    image = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    whole = predict.Segmenter(loaded, flip=flip)
    tiled = predict.Segmenter(loaded, flip=flip, tiles=sliding_window.TilePolicy(size=(64, 64)))
    np.testing.assert_array_equal(tiled(image), whole(image))
    model = build.inference_model(loaded.config, loaded.num_classes, "sub124")
    whole_probabilities = jax.jit(
        lambda v, x: test_time.average_probabilities(model, v, x, align_corners=True, flip=flip)
    )
    (p,) = whole_probabilities(loaded.variables, whole.prepare(image)[None]).values()
    window_fn = lambda w: tiled._window(tiled.prepare(w))  # noqa: E731
    (band,) = sliding_window.averaged_bands(
        image, window_fn, sliding_window.Tiling((37, 53), (37, 53))
    )
    assert band[0] == 0 and band[1].shape == (37, 53, 2 if flip else 1, NUM_CLASSES)
    probabilities = np.asarray(sliding_window._probabilities(band[1]))
    np.testing.assert_allclose(probabilities, np.asarray(p[0]), rtol=1e-3, atol=1e-6)


def pointwise_probabilities(red: np.ndarray, size) -> np.ndarray:
    """RedBandModel's probabilities of a view's red channel `[h, w]`, resized to `size`."""
    p = ref.softmax_probabilities(10 * np.eye(NUM_CLASSES)[np.floor(red / 32).astype(int)])
    return ref.resize_bilinear(p[None], size)[0]


@pytest.mark.parametrize("eval_size", [(25, 41), (49, 65)])  # smaller and larger than the image
def test_windows_see_the_image_resized_to_the_eval_size(loaded, eval_size, monkeypatch, logged):
    """Whole images go to the network at the eval size: a window covering that view (a --tile
    at least the image's size and the eval size) gives the same labels; smaller windows tile the
    view, whose size (not the image's) decides their number and size."""
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    loaded = with_eval_size(loaded, eval_size)
    image = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    whole = predict.Segmenter(loaded)(image)
    tiled = predict.Segmenter(loaded, tiles=sliding_window.TilePolicy(size=(64, 72)))(image)
    np.testing.assert_array_equal(tiled, whole)
    # The pointwise model's labels of the view, resized as probabilities to the image's size;
    # pixels whose view has a red value at a class boundary (float32 rounding) are not compared.
    view = ref.resize_bilinear(image[None].astype(np.float64), eval_size)[0, ..., 0]
    p, q = (pointwise_probabilities(view + d, image.shape[:2]) for d in (-1e-3, 1e-3))
    compared = not_tied(p) & not_tied(q) & (p.argmax(-1) == q.argmax(-1))
    windows = []
    segmenter = predict.Segmenter(
        loaded, tiles=sliding_window.TilePolicy(size=(24, 40), stride=(16, 24))
    )
    window = segmenter._window
    segmenter._window = lambda w: windows.append(w.shape) or window(w)
    labels = segmenter(image)
    assert compared.mean() > 0.9
    np.testing.assert_array_equal(labels[compared], p.argmax(-1)[compared])
    starts = [
        sliding_window.window_starts(n, t, s) for n, t, s in zip(eval_size, (24, 40), (16, 24))
    ]
    assert windows == [(24, 40, 3)] * (len(starts[0]) * len(starts[1]))
    assert "of it resized to input.eval_size" in logged()


@pytest.mark.slow  # three compilations of the network
def test_a_covering_window_reproduces_whole_image_inference_at_an_eval_size(loaded):
    loaded = with_eval_size(loaded, (25, 41))
    image = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    whole = predict.Segmenter(loaded)(image)
    np.testing.assert_array_equal(
        predict.Segmenter(loaded, tiles=sliding_window.TilePolicy(size=(37, 53)))(image), whole
    )
    # Windows over the image's own pixels (no eval size) would not: the old behaviour.
    unresized = predict.Segmenter(
        with_eval_size(loaded, None), tiles=sliding_window.TilePolicy((37, 53))
    )
    assert np.mean(unresized(image) != whole) > 0.01


def test_overlapping_windows_of_a_pointwise_model_give_its_labels(loaded, monkeypatch):
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    image = RNG.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    segmenter = predict.Segmenter(
        loaded, tiles=sliding_window.TilePolicy(size=(16, 24), stride=(5, 7))
    )
    np.testing.assert_array_equal(segmenter(image), image[..., 0] // 32)


def test_the_switch_to_windows_above_the_pixel_budget(loaded, monkeypatch, logged):
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    calls = []
    segment = sliding_window.segment

    def record(*args, **kwargs):
        calls.append(args[2])
        return segment(*args, **kwargs)

    monkeypatch.setattr(sliding_window, "segment", record)
    image = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for max_pixels, tiled in ((40 * 50, False), (40 * 50 - 1, True), (0, False)):
        calls.clear()
        segmenter = predict.Segmenter(
            loaded, tiles=sliding_window.TilePolicy(max_pixels=max_pixels)
        )
        np.testing.assert_array_equal(segmenter(image), image[..., 0] // 32)
        # Windows of the checkpoint's training crop (33x65), every two thirds of it.
        assert calls == ([sliding_window.Tiling((33, 65), (22, 43))] if tiled else [])
    assert "a 40x50 image (above --max_pixels=1999): segmented in 33x65 windows every 22x43" in (
        logged()
    )


def test_the_default_budget_keeps_ordinary_images_whole():
    policy = sliding_window.TilePolicy().for_checkpoint((1025, 1025))
    assert policy.tiling_for((1024, 2048, 3)) is None
    assert policy.tiling_for((2160, 3840, 3)) is None
    assert policy.tiling_for((8000, 8000, 3)) == sliding_window.Tiling((1025, 1025), (683, 683))


def test_out_of_memory_is_one_error_naming_the_flag(loaded, monkeypatch, tmp_path):
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    segmenter = predict.Segmenter(loaded)

    def exhausted(*args):
        raise jax_runtime_error("RESOURCE_EXHAUSTED: Out of memory allocating 9000000000 bytes.")

    monkeypatch.setattr(segmenter, "_predict", exhausted)
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(
        sliding_window.OutOfMemoryError, match=r"a 40x50 image whole; .*--tile=33,65"
    ):
        segmenter(image)
    monkeypatch.setattr(
        segmenter, "tiles", sliding_window.TilePolicy(size=(20, 20)).for_checkpoint((1, 1))
    )
    monkeypatch.setattr(segmenter, "_window", lambda w: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(
        sliding_window.OutOfMemoryError, match=r"in 20x20 windows every 13x13; .*--tile=10,10"
    ):
        segmenter(image)
    monkeypatch.setattr(segmenter, "_window", lambda w: (_ for _ in ()).throw(ValueError("x")))
    with pytest.raises(ValueError):  # anything else stays what it is
        segmenter(image)
    assert issubclass(
        sliding_window.OutOfMemoryError, errors.UserError
    )  # cli.run: one line, exit 2


def jax_runtime_error(message):
    return jax.errors.JaxRuntimeError(message)


def test_predict_stops_at_out_of_memory_instead_of_skipping(tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())

    def exhausted(self, image):
        raise sliding_window.out_of_memory_error(image.shape, None, self.tiles)

    monkeypatch.setattr(predict.Segmenter, "__call__", exhausted)
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(sliding_window.OutOfMemoryError, match="--tile="):
        predict.predict(
            cli_config(),
            tiny_checkpoint[0],
            image,
            tmp_path / "o",
            predict.PredictOptions(progress=False),
        )


@pytest.mark.parametrize(
    "tile, stride, max_pixels, message",
    [("0,5", "", 10, "--tile=0,5: expected two positive"), ("a", "", 10, "--tile=a: expected"),
     ("", "3,x", 10, "--tile_stride=3,x"), ("8,8", "9,4", 10, "--tile_stride=9,4: larger"),
     ("", "", -1, "--max_pixels=-1: must be >= 0")],
)  # fmt: skip
def test_bad_tile_flags(tile, stride, max_pixels, message):
    with pytest.raises(errors.UserError, match=message):
        sliding_window.make_policy(tile, stride, max_pixels)


def test_tile_flags():
    assert sliding_window.make_policy("", "", 0) == sliding_window.TilePolicy(max_pixels=0)
    policy = sliding_window.make_policy("16", "8,12", 5)
    assert policy.tiling_for((10, 10)) == sliding_window.Tiling((16, 16), (8, 12))
    with pytest.raises(errors.UserError, match="--tile_stride=40,40: larger than the window 33x65"):
        sliding_window.make_policy("", "40,40", 5).for_checkpoint((33, 65))


def test_labels_are_of_the_classes(loaded, monkeypatch):
    monkeypatch.setattr(build, "inference_model", lambda *a, **k: RedBandModel())
    segmenter = predict.Segmenter(loaded, tiles=sliding_window.TilePolicy(size=(8, 8)))
    labels = segmenter(RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    assert labels.dtype == np.uint8 and labels.max() < NUM_CLASSES


@pytest.mark.slow  # a subprocess
def test_predict_cli_refuses_bad_tile_flags_before_writing(tiny_checkpoint, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    done = scripts.run(
        "predict.py", f"--checkpoint={tiny_checkpoint[0]}", f"--input={image}",
        f"--output={out}", "--tile_stride=40,40", env=env,
    )  # fmt: skip
    assert done.returncode == cli.EXIT_USAGE, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --tile_stride=40,40: larger than the window 33x65 would leave pixels no window "
        "covers; give a stride no larger than the window (--tile)"
    ]
    assert not out.exists()
