"""Dataset layer: fakes in each official layout, prepared and read back via get_data_source."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from icnet_jax.data import taxonomy
from icnet_jax.data.builders import BadFileError, MissingDataError
from icnet_jax.data.datasets import get_builder, get_data_source, num_examples
from icnet_jax.data.synthetic_street import render_street
from icnet_jax.errors import UserError
from icnet_jax.inference.image_io import read_image
from tests.data_fakes import (
    CITYSCAPES_FRAMES,
    CITYSCAPES_IDS,
    CITYSCAPES_TRAIN_IDS,
    by_name,
    exif_jpeg,
    make_camvid_segnet,
    make_cityscapes,
    make_coco_stuff_10k,
    make_coco_stuff_164k,
    palette_png,
    png,
    random_image,
    two_colour_photo,
    write,
)

# --- labels ----------------------------------------------------------------------------------


def test_label_tables_match_hand_written_values():
    assert taxonomy.map_labels(CITYSCAPES_IDS, taxonomy.CITYSCAPES_TABLE).tolist() == (
        CITYSCAPES_TRAIN_IDS.tolist()
    )
    assert taxonomy.CITYSCAPES.num_classes == 19 and taxonomy.CAMVID.num_classes == 11
    assert taxonomy.COCO_STUFF.num_classes == 182 and taxonomy.STREET.num_classes == 9
    assert taxonomy.COCO_STUFF_CLASSES[0] == "person" and taxonomy.COCO_STUFF_CLASSES[181] == "wood"
    assert taxonomy.COCO_STUFF_CLASSES[91] == "banner"
    for info in (taxonomy.CITYSCAPES, taxonomy.CAMVID, taxonomy.COCO_STUFF, taxonomy.STREET):
        assert info.palette.shape == (info.num_classes, 3) and info.palette.dtype == np.uint8
        assert len(set(info.class_names)) == info.num_classes
    # Every one of the 32 CamVid colours is known; the 11 groups are all reached.
    assert len(taxonomy.CAMVID_32_COLOURS) == 32
    assert set(taxonomy.CAMVID_COLOUR_IDS.tolist()) == set(range(11)) | {255}
    with pytest.raises(ValueError, match=r"\[12\]"):
        taxonomy.map_labels(np.array([[3, 12]]), taxonomy.CAMVID_SEGNET_TABLE)


# --- Cityscapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "folders"])
def test_cityscapes_official_layout(tmp_path, layout):
    files = make_cityscapes(tmp_path / "manual", layout)
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "manual"}
    train, info = get_data_source("cityscapes", "train", **kw)
    assert info.class_names == taxonomy.CITYSCAPES_CLASSES and info.num_classes == 19
    assert len(train) == 3
    assert num_examples("cityscapes", "val", **kw) == 1
    assert num_examples("cityscapes", "trainval", **kw) == 4
    test, _ = get_data_source("cityscapes", "test", **kw)
    assert (test[0]["label"] == 255).all()  # the release's test labels are all "unlabeled"
    for name, ex in by_name(train).items():
        split, city, stem = name.split("/")
        assert (split, city, stem) in CITYSCAPES_FRAMES
        assert ex["image"].dtype == np.uint8 and ex["label"].shape == (*CITYSCAPES_IDS.shape, 1)
        np.testing.assert_array_equal(ex["label"][..., 0], CITYSCAPES_TRAIN_IDS)
        raw = files[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"]
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), 1), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(ex["image"], expected)


def test_cityscapes_missing_archive_names_it(tmp_path):
    manual = tmp_path / "manual"
    write(manual / "unrelated.txt", b"x")
    with pytest.raises(MissingDataError) as err:
        get_data_source("cityscapes", "train", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(err.value)
    assert "leftImg8bit_trainvaltest.zip" in message and "Cityscapes web site" in message
    assert str(manual) in message
    with pytest.raises(MissingDataError, match="manual dir"):
        get_data_source("cityscapes", "val", data_dir=tmp_path / "t2", manual_dir=tmp_path / "no")


def test_missing_manual_dir_is_one_line_naming_the_flag_and_the_files(tmp_path):
    assert issubclass(MissingDataError, FileNotFoundError) and issubclass(
        MissingDataError, UserError
    )
    assert issubclass(BadFileError, ValueError) and issubclass(BadFileError, UserError)
    with pytest.raises(MissingDataError) as err:
        get_data_source("cityscapes", "train", data_dir=tmp_path)  # no manual_dir
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert "--config.dataset.manual_dir" in message and "gtFine_trainvaltest.zip" in message
    assert str(tmp_path / "downloads" / "manual") in message and "get_data_source" not in message


def _break_cityscapes(root: pathlib.Path) -> tuple[str, str]:
    """Corrupts one image and gives another a label of the wrong size; returns both stems."""
    (_, c0, s0), (_, c1, s1) = CITYSCAPES_FRAMES[:2]
    write(root / f"leftImg8bit/train/{c0}/{s0}_leftImg8bit.png", b"not a png")
    write(root / f"gtFine/train/{c1}/{s1}_gtFine_labelIds.png", png(np.zeros((5, 5), np.uint8)))
    return s0, s1


def test_bad_files_error_mode_names_every_bad_file_of_every_split(tmp_path):
    make_cityscapes(tmp_path / "manual", "folders")
    corrupt, mismatched = _break_cityscapes(tmp_path / "manual")
    _, city, stem = CITYSCAPES_FRAMES[3]  # the val frame: a truncated label
    write(tmp_path / f"manual/gtFine/val/{city}/{stem}_gtFine_labelIds.png", b"\x89PNG")
    with pytest.raises(BadFileError) as err:
        get_data_source("cityscapes", "train", data_dir=tmp_path, manual_dir=tmp_path / "manual")
    message = str(err.value)
    assert "3 bad files" in message and "\n" not in message
    assert corrupt in message and "cannot decode image" in message
    assert mismatched in message and "size" in message
    assert stem in message and "on_bad_file=skip" in message


def test_bad_files_skip_mode_counts_them(tmp_path):
    make_cityscapes(tmp_path / "manual", "folders")
    corrupt, mismatched = _break_cityscapes(tmp_path / "manual")
    builder = get_builder(
        "cityscapes", data_dir=tmp_path, manual_dir=tmp_path / "manual", on_bad_file="skip"
    )
    assert builder.info.splits["train"].num_examples == 1
    assert builder.info.splits["val"].num_examples == 1
    assert len(builder.skipped_files) == 2
    assert corrupt in builder.skipped_files[0] or corrupt in builder.skipped_files[1]
    assert any(mismatched in s and "size" in s for s in builder.skipped_files)


# --- CamVid ----------------------------------------------------------------------------------


def test_camvid_segnet_layout(tmp_path):
    label = np.array([[0, 3, 10, 11], [11, 5, 1, 2], [4, 6, 7, 8]], np.uint8)
    make_camvid_segnet(tmp_path / "m", {"train/0001TP_006690": label, "val/Seq05VD_f00000": label})
    train, info = get_data_source("camvid", "train", data_dir=tmp_path, manual_dir=tmp_path / "m")
    assert info.class_names == taxonomy.CAMVID_CLASSES and len(train) == 1
    ex = by_name(train)["train/0001TP_006690.jpg"]
    assert ex["image"].shape == (3, 4, 3)
    expected = [[0, 3, 10, 255], [255, 5, 1, 2], [4, 6, 7, 8]]
    assert ex["label"][..., 0].tolist() == expected
    assert num_examples("camvid", "trainval", data_dir=tmp_path, manual_dir=tmp_path / "m") == 2


def test_camvid_segnet_out_of_range_label_is_bad(tmp_path):
    make_camvid_segnet(tmp_path / "m", {"train/a": np.array([[0, 12]], np.uint8)})
    with pytest.raises(BadFileError, match=r"trainannot/a\.png.*\[12\]"):
        get_data_source("camvid", "train", data_dir=tmp_path, manual_dir=tmp_path / "m")


def test_camvid_original_colour_labels(tmp_path):
    colours = taxonomy.CAMVID_32_COLOURS
    names = [
        ["Road", "LaneMkgsDriv", "Void", "Child"],
        ["TrafficCone", "Wall", "SUVPickupTruck", "MotorcycleScooter"],
    ]
    rgb = np.array([[colours[n] for n in row] for row in names], np.uint8)
    expected = [[3, 3, 255, 9], [255, 1, 8, 10]]  # road, road, void, pedestrian; ...
    root = tmp_path / "m"
    write(root / "701_StillsRaw_full/0001TP_006690.png", png(random_image(2, 4, 0)))
    write(root / "LabeledApproved_full/0001TP_006690_L.png", png(rgb))
    write(root / "701_StillsRaw_full/0016E5_07959.png", png(random_image(2, 4, 1)))
    bad = rgb.copy()
    bad[0, 0] = (1, 2, 3)
    write(root / "LabeledApproved_full/0016E5_07959_L.png", png(bad))
    (root / "train.txt").write_text("0001TP_006690.png\n0016E5_07959.png\n")
    kw = {"data_dir": tmp_path, "manual_dir": root, "config": "original"}
    with pytest.raises(BadFileError, match=r"0016E5_07959_L\.png.*\(1, 2, 3\)"):
        get_data_source("camvid", "train", **kw)
    train, _ = get_data_source("camvid", "train", on_bad_file="skip", **kw)
    assert len(train) == 1 and train[0]["label"][..., 0].tolist() == expected


# --- COCO-Stuff ------------------------------------------------------------------------------


def test_coco_stuff_10k_mat(tmp_path):
    s = np.array([[0, 1, 2], [92, 181, 182]], np.uint16)
    make_coco_stuff_10k(
        tmp_path / "m",
        {"train/COCO_train2014_000000000077": s, "test/COCO_train2014_000000000110": s},
    )
    train, info = get_data_source(
        "coco_stuff", "train", data_dir=tmp_path, manual_dir=tmp_path / "m"
    )
    assert info.num_classes == 182 and len(train) == 1
    assert train[0]["label"][..., 0].tolist() == [[255, 0, 1], [91, 180, 181]]
    assert num_examples("coco_stuff", "test", data_dir=tmp_path, manual_dir=tmp_path / "m") == 1


def test_coco_stuff_164k_png(tmp_path):
    label = np.array([[0, 181, 255], [12, 100, 0]], np.uint8)
    make_coco_stuff_164k(
        tmp_path / "m",
        {"train/000000000009": label, "val/000000000139": label, "train/000000000025": label},
    )
    kw = {"data_dir": tmp_path, "manual_dir": tmp_path / "m", "config": "164k"}
    train, _ = get_data_source("coco_stuff", "train", **kw)
    assert len(train) == 2
    assert train[0]["label"][..., 0].tolist() == label.tolist()
    assert num_examples("coco_stuff", "val", **kw) == 1


def test_coco_stuff_164k_unused_value_is_bad(tmp_path):
    make_coco_stuff_164k(tmp_path / "m", {"train/1": np.array([[200]], np.uint8)})
    with pytest.raises(BadFileError, match=r"train2017/1\.png.*\[200\]"):
        get_data_source(
            "coco_stuff", "train", data_dir=tmp_path, manual_dir=tmp_path / "m", config="164k"
        )


# --- custom ----------------------------------------------------------------------------------


def test_custom_folder_dataset(tmp_path):
    root = tmp_path / "m"
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    (root).mkdir()
    (root / "classes.txt").write_text("background\nleaf\nstem\n")
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in palette) + "\n")
    indices = np.array([[0, 1, 2], [7, 7, 1]], np.uint8)
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        write(root / f"images/{split}/{stem}.png", png(random_image(2, 3, 0)))
        write(root / f"labels/{split}/{stem}.png", palette_png(indices, palette))
    kw = {"data_dir": tmp_path, "manual_dir": root, "dataset_name": "plants", "ignore_label": 7}
    train, info = get_data_source("custom", "train", **kw)
    assert info.class_names == ("background", "leaf", "stem")
    np.testing.assert_array_equal(info.palette, palette)
    assert len(train) == 2
    assert train[0]["label"][..., 0].tolist() == [[0, 1, 2], [255, 255, 1]]
    assert num_examples("custom", "val", **kw) == 1


PLANT_COLOURS = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)


def _colour_dataset(root: pathlib.Path, ids: dict[str, np.ndarray], palette=True) -> None:
    """A three-class dataset whose labels are RGB PNGs: class i drawn in PLANT_COLOURS[i], 255
    (ignored) in white; ``palette``: write palette.txt."""
    write(root / "classes.txt", b"background\nleaf\nstem\n")
    if palette:
        lines = (" ".join(map(str, colour)) for colour in PLANT_COLOURS)
        write(root / "palette.txt", "\n".join(lines).encode())
    for key, label in ids.items():
        split, stem = key.split("/")
        write(root / f"images/{split}/{stem}.png", png(random_image(*label.shape, 0)))
        write(root / f"labels/{split}/{stem}.png", png(_colours(label)))


def _colours(ids: np.ndarray) -> np.ndarray:
    """RGB ``[H, W, 3]`` of class ids ``[H, W]``: PLANT_COLOURS, white where 255."""
    return np.concatenate([PLANT_COLOURS, np.full((253, 3), 255, np.uint8)])[ids]


def test_custom_colour_labels_become_the_palette_line_numbers(tmp_path):
    ids = {
        "train/a": np.array([[0, 1, 2], [255, 2, 1]], np.uint8),
        "train/b": np.array([[2, 2, 2], [0, 0, 255]], np.uint8),
        "val/c": np.array([[1, 0, 255], [255, 255, 255]], np.uint8),
    }
    _colour_dataset(tmp_path / "m", ids)
    rgba = np.concatenate([_colours(ids["train/b"]), np.full((2, 3, 1), 128, np.uint8)], -1)
    write(tmp_path / "m/labels/train/b.png", cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])[1])
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "m"}
    train, info = get_data_source("custom", "train", **kw)
    np.testing.assert_array_equal(info.palette, PLANT_COLOURS)
    stored = {pathlib.PurePath(n).stem: ex["label"][..., 0] for n, ex in by_name(train).items()}
    assert stored.keys() == {"a", "b"}
    np.testing.assert_array_equal(stored["a"], ids["train/a"])
    np.testing.assert_array_equal(stored["b"], ids["train/b"])
    val, _ = get_data_source("custom", "val", **kw)
    np.testing.assert_array_equal(val[0]["label"][..., 0], ids["val/c"])


def test_custom_colour_outside_the_palette_names_the_file_and_the_colour(tmp_path):
    _colour_dataset(tmp_path / "m", {"train/a": np.zeros((2, 2), np.uint8)})
    label = np.full((2, 2, 3), 10, np.uint8)
    label[0, 0] = (12, 200, 7)
    write(tmp_path / "m/labels/train/0003.png", png(label))
    write(tmp_path / "m/images/train/0003.png", png(random_image(2, 2, 0)))
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "m"}
    with pytest.raises(BadFileError) as error:
        get_data_source("custom", "train", **kw)
    message = str(error.value)
    assert (
        f"{tmp_path}/m/labels/train/0003.png: colours (10, 10, 10), (12, 200, 7) are not in "
        f"{tmp_path}/m/palette.txt (its 3 colours are the classes; (255, 255, 255) is ignored)"
    ) in message
    assert "\n" not in message and message.count("palette.txt") == 1


def test_custom_colour_labels_without_palette_are_one_short_error(tmp_path):
    _colour_dataset(
        tmp_path / "m", {f"train/{i}": np.zeros((2, 2), np.uint8) for i in range(9)}, palette=False
    )
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": tmp_path / "m", "on_bad_file": "skip"}
    with pytest.raises(MissingDataError) as error:
        get_data_source("custom", "train", **kw)
    assert str(error.value) == (
        f"{tmp_path}/m/labels/train/0.png is a colour label: list the class colours in "
        f"{tmp_path}/m/palette.txt (R G B a line, line i = class i), or save labels as one "
        "channel of class ids"
    )


def test_custom_palette_txt_errors_name_the_line(tmp_path):
    root = tmp_path / "m"
    _colour_dataset(root, {"train/a": np.zeros((2, 2), np.uint8)})
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": root}
    write(root / "palette.txt", b"10 20 30\n40 50\n70 80 90\n")
    with pytest.raises(BadFileError, match=r"palette\.txt:2: '40 50' is not 'R G B'"):
        get_data_source("custom", "train", **kw)
    write(root / "palette.txt", b"10 20 30\n40 50 60\n")
    with pytest.raises(BadFileError, match=r"palette\.txt: 2 colours for the 3 classes"):
        get_data_source("custom", "train", **kw)
    write(root / "palette.txt", b"10 20 30\n40 50 60\n10 20 30\n")
    with pytest.raises(UserError, match=r"classes 0 and 2 have the same colour \(10, 20, 30\)"):
        get_data_source("custom", "train", **kw)


def _custom_dataset(root: pathlib.Path, labels: dict[str, np.ndarray]) -> None:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nleaf\n")
    for key, label in labels.items():
        split, stem = key.split("/")
        write(root / f"images/{split}/{stem}.png", png(random_image(*label.shape, 0)))
        write(root / f"labels/{split}/{stem}.png", png(label))


def test_changed_manual_dir_is_prepared_again(tmp_path, logged):
    good, bad = np.array([[0, 1], [1, 0]], np.uint8), np.array([[0, 5], [1, 0]], np.uint8)
    root = tmp_path / "m"
    _custom_dataset(root, {f"train/{i}": bad if i in (2, 5) else good for i in range(8)})
    kw = {"data_dir": tmp_path / "tfds", "manual_dir": root, "on_bad_file": "skip"}
    assert num_examples("custom", "train", **kw) == 6
    out = logged()
    assert "Unknown size" not in out and "Downloading" not in out  # tfds' banner
    assert "prepared icnet_custom: train 6 examples" in out
    assert num_examples("custom", "train", **kw) == 6  # unchanged: reused, not prepared again
    assert "prepar" not in logged()
    for i in (2, 5):  # the user fixes the two labels
        write(root / f"labels/train/{i}.png", png(good))
    assert num_examples("custom", "train", **kw) == 8
    assert "changed since it was prepared: preparing it again" in logged()
    write(root / "images/train/8.png", png(random_image(2, 2, 0)))  # an image without label
    with pytest.raises(BadFileError, match=r"train/8\.png: no label file"):
        num_examples("custom", "train", **{**kw, "on_bad_file": "error"})
    assert num_examples("custom", "train", **kw) == 8


@pytest.mark.parametrize("stored_shape", [(64, 64), (64, 96)])
def test_custom_exif_rotated_jpeg_is_stored_as_displayed(tmp_path, stored_shape):
    # A phone photo (orientation 6) labelled on its upright view, as annotation tools show it:
    # displayed red on the right, so the label marks the right half as class 1.
    h, w = stored_shape
    root = tmp_path / "m"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("background\nred\n")
    path = write(root / "images/train/phone.jpg", exif_jpeg(two_colour_photo(h, w), 6))
    label = np.zeros((w, h), np.uint8)  # upright: w rows, h columns
    label[:, h // 2 :] = 1
    write(root / "labels/train/phone.png", png(label))
    source, _ = get_data_source("custom", "train", data_dir=tmp_path / "tfds", manual_dir=root)
    image = source[0]["image"].astype(int)
    assert image.shape == (w, h, 3)
    # Away from the edge JPEG blurs: red where the label says 1, blue where it says 0.
    assert np.abs(image[:, h // 2 + 8 :] - (255, 0, 0)).max() < 40
    assert np.abs(image[:, : h // 2 - 8] - (0, 0, 255)).max() < 40
    # Prediction decodes the same file to the same pixels.
    np.testing.assert_array_equal(source[0]["image"], read_image(path))


def test_custom_exif_label_drawn_on_stored_pixels_names_the_orientation(tmp_path):
    root = tmp_path / "m"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("background\nred\n")
    write(root / "images/train/phone.jpg", exif_jpeg(two_colour_photo(64, 96), 6))
    write(root / "labels/train/phone.png", png(np.zeros((64, 96), np.uint8)))
    with pytest.raises(BadFileError, match=r"\(96, 64\) .*EXIF orientation 6"):
        get_data_source("custom", "train", data_dir=tmp_path / "tfds", manual_dir=root)


def test_custom_missing_classes_txt(tmp_path):
    write(tmp_path / "m/images/train/a.png", png(random_image(2, 2, 0)))
    with pytest.raises(MissingDataError, match="classes.txt"):
        get_data_source("custom", "train", data_dir=tmp_path, manual_dir=tmp_path / "m")


# --- street ----------------------------------------------------------------------------------


def test_street_render_is_deterministic_and_has_small_objects():
    a = render_street(5, 256, 512, seed=0)
    b = render_street(5, 256, 512, seed=0)
    c = render_street(5, 256, 512, seed=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not (a[0] == c[0]).all()
    image, label = a
    assert image.shape == (256, 512, 3) and label.shape == (256, 512)
    assert image.dtype == label.dtype == np.uint8 and label.max() < 9
    counts = np.zeros(9)
    widths = []
    for i in range(20):
        _, lab = render_street(i, 256, 512, seed=0)
        counts += np.bincount(lab.ravel(), minlength=9)
        n, _, stats, _ = cv2.connectedComponentsWithStats((lab == 5).astype(np.uint8))
        widths += stats[1:n, cv2.CC_STAT_WIDTH].tolist()
    assert (counts > 0).all()
    # Thin classes are genuinely small: poles are a few pixels wide, all classes 5..8 < 2%.
    assert max(widths) <= 12 and np.median(widths) <= 4
    assert (counts[5:] / counts.sum() < 0.02).all()


def test_street_dataset_source(tmp_path):
    kw = {"data_dir": tmp_path, "num_train": 3, "num_val": 2, "height": 64, "width": 128}
    val, info = get_data_source("street", "val", **kw)
    assert info.class_names == taxonomy.STREET_CLASSES and len(val) == 2
    ex = by_name(val)["street_000004"]
    image, label = render_street(4, 64, 128, seed=0)
    np.testing.assert_array_equal(ex["image"], image)
    np.testing.assert_array_equal(ex["label"][..., 0], label)
    assert num_examples("street", "train", **kw) == 3


# --- real data -------------------------------------------------------------------------------


def test_real_cityscapes_sample_mapping(shared_data, tmp_path):
    root = shared_data / "cityscapes_sample"
    val, _ = get_data_source("cityscapes", "val", data_dir=tmp_path, manual_dir=root)
    assert len(val) == 1
    ex = val[0]
    name = ex["file_name"].decode()
    train_ids = cv2.imread(
        str(root / "gtFine" / f"{name}_gtFine_labelTrainIds.png"),
        cv2.IMREAD_UNCHANGED,
    )
    agreement = (ex["label"][..., 0] == train_ids).mean()
    assert agreement >= 0.997, agreement


@pytest.mark.slow
def test_real_camvid_segnet(shared_data, tmp_path):
    # The whole real copy prepares in about 3 s, so no subset is needed.
    kw = {"data_dir": tmp_path, "manual_dir": shared_data / "camvid"}
    train, info = get_data_source("camvid", "train", **kw)
    assert len(train) == 367 and info.num_classes == 11
    assert num_examples("camvid", "val", **kw) == 101
    values = set()
    for i in range(len(train)):
        ex = train[i]
        assert ex["image"].shape == (360, 480, 3) and ex["label"].shape == (360, 480, 1)
        values |= set(np.unique(ex["label"]).tolist())
    assert values == set(range(11)) | {255}
