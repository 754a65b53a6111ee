"""Class pixel counts, class weights and file-name split filters (real CamVid where present)."""

import json

import chex
import numpy as np
import pytest

from configs import camvid
from icnet_jax.data import class_stats, datasets
from icnet_jax.errors import UserError
from icnet_jax.train.losses import Ohem


def test_counts_and_weights_match_their_definitions():
    labels = [
        np.array([[0, 0, 1], [255, 0, 2]], np.uint8),  # 5 labelled pixels: 3 of 0, 1 of 1, 1 of 2
        np.array([[0, 0, 0], [0, 255, 255]], np.uint8),  # 4 labelled pixels, all 0
    ]
    source = [{"label": label[..., None]} for label in labels]
    stats = class_stats.count_pixels(source, num_classes=4)
    assert stats == {"num_images": 2, "pixels": [7, 1, 1, 0], "image_pixels": [9, 5, 5, 0]}

    # SegNet: f = 7/9, 1/5, 1/5; median 1/5; class 3 absent -> 0.
    np.testing.assert_allclose(
        class_stats.median_frequency_weights(stats["pixels"], stats["image_pixels"]),
        [(1 / 5) / (7 / 9), 1.0, 1.0, 0.0],
    )
    # ENet: p = 7/9, 1/9, 1/9 of the 9 labelled pixels.
    np.testing.assert_allclose(
        class_stats.enet_weights(stats["pixels"]),
        [1 / np.log(1.02 + 7 / 9), 1 / np.log(1.02 + 1 / 9), 1 / np.log(1.02 + 1 / 9), 0.0],
    )


def test_a_label_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="label value 7"):
        class_stats.count_pixels([{"label": np.array([[7]], np.uint8)}], num_classes=4)


def camvid_config(shared_data, tmp_path, **overrides):
    config = camvid.get_config()
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.dataset.manual_dir = str(shared_data / "camvid")
    for key, value in overrides.items():
        config.loss[key] = value
    return config


def test_explicit_and_invalid_class_weights(tmp_path):
    config = camvid.get_config()
    config.loss.class_weights = "(1, 2.5, 0,1,1,1,1,1,1,1,1)"
    np.testing.assert_array_equal(
        class_stats.weights_from_config(config), [1, 2.5, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    )
    for bad in ("median", "1,-1", "0,0", "1,x"):
        config.loss.class_weights = bad
        with pytest.raises(UserError, match="class_weights"):
            class_stats.weights_from_config(config)
    config.loss.class_weights = "1,2"
    with pytest.raises(UserError, match="has 2 weights for 11 classes"):
        class_stats.weights_from_config(config, num_classes=11)
    config.loss.class_weights = ""
    assert class_stats.weights_from_config(config) is None


def test_camvid_cross_sequence_splits(shared_data, tmp_path):
    kw = dict(data_dir=tmp_path, manual_dir=shared_data / "camvid")
    train, _ = datasets.get_data_source("camvid", "train", **kw)
    without, _ = datasets.get_data_source("camvid", "train[-0006R0]", **kw)
    only, _ = datasets.get_data_source("camvid", "train[0006R0]", **kw)

    def names(source):
        return [
            s["file_name"].decode().split("/")[-1] for s in (source[i] for i in range(len(source)))
        ]

    assert (len(train), len(without), len(only)) == (367, 266, 101)
    assert all(n.startswith("0006R0") for n in names(only))
    assert not any(n.startswith("0006R0") for n in names(without))
    assert sorted(names(without) + names(only)) == sorted(names(train))
    chex.assert_shape(only[0]["image"], (360, 480, 3))
    with pytest.raises(UserError, match="0006RX"):
        datasets.get_data_source("camvid", "train[-0006RX]", **kw)
    with pytest.raises(UserError, match="leaves no example"):
        datasets.get_data_source("camvid", "val[-0016E5]", **kw)


def test_camvid_counts_are_stored_once_and_reused(shared_data, tmp_path, monkeypatch):
    config = camvid_config(shared_data, tmp_path, class_weights="median_frequency")
    config.dataset.train_split = "train[-0006R0]"
    weights = class_stats.weights_from_config(config)
    (stored,) = (tmp_path / "tfds").rglob("class_counts-*.json")
    stats = json.loads(stored.read_text())
    assert stats["split"] == "train[-0006R0]" and stats["num_images"] == 266
    # CamVid's SegNet labels: 360x480 frames, void pixels not counted.
    assert 0 < sum(stats["pixels"]) < 266 * 360 * 480
    chex.assert_shape(weights, (11,))
    assert np.all(weights > 0)
    # Thin and rare classes weigh more than road and sky.
    names = stats["class_names"]
    assert weights[names.index("pole")] > 5 * weights[names.index("road")]

    def no_recount(*args, **kwargs):
        raise AssertionError("counted again")

    monkeypatch.setattr(class_stats, "count_pixels", no_recount)
    config.loss.class_weights = "enet"
    enet = class_stats.weights_from_config(config)
    np.testing.assert_allclose(enet, class_stats.enet_weights(stats["pixels"]))


def test_ohem_options():
    config = camvid.get_config()
    assert Ohem.from_config(config.loss) is None
    config.loss.ohem = True
    assert Ohem.from_config(config.loss) == Ohem(thresh=0.7, min_kept=100_000)
    config.loss.ohem_thresh = 1.5
    with pytest.raises(UserError, match="ohem_thresh"):
        Ohem.from_config(config.loss)
