"""Tiny fakes of each dataset's official layout, for tests/data/test_datasets.py."""

from __future__ import annotations

import pathlib
import zipfile

import cv2
import numpy as np
from PIL import Image


def png(rgb_or_gray: np.ndarray) -> bytes:
    """PNG bytes of an RGB ``[H, W, 3]`` or single-channel ``[H, W]`` uint8 array."""
    arr = rgb_or_gray
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", arr)[1].tobytes()


def write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# Cityscapes labelIds and the trainIds the official table gives for them, written out by hand.
CITYSCAPES_IDS = np.array(
    [[0, 1, 6, 7, 8, 9, 11, 12], [17, 18, 19, 20, 21, 23, 24, 26], [29, 31, 32, 33, 34, 255, 3, 7]],
    dtype=np.uint8,
)
CITYSCAPES_TRAIN_IDS = np.array(
    [
        [255, 255, 255, 0, 1, 255, 2, 3],
        [5, 255, 6, 7, 8, 10, 11, 13],
        [255, 16, 17, 18, 255, 255, 255, 0],
    ],
    dtype=np.uint8,
)

# (split, city, frame stem) of the fake Cityscapes frames.
CITYSCAPES_FRAMES = [
    ("train", "aachen", "aachen_000000_000019"),
    ("train", "bochum", "bochum_000000_000313"),
    ("train", "aachen", "aachen_000001_000019"),
    ("val", "frankfurt", "frankfurt_000000_000294"),
    ("test", "berlin", "berlin_000000_000019"),
]


def cityscapes_files() -> dict[str, bytes]:
    """Paths inside the two official archives (top folders included) -> file bytes."""
    files = {"leftImg8bit/README": b"readme", "gtFine/license.txt": b"licence"}
    h, w = CITYSCAPES_IDS.shape
    for i, (split, city, stem) in enumerate(CITYSCAPES_FRAMES):
        files[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png(random_image(h, w, i))
        ids = CITYSCAPES_IDS if split != "test" else np.zeros_like(CITYSCAPES_IDS)
        base = f"gtFine/{split}/{city}/{stem}_gtFine"
        files[f"{base}_labelIds.png"] = png(ids)
        files[f"{base}_instanceIds.png"] = png(ids)
        files[f"{base}_color.png"] = png(random_image(h, w, 99))
        files[f"{base}_polygons.json"] = b"{}"
    return files


def make_cityscapes(root: pathlib.Path, layout: str) -> dict[str, bytes]:
    """Writes the fake as the two official zips (``layout='zip'``) or extracted folders."""
    files = cityscapes_files()
    root.mkdir(parents=True, exist_ok=True)
    if layout == "zip":
        for top in ("leftImg8bit", "gtFine"):
            with zipfile.ZipFile(root / f"{top}_trainvaltest.zip", "w") as z:
                for name, data in files.items():
                    if name.startswith(top + "/"):
                        z.writestr(name, data)
    else:
        for name, data in files.items():
            write(root / name, data)
    return files


def make_camvid_segnet(root: pathlib.Path, labels: dict[str, np.ndarray]) -> None:
    """SegNet layout, JPEG images, list files with SegNet's absolute paths.

    Args:
      labels: ``'<split>/<stem>'`` -> uint8 ``[H, W]`` raw label (0..10, 11 void).
    """
    lines: dict[str, list[str]] = {}
    for i, (key, label) in enumerate(labels.items()):
        split, stem = key.split("/")
        image = random_image(*label.shape, i)
        ok, jpg = cv2.imencode(".jpg", image)
        write(root / split / f"{stem}.jpg", jpg.tobytes())
        write(root / f"{split}annot" / f"{stem}.png", png(label))
        lines.setdefault(split, []).append(
            f"/SegNet/CamVid/{split}/{stem}.jpg /SegNet/CamVid/{split}annot/{stem}.png"
        )
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("\n".join(split_lines) + "\n")


def make_coco_stuff_10k(root: pathlib.Path, labels: dict[str, np.ndarray]) -> None:
    """cocostuff-10k-v1.1 layout; ``labels``: ``'<split>/<stem>'`` -> S (0 = unlabeled)."""
    from scipy import io as sio

    lists: dict[str, list[str]] = {"train": [], "test": []}
    for i, (key, s) in enumerate(labels.items()):
        split, stem = key.split("/")
        ok, jpg = cv2.imencode(".jpg", random_image(*s.shape, i))
        write(root / "images" / f"{stem}.jpg", jpg.tobytes())
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        sio.savemat(root / "annotations" / f"{stem}.mat", {"S": s.astype(np.uint16)})
        lists[split].append(stem)
    (root / "imageLists").mkdir(parents=True, exist_ok=True)
    for split, stems in lists.items():
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(stems) + "\n")


def make_coco_stuff_164k(root: pathlib.Path, labels: dict[str, np.ndarray]) -> None:
    """COCO 2017 + stuffthingmaps layout; ``labels``: ``'<split>/<stem>'`` -> 0..181, 255."""
    for i, (key, label) in enumerate(labels.items()):
        split, stem = key.split("/")
        ok, jpg = cv2.imencode(".jpg", random_image(*label.shape, i))
        write(root / f"{split}2017" / f"{stem}.jpg", jpg.tobytes())
        write(root / "stuffthingmaps_trainval2017" / f"{split}2017" / f"{stem}.png", png(label))


def palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """A palette-mode ('P') PNG whose pixel values are ``indices``."""
    import io

    img = Image.fromarray(indices, mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = palette
    img.putpalette(flat.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def exif_jpeg(stored_rgb: np.ndarray, orientation: int) -> bytes:
    """JPEG bytes of ``stored_rgb`` (as the sensor stored it) with an EXIF orientation tag, as a
    phone writes it (6: the viewer turns it 90 degrees clockwise)."""
    import io

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored_rgb).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def two_colour_photo(height: int, width: int) -> np.ndarray:
    """Stored pixels of a phone photo: top half red, bottom half blue (uint8 ``[H, W, 3]``);
    with orientation 6 the viewer shows red on the right, blue on the left."""
    stored = np.zeros((height, width, 3), np.uint8)
    stored[: height // 2] = (255, 0, 0)
    stored[height // 2 :] = (0, 0, 255)
    return stored


def by_name(source) -> dict[str, dict]:
    """All examples of a source keyed by file name (stored order is tfds' shuffle)."""
    out = {}
    for i in range(len(source)):
        ex = source[i]
        name = ex["file_name"]
        out[name.decode() if isinstance(name, bytes) else name] = ex
    return out
