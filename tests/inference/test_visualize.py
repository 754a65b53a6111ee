"""Colour maps, overlays, prediction files and plots."""

import numpy as np
import pytest
from PIL import Image

from icnet_jax.data.taxonomy import CITYSCAPES
from icnet_jax.evaluation.regions import RegionAccuracy
from icnet_jax.inference.visualize import (
    colorize,
    overlay,
    plot_per_class_iou,
    plot_region_accuracy,
    save_prediction,
)

PALETTE = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 7]], np.uint8)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("dtype", [np.int64, np.uint8])  # uint8: OpenCV's table lookup
def test_colorize_values(dtype):
    labels = np.array([[0, 1, 2], [255, 2, 0]], dtype)
    got = colorize(labels, PALETTE, ignore_color=(1, 2, 3))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 3)
    expected = np.array(
        [[[10, 20, 30], [200, 100, 0], [0, 255, 7]], [[1, 2, 3], [0, 255, 7], [10, 20, 30]]]
    )
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(colorize(labels, PALETTE)[1, 0], [0, 0, 0])  # default black


@pytest.mark.parametrize("dtype", [np.int64, np.uint8])
def test_colorize_rejects_unknown_labels(dtype):
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        colorize(np.array([[0, 3, 7]], dtype), PALETTE)
    with pytest.raises(ValueError, match="255"):
        colorize(np.array([[255]], dtype), PALETTE, ignore_label=None)


def test_colorize_cityscapes_palette():
    labels = np.arange(19).reshape(1, 19)
    np.testing.assert_array_equal(colorize(labels, CITYSCAPES.palette)[0], CITYSCAPES.palette)


def test_overlay_values():
    image = np.array([[[100, 0, 255], [10, 20, 30]]], np.uint8)
    colour = np.array([[[200, 255, 0], [10, 20, 30]]], np.uint8)
    # (100+200)/2 = 150, (0+255)/2 = 127.5 -> 128 (half up), (255+0)/2 -> 128.
    np.testing.assert_array_equal(overlay(image, colour), [[[150, 128, 128], [10, 20, 30]]])
    # 0.75 * 100 + 0.25 * 200 = 125; 0.25 * 255 = 63.75 -> 64; 0.75 * 255 = 191.25 -> 191.
    np.testing.assert_array_equal(overlay(image, colour, alpha=0.25)[0, 0], [125, 64, 191])
    np.testing.assert_array_equal(overlay(image, colour, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, colour, alpha=1.0), colour)
    masked = overlay(image, colour, mask=np.array([[False, True]]))
    np.testing.assert_array_equal(masked[0, 0], image[0, 0])
    with pytest.raises(ValueError, match="shape"):
        overlay(image, colour[:, :1])


def test_overlay_of_an_image_taller_than_a_band():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 7, 3), dtype=np.uint8)
    colour = rng.integers(0, 256, (600, 7, 3), dtype=np.uint8)
    expected = np.floor(0.7 * image.astype(np.float64) + 0.3 * colour + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, colour, alpha=0.3), expected)


def test_save_prediction_files(tmp_path):
    labels = np.array([[0, 1, 2, 2], [2, 1, 0, 0]], np.int32)
    image = np.full((2, 4, 3), 100, np.uint8)
    paths = save_prediction(tmp_path, "city/img_0", image, labels, PALETTE)
    assert {k: p.name for k, p in paths.items()} == {
        "labels": "img_0_labels.png",
        "color": "img_0_color.png",
        "overlay": "img_0_overlay.png",
    }
    with Image.open(paths["labels"]) as ids:
        assert ids.mode == "L"
        np.testing.assert_array_equal(np.asarray(ids), labels)
    with Image.open(paths["color"]) as colour:
        np.testing.assert_array_equal(np.asarray(colour), PALETTE[labels])
    with Image.open(paths["overlay"]) as blended:
        expected = np.floor((100 + PALETTE[labels].astype(float)) / 2 + 0.5)
        np.testing.assert_array_equal(np.asarray(blended), expected)
    with pytest.raises(ValueError, match="resize"):
        save_prediction(tmp_path, "bad", image[:1], labels, PALETTE)
    assert set(save_prediction(tmp_path, "noimg", None, labels, PALETTE)) == {"labels", "color"}


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
    with Image.open(path) as image:
        assert image.width > 200 and image.height > 100


def test_plot_region_accuracy_from_values(tmp_path):
    rng = np.random.default_rng(0)
    series = {
        "sub24 - sub4": rng.uniform(0, 0.2, 30).tolist(),
        "sub124 - sub24": [None] * 5 + rng.uniform(-0.05, 0.1, 25).tolist(),
    }
    _assert_png(plot_region_accuracy(series, tmp_path / "fig8.png"))


def test_plot_region_accuracy_from_accumulator(tmp_path):
    rng = np.random.default_rng(1)
    label = np.kron(rng.integers(0, 5, (8, 8)), np.ones((16, 16), np.int64))
    acc = RegionAccuracy(bin_size=300, num_bins=10)
    acc.update(label, {
        "sub4": np.where(rng.random(label.shape) < 0.6, label, 0),
        "sub24": np.where(rng.random(label.shape) < 0.8, label, 0),
        "sub124": label,
    })  # fmt: skip
    _assert_png(plot_region_accuracy(acc.result(), tmp_path / "plots" / "region.png"))


def test_plot_per_class_iou(tmp_path):
    names = CITYSCAPES.class_names
    rng = np.random.default_rng(2)
    metrics = {
        branch: {n: (None if i == 16 else float(v)) for i, (n, v) in enumerate(
            zip(names, rng.uniform(0.2, 0.9, len(names))))}
        for branch in ("sub4", "sub24", "sub124")
    }  # fmt: skip
    _assert_png(plot_per_class_iou(metrics, tmp_path / "iou.png"))


@pytest.mark.parametrize("alpha", [0.0, 0.37, 0.5, 1.0])
def test_overlay_labels_is_the_blend_of_the_colour_map(alpha):
    """The table gives each pixel floor((1 - alpha) * image + alpha * palette[label] + 0.5)."""
    from icnet_jax.inference.visualize import overlay_labels

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (7, 300, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, (7, 300)).astype(np.int32)
    palette = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    expected = np.empty_like(image)
    for y, x in np.ndindex(labels.shape):
        for c in range(3):
            value = (1 - alpha) * float(image[y, x, c]) + alpha * float(palette[labels[y, x], c])
            expected[y, x, c] = int(np.floor(value + 0.5))
    np.testing.assert_array_equal(overlay_labels(image, labels, palette, alpha), expected)
    with pytest.raises(ValueError, match="outside the classes"):
        overlay_labels(image, np.full((7, 300), 5), palette, alpha)
