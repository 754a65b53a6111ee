"""Augmentations and normalisation against hand-computed expectations."""

import dataclasses

import chex
import numpy as np
import pytest

from icnet_jax import default
from icnet_jax.data import augment
from icnet_jax.data.input_spec import InputSpec

MEAN = (123.68, 116.779, 103.939)  # RGB, as in the reference
ONES = (1.0, 1.0, 1.0)


def _pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 image `[h, w, 3]` and a label `[h, w]` with a few classes and 255s."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 7, 18, 255], dtype=np.uint8), size=(h, w))
    return image, label


def _example(h: int, w: int, seed: int = 0) -> dict:
    image, label = _pair(h, w, seed)
    return {"image": image, "label": label[:, :, None], "file_name": b"aachen_000000"}


def test_random_resize_label_values_are_a_subset_and_size_follows_scale() -> None:
    image, label = _pair(37, 53)
    for seed in range(10):
        out_image, out_label = augment.random_resize(
            image, label, np.random.default_rng(seed), (0.5, 2.0)
        )
        assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
        assert out_image.shape[:2] == out_label.shape
        assert set(np.unique(out_label)) <= set(np.unique(label))
        scale_h, scale_w = out_label.shape[0] / 37, out_label.shape[1] / 53
        assert 0.5 - 1 / 37 <= scale_h <= 2.0 + 1 / 37
        assert abs(scale_h - scale_w) < 2 / 37  # one factor for both sides, up to rounding


def test_random_resize_by_two_repeats_label_pixels() -> None:
    image, label = _pair(5, 7)
    out_image, out_label = augment.random_resize(image, label, np.random.default_rng(0), (2.0, 2.0))
    np.testing.assert_array_equal(out_label, label.repeat(2, axis=0).repeat(2, axis=1))
    chex.assert_shape(out_image, (10, 14, 3))


def test_random_resize_bilinear_keeps_a_constant_image_and_rejects_bad_range() -> None:
    image = np.full((20, 30, 3), (10, 200, 77), dtype=np.uint8)
    label = np.zeros((20, 30), np.uint8)
    out_image, _ = augment.random_resize(image, label, np.random.default_rng(1), (0.5, 0.5))
    chex.assert_shape(out_image, (10, 15, 3))
    np.testing.assert_array_equal(out_image, np.broadcast_to(image[0, 0], (10, 15, 3)))
    with pytest.raises(ValueError, match="scale_range"):
        augment.random_resize(image, label, np.random.default_rng(0), (2.0, 1.0))


def test_pad_to_fills_image_with_mean_and_label_with_ignore() -> None:
    image, label = _pair(4, 6)
    out_image, out_label = augment.pad_to(image, label, (7, 5), image_fill=MEAN, ignore_label=255)
    chex.assert_shape([out_image, out_label], [(7, 6, 3), (7, 6)])
    chex.assert_type(out_image, np.float32)  # fractional fill must survive exactly
    np.testing.assert_array_equal(out_image[:4], image.astype(np.float32))
    np.testing.assert_array_equal(out_image[4:], np.broadcast_to(np.float32(MEAN), (3, 6, 3)))
    np.testing.assert_array_equal(out_label[:4], label)
    assert np.all(out_label[4:] == 255)
    # After normalisation with the same mean the padding is exactly 0.
    assert np.all(augment.normalize(out_image[4:], MEAN, ONES, bgr=True) == 0)


def test_pad_to_integer_fill_keeps_uint8_and_no_padding_returns_inputs() -> None:
    image, label = _pair(4, 6)
    out_image, out_label = augment.pad_to(image, label, 8, image_fill=(1, 2, 3), ignore_label=9)
    chex.assert_type(out_image, np.uint8)
    chex.assert_shape(out_image, (8, 8, 3))
    np.testing.assert_array_equal(out_image[:, 6:], np.broadcast_to((1, 2, 3), (8, 2, 3)))
    assert np.all(out_label[:, 6:] == 9) and np.all(out_label[4:] == 9)
    same_image, same_label = augment.pad_to(image, label, (4, 6), image_fill=MEAN)
    assert same_image is image and same_label is label


def test_random_crop_cuts_the_same_window_from_both() -> None:
    h, w = 9, 11
    # Every pixel of the label names its position, so a crop reveals its window.
    label = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    image = np.stack([label, label, label], axis=-1)
    seen_offsets = set()
    for seed in range(30):
        out_image, out_label = augment.random_crop(
            image, label, (4, 6), np.random.default_rng(seed)
        )
        chex.assert_shape([out_image, out_label], [(4, 6, 3), (4, 6)])
        top, left = divmod(int(out_label[0, 0]), w)
        np.testing.assert_array_equal(out_label, label[top : top + 4, left : left + 6])
        np.testing.assert_array_equal(out_image[..., 0], out_label)
        seen_offsets.add((top, left))
    assert len(seen_offsets) > 5
    with pytest.raises(ValueError, match="pad first"):
        augment.random_crop(image, label, (10, 4), np.random.default_rng(0))


def test_random_mirror_flips_image_and_label_together() -> None:
    image, label = _pair(6, 8)
    flips = set()
    for seed in range(20):
        out_image, out_label = augment.random_mirror(image, label, np.random.default_rng(seed))
        flipped = np.array_equal(out_label, label[:, ::-1])
        if flipped:
            np.testing.assert_array_equal(out_image, image[:, ::-1])
        else:
            np.testing.assert_array_equal(out_label, label)
            np.testing.assert_array_equal(out_image, image)
        flips.add(flipped)
    assert flips == {True, False}


def test_normalize_by_hand_rgb_and_bgr() -> None:
    image = np.array([[[10, 20, 30], [255, 0, 128]]], dtype=np.uint8)  # [1, 2, 3] RGB
    mean, std = (1.0, 2.0, 3.0), (1.0, 2.0, 5.0)
    rgb = augment.normalize(image, mean, std, bgr=False)
    bgr = augment.normalize(image, mean, std, bgr=True)
    expected_rgb = np.array([[[9.0, 9.0, 5.4], [254.0, -1.0, 25.0]]], np.float32)
    assert rgb.dtype == np.float32 and bgr.dtype == np.float32
    np.testing.assert_allclose(rgb, expected_rgb, rtol=1e-6)
    np.testing.assert_allclose(bgr, expected_rgb[..., ::-1], rtol=1e-6)
    assert bgr.flags.c_contiguous


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 5, 7, 3), (4, 3)])
@pytest.mark.parametrize("bgr", [False, True])
def test_uint8_images_are_normalised_by_table_as_floats_are(shape, bgr) -> None:
    """uint8 images take a table of the 256 values; the values are those of the float path,
    bit for bit, and within float32 rounding of a float64 reference."""
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    mean, std = (123.68, 116.779, 103.939), (58.4, 57.1, 57.4)
    table = augment.normalize(image, mean, std, bgr)
    floats = augment.normalize(image.astype(np.float32), mean, std, bgr)
    assert table.dtype == np.float32 and table.shape == shape and table.flags.c_contiguous
    np.testing.assert_array_equal(table, floats)
    order = slice(None, None, -1) if bgr else slice(None)
    pixels = image[..., order].astype(np.float64)
    reference = (pixels - np.array(mean)[order]) / np.array(std)[order]
    np.testing.assert_allclose(table, reference, rtol=1e-6, atol=1e-6)


def test_normalize_released_model_convention() -> None:
    # The release: BGR order minus the mean (B 103.939, G 116.779, R 123.68), no scaling.
    image = np.array([[[200, 100, 50]]], dtype=np.uint8)  # R, G, B
    out = augment.normalize(image, MEAN, ONES, bgr=True)
    np.testing.assert_allclose(out[0, 0], [50 - 103.939, 100 - 116.779, 200 - 123.68], rtol=1e-6)


def test_train_transform_shapes_dtypes_and_padding() -> None:
    example = _example(10, 12)
    spec = InputSpec(
        crop_size=(16, 20), scale_range=(1.0, 1.0), mirror=False, mean=MEAN, std=ONES, bgr=True
    )
    out = augment.train_transform(example, np.random.default_rng(0), spec)
    chex.assert_shape([out["image"], out["label"]], [(16, 20, 3), (16, 20)])
    chex.assert_type([out["image"], out["label"]], [np.float32, np.int32])
    # No resize and a crop the size of the padded image: the original sits top-left.
    np.testing.assert_array_equal(out["label"][:10, :12], example["label"][:, :, 0])
    np.testing.assert_allclose(
        out["image"][:10, :12], augment.normalize(example["image"], MEAN, ONES, bgr=True)
    )
    assert np.all(out["label"][10:] == 255) and np.all(out["label"][:, 12:] == 255)
    assert np.all(out["image"][10:] == 0) and np.all(out["image"][:, 12:] == 0)


def test_train_transform_is_a_function_of_the_generator() -> None:
    spec = InputSpec(
        crop_size=(8, 8), scale_range=(0.5, 2.0), mirror=True, mean=MEAN, std=ONES, bgr=True
    )
    example = _example(13, 17)
    a, b, c = (augment.train_transform(example, np.random.default_rng(s), spec) for s in (5, 5, 6))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a["image"], c["image"])


def reference_photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion in float64 with colorsys' HSV, drawing from `rng` in the
    order `augment.photometric_distortion` documents."""
    import colorsys

    x = image.astype(np.float64)

    def contrast(x):
        return np.clip(x * rng.uniform(0.5, 1.5), 0, 255) if rng.random() < 0.5 else x

    if rng.random() < 0.5:
        x = np.clip(x + rng.uniform(-32, 32), 0, 255)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        x = contrast(x)
    change_s, change_h = rng.random() < 0.5, rng.random() < 0.5
    saturation, hue = rng.uniform(0.5, 1.5), rng.uniform(-18, 18)
    if change_s or change_h:
        out = np.empty_like(x)
        for i, j in np.ndindex(x.shape[:2]):
            h, s, v = colorsys.rgb_to_hsv(*(x[i, j] / 255))
            s = min(s * saturation, 1.0) if change_s else s
            h = (h + 2 * hue / 360) % 1.0 if change_h else h
            out[i, j] = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
        x = out
    if not contrast_first:
        x = contrast(x)
    return x


def test_photometric_distortion_against_a_reference() -> None:
    image, _ = _pair(6, 7)
    image[0, :3] = (90, 90, 90)  # grey: no hue, saturation 0
    changed = 0
    for seed in range(24):
        ours = augment.photometric_distortion(image, np.random.default_rng(seed))
        expected = reference_photometric(image, np.random.default_rng(seed))
        chex.assert_type(ours, np.float32)
        chex.assert_equal_shape([ours, image])
        np.testing.assert_allclose(ours, expected, atol=2e-3)
        changed += not np.allclose(ours, image)
    assert changed >= 20  # 1/16 of draws change nothing


def test_photometric_training_leaves_the_padding_and_labels_alone() -> None:
    example = _example(10, 12)
    plain_spec = InputSpec(
        crop_size=(16, 20), scale_range=(0.75, 1.25), mirror=False, mean=MEAN, std=ONES, bgr=True
    )
    specs = (plain_spec, dataclasses.replace(plain_spec, photometric=True))
    for seed in range(6):
        plain, distorted = (
            augment.train_transform(example, np.random.default_rng(seed), spec) for spec in specs
        )
        np.testing.assert_array_equal(distorted["label"], plain["label"])
        padding = plain["label"] == 255
        padding &= np.all(plain["image"] == 0, axis=-1)  # padded, not an ignore label
        assert padding.sum() > 0
        assert np.all(distorted["image"][padding] == 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": np.zeros((4, 5, 3), np.float32)}, "image must be uint8"),
        ({"label": np.zeros((4, 5, 1), np.int32)}, "label must be uint8"),
        ({"image": np.zeros((4, 5), np.uint8)}, r"image must be \[H, W, 3\]"),
        ({"label": np.zeros((4, 5, 2), np.uint8)}, r"label must be \[H, W, 1\]"),
        ({"label": np.zeros((4, 6, 1), np.uint8)}, "image is"),
    ],
)
def test_bad_examples_raise_naming_the_file(change: dict, message: str) -> None:
    example = {
        "image": np.zeros((4, 5, 3), np.uint8),
        "label": np.zeros((4, 5, 1), np.uint8),
        "file_name": b"bad_file.png",
        **change,
    }
    with pytest.raises(ValueError, match=message) as info:
        augment.validate_example(example)
    assert "bad_file.png" in str(info.value)


def test_input_spec_from_config() -> None:
    config = default.get_config()
    config.input.crop_size = [17, 33]  # lists from the command line come back as tuples
    config.input.eval_size = (65, 129)
    config.ignore_label = 11
    spec = InputSpec.from_config(config)
    assert spec == InputSpec(
        crop_size=(17, 33),
        scale_range=(0.5, 2.0),
        mirror=True,
        mean=MEAN,
        std=ONES,
        bgr=True,
        ignore_label=11,
        photometric=False,
        eval_size=(65, 129),
    )
    config.input.eval_size = None
    assert InputSpec.from_config(config).eval_size is None
    hash(spec)  # frozen: usable as a key, safe to share between workers


def test_denormalize_inverts_normalize():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    mean, std = (123.68, 116.779, 103.939), (58.0, 57.0, 57.5)
    for bgr in (False, True):
        x = augment.normalize(image, mean, std, bgr)
        np.testing.assert_array_equal(augment.denormalize(x, mean, std, bgr), image)
