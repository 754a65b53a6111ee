"""Checks before preparing or training: splits a config names, leftovers of a killed preparation."""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from icnet_jax.data.builders import MissingDataError
from icnet_jax.data.datasets import check_splits, get_data_source
from icnet_jax.default import get_config
from icnet_jax.errors import UserError
from tests.data_fakes import by_name, exif_jpeg, png, random_image, two_colour_photo, write


def _custom(root: pathlib.Path, counts: dict[str, int]) -> None:
    """A two-class custom dataset with ``counts[split]`` 2x2 images per split folder."""
    write(root / "classes.txt", b"background\nleaf\n")
    for split, count in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write(root / f"images/{split}/{i}.png", png(random_image(2, 2, i)))
            write(root / f"labels/{split}/{i}.png", png(np.eye(2, dtype=np.uint8)))


def _config(tmp_path: pathlib.Path, eval_split: str = "val"):
    config = get_config()
    config.dataset.name = "custom"
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.dataset.manual_dir = str(tmp_path / "m")
    config.dataset.eval_split = eval_split
    return config


def _prepared(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    return list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_splits_present_pass(tmp_path):
    _custom(tmp_path / "m", {"train": 2, "val": 1})
    check_splits(_config(tmp_path))
    _custom(tmp_path / "m", {"train": 2})
    check_splits(_config(tmp_path, eval_split=""))  # no evaluation: no val needed


def test_missing_val_folder_names_the_folder_and_the_flag(tmp_path):
    _custom(tmp_path / "m", {"train": 2})
    with pytest.raises(UserError) as error:
        check_splits(_config(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert f"{tmp_path / 'm' / 'images' / 'val'} does not exist" in message
    assert "--config.dataset.eval_split" in message


def test_empty_val_folder_names_the_folder_and_the_flag(tmp_path):
    _custom(tmp_path / "m", {"train": 2, "val": 0})
    with pytest.raises(UserError, match=r"images/val has no image.*--config\.dataset\.eval_split"):
        check_splits(_config(tmp_path))


def test_missing_train_split_names_the_train_flag(tmp_path):
    _custom(tmp_path / "m", {"other": 2, "val": 1})
    with pytest.raises(UserError, match=r"images/train does not exist.*train_split"):
        check_splits(_config(tmp_path))


def test_empty_dataset_is_never_cached(tmp_path):
    _custom(tmp_path / "m", {"train": 0, "val": 0})
    with pytest.raises(MissingDataError, match="any image"):
        check_splits(_config(tmp_path))
    assert not _prepared(tmp_path)
    _custom(tmp_path / "m", {"train": 2, "val": 1})  # the user adds the images
    check_splits(_config(tmp_path))
    assert len(_prepared(tmp_path)) == 1


def _leftover(tmp_path: pathlib.Path) -> pathlib.Path:
    """What a preparation killed by SIGKILL leaves: tfds' half-written folder."""
    folder = tmp_path / "tfds/icnet_custom/default/incomplete.K1LLED_1.0.0"
    write(folder / "icnet_custom-train.array_record-00000-of-00001", b"half")
    return folder


def _marker(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    return tmp_path / f"tfds/icnet_custom/default/.preparing.{name}"


MARKER_HOLDER = """
import sys
import filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes stdin or kills it
"""


def _holding(marker: pathlib.Path) -> subprocess.Popen:
    """Another process registered as preparing: it holds `marker`'s lock until it ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", MARKER_HOLDER, str(marker)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_leftover_of_a_killed_preparation_is_removed_at_the_next(tmp_path, logged):
    _custom(tmp_path / "m", {"train": 2, "val": 1})
    leftover = _leftover(tmp_path)
    dead = _marker(tmp_path, "host.1")
    killed = _holding(dead)
    killed.send_signal(signal.SIGKILL)  # its registration stays, its lock goes with it
    killed.wait(timeout=60)
    assert dead.exists()
    check_splits(_config(tmp_path))
    assert not leftover.exists() and not dead.exists()
    assert f"removed {leftover}, left by an interrupted preparation" in logged()
    assert len(_prepared(tmp_path)) == 1
    assert not list((tmp_path / "tfds").rglob(".preparing.*"))  # ours is gone too


def test_leftover_kept_while_another_process_prepares(tmp_path, logged):
    _custom(tmp_path / "m", {"train": 2, "val": 1})
    leftover = _leftover(tmp_path)
    live = _marker(tmp_path, "host.2")
    holder = _holding(live)  # a running process preparing the same dataset
    try:
        check_splits(_config(tmp_path))
    finally:
        holder.communicate(timeout=60)
    assert leftover.exists() and live.exists()
    assert "removed" not in logged()


def test_raw_image_format_reads_back_what_png_storage_does(tmp_path, logged):
    _custom(tmp_path / "m", {"train": 3, "val": 1})
    write(tmp_path / "m/images/train/phone.jpg", exif_jpeg(two_colour_photo(4, 6), 6))
    write(tmp_path / "m/labels/train/phone.png", png(np.ones((6, 4), np.uint8)))
    write(tmp_path / "m/images/train/plain.jpg", exif_jpeg(random_image(8, 8, 5), 1))
    write(tmp_path / "m/labels/train/plain.png", png(np.ones((8, 8), np.uint8)))
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "m"}
    for split in ("train", "val", "train[-phone]"):
        expected = by_name(get_data_source("custom", split, **kw)[0])
        got = by_name(get_data_source("custom", split, **kw, image_format="raw")[0])
        assert sorted(got) == sorted(expected)
        for name, example in expected.items():
            for key in ("image", "label"):
                assert got[name][key].dtype == np.uint8
                np.testing.assert_array_equal(got[name][key], example[key])
    # Changing the format prepares the dataset again, in that format.
    assert "changed since it was prepared" in logged()


def test_street_raw_format_reads_back_the_rendered_scenes(tmp_path):
    kw = {"num_train": 2, "num_val": 1, "height": 32, "width": 64}
    png_source, _ = get_data_source("street", "train", data_dir=tmp_path, **kw)
    raw_source, _ = get_data_source("street", "train", data_dir=tmp_path, image_format="raw", **kw)
    for i in range(2):
        for key in ("image", "label"):
            np.testing.assert_array_equal(raw_source[i][key], png_source[i][key])


def test_unknown_image_format_is_a_user_error(tmp_path):
    _custom(tmp_path / "m", {"train": 1})
    with pytest.raises(UserError, match="image_format 'jpeg2000' is not one of png, raw"):
        get_data_source(
            "custom", "train", data_dir=tmp_path, manual_dir=tmp_path / "m", image_format="jpeg2000"
        )


def test_format_of_a_dataset_whose_manual_dir_is_gone_must_match(tmp_path):
    _custom(tmp_path / "m", {"train": 2})
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "m"}
    get_data_source("custom", "train", **kw, image_format="raw")
    shutil.rmtree(tmp_path / "m")
    assert len(get_data_source("custom", "train", **kw, image_format="raw")[0]) == 2
    with pytest.raises(MissingDataError, match="builder_kwargs.image_format=raw"):
        get_data_source("custom", "train", **kw)
    assert len(_prepared(tmp_path)) == 1  # kept
