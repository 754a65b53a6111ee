"""What every dataset builder shares: errors, reading folders and zip archives, decoding and
checking image/label pairs, and the tfds builder that writes them.

Every example is ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1] train ids (255 = ignore),
'file_name': str}``. Images are stored as their original PNG/JPEG bytes when these decode to 8-bit
RGB, labels as PNG. Nothing is downloaded: each builder reads a *manual dir* (``manual_dir``,
default ``<data_dir>/downloads/manual``) laid out as its module's docstring says.

Bad files (undecodable image or label, image/label size mismatch, a label value the release never
uses, an image without its label) raise ``BadFileError`` naming the file with
``on_bad_file='error'``; with ``'skip'`` they are left out, logged and listed in
``builder.skipped_files``. Missing archives or folders raise ``MissingDataError`` saying what to
download from where and where to put it.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import logging
import pathlib
import zipfile
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from icnet_jax.data import labels as L

OnBadFile = Literal["error", "skip"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_log = logging.getLogger(__name__)


class MissingDataError(FileNotFoundError):
    """The manual dir lacks the archives or folders a builder needs."""


class BadFileError(ValueError):
    """An image or label file is unreadable or inconsistent; the message names it."""


# --- Reading files from folders and zip archives ---------------------------------------------


class Tree(abc.ABC):
    """Read-only files addressed by '/'-separated paths, in a folder or a zip archive."""

    @abc.abstractmethod
    def paths(self) -> list[str]: ...

    @abc.abstractmethod
    def read(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def describe(self, path: str) -> str: ...


class DirTree(Tree):
    def __init__(self, root: pathlib.Path, subdir: str = "") -> None:
        self.root, self.subdir = root, subdir

    def paths(self) -> list[str]:
        base = self.root / self.subdir
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def describe(self, path: str) -> str:
        return str(self.root / path)


class ZipTree(Tree):
    def __init__(self, archive: pathlib.Path) -> None:
        self.archive = archive
        self._zip = zipfile.ZipFile(archive)

    def paths(self) -> list[str]:
        return sorted(n for n in self._zip.namelist() if not n.endswith("/"))

    def read(self, path: str) -> bytes:
        return self._zip.read(path)

    def describe(self, path: str) -> str:
        return f"{self.archive}:{path}"


def tree_paths(root: pathlib.Path, subdir: str) -> list[str]:
    """Files below ``root/subdir`` as paths relative to ``root`` (empty if it does not exist)."""
    return DirTree(root, subdir).paths() if (root / subdir).is_dir() else []


@dataclasses.dataclass(frozen=True)
class File:
    """One file of a tree (or one that should exist, for a better message when it does not)."""

    tree: Tree
    path: str

    def read(self) -> bytes:
        try:
            return self.tree.read(self.path)
        except (OSError, KeyError) as e:
            raise BadFileError(f"{self}: cannot read ({e})") from e

    def __str__(self) -> str:
        return self.tree.describe(self.path)


@dataclasses.dataclass(frozen=True)
class Pair:
    """An image and the label file that goes with it; ``key`` is the stored file name."""

    key: str
    image: File
    label: File | None


# --- Decoding and checking -------------------------------------------------------------------


def encoded_rgb(file: File) -> tuple[bytes, tuple[int, int]]:
    """Returns PNG/JPEG bytes of an 8-bit RGB image and its (H, W); re-encodes other kinds."""
    data = file.read()
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadFileError(f"{file}: cannot decode image")
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return data, image.shape[:2]
    # Grey, alpha or 16-bit: store what tfds' decoder turns into 3 uint8 channels.
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.imencode(".png", bgr)[1].tobytes(), bgr.shape[:2]


def label_png(file: File) -> np.ndarray:
    """Raw label values of a PNG: ``[H, W]`` ints (palette PNGs give their indices), or
    ``[H, W, 3]`` RGB for colour-coded labels."""
    try:
        with Image.open(io.BytesIO(file.read())) as img:
            if img.mode in ("RGBA", "RGB"):
                return np.asarray(img.convert("RGB"))
            return np.asarray(img)
    except BadFileError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadFileError(f"{file}: cannot decode label ({e})") from e


def label_mat(file: File) -> np.ndarray:
    """Field ``S`` of a COCO-Stuff 10K annotation .mat file, ``[H, W]`` ints."""
    from scipy import io as sio  # only the 10K release needs scipy

    try:
        return np.asarray(sio.loadmat(io.BytesIO(file.read()))["S"])
    except BadFileError:
        raise
    except Exception as e:
        raise BadFileError(f"{file}: cannot read field 'S' ({e})") from e


def encoded_label(label: np.ndarray) -> bytes:
    return cv2.imencode(".png", label)[1].tobytes()


def check_label_values(label: np.ndarray, num_classes: int, where: str) -> None:
    """Raises BadFileError unless every value is a class id in [0, num_classes) or 255."""
    bad = (label >= num_classes) & (label != L.IGNORE_LABEL)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise BadFileError(f"{where}: label values {values} outside [0, {num_classes}) and not 255")


def tfds_info(builder: tfds.core.GeneratorBasedBuilder, site: str) -> tfds.core.DatasetInfo:
    """The features every builder writes; class names and palette go into ``metadata``."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=(builder.__doc__ or "").strip().splitlines()[0],
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "file_name": tfds.features.Text(),
            }
        ),
        metadata=tfds.core.MetadataDict(),
        homepage=site or None,
    )


# --- The shared builder --------------------------------------------------------------------------


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder):
    """Common features, bad-file policy and metadata; subclasses list the (image, label) pairs.

    The class names and palette are stored in ``info.metadata`` so that a prepared dataset
    describes itself without its manual dir.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: labels stored as train ids."}
    SITE = ""

    def __init__(
        self,
        *,
        manual_dir: str | pathlib.Path | None = None,
        on_bad_file: OnBadFile = "error",
        **kwargs,
    ) -> None:
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        self._manual_dir_arg = manual_dir
        self.skipped_files: list[str] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds_info(self, self.SITE)

    # Subclass interface.
    @abc.abstractmethod
    def dataset_info(self) -> L.DatasetInfo:
        """Class names and palette; may read the manual dir (custom datasets)."""

    @abc.abstractmethod
    def list_pairs(self, root: pathlib.Path) -> dict[str, list[Pair]]:
        """Split name -> pairs found below the manual dir ``root``."""

    @abc.abstractmethod
    def read_label(self, file: File) -> np.ndarray:
        """uint8 ``[H, W]`` train ids of one label file (raises ValueError/BadFileError)."""

    @property
    def manual_root(self) -> pathlib.Path:
        if self._manual_dir_arg is not None:
            return pathlib.Path(self._manual_dir_arg)
        return pathlib.Path(self._data_dir_root) / "downloads" / "manual"

    def missing(self, what: str) -> MissingDataError:
        return MissingDataError(
            f"{self.name}: {what} not found. Get it from {self.SITE} and put it in the "
            f"manual dir {self.manual_root} (get_data_source(..., manual_dir=...))."
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        root = self.manual_root
        if not root.is_dir():
            raise self.missing(f"manual dir {root}")
        info = self.dataset_info()
        self.info.metadata["class_names"] = list(info.class_names)
        self.info.metadata["palette"] = info.palette.tolist()
        return {
            split: self._generate_examples(pairs, info.num_classes)
            for split, pairs in self.list_pairs(root).items()
            if pairs  # an empty list file gives no split rather than tfds' empty-split error
        }

    def _generate_examples(self, pairs: list[Pair], num_classes: int):
        written = 0
        for pair in pairs:
            try:
                example = self._example(pair, num_classes)
            except BadFileError as e:
                if self.on_bad_file == "error":
                    raise
                _log.warning("skipping bad file: %s", e)
                self.skipped_files.append(str(e))
                continue
            written += 1
            yield pair.key, example
        if not written:
            # tfds cannot write an empty split; say why instead of its bare assertion.
            raise BadFileError(
                f"{self.name}: all {len(pairs)} files of a split are bad, e.g. "
                f"{self.skipped_files[-1]}"
            )

    def _example(self, pair: Pair, num_classes: int) -> dict:
        if pair.label is None:
            raise BadFileError(f"{pair.image}: no label file for this image")
        image, size = encoded_rgb(pair.image)
        try:
            label = self.read_label(pair.label)
        except ValueError as e:
            if isinstance(e, BadFileError):
                raise
            raise BadFileError(f"{pair.label}: {e}") from e
        if label.shape != size:
            raise BadFileError(
                f"{pair.label}: label size {label.shape} differs from size {size} of the "
                f"image {pair.image}"
            )
        check_label_values(label, num_classes, str(pair.label))
        return {"image": image, "label": encoded_label(label), "file_name": pair.key}


def table_reader(read: Callable[[File], np.ndarray], table: np.ndarray):
    def read_label(self, file: File) -> np.ndarray:
        raw = read(file)
        if raw.ndim != 2:
            raise BadFileError(f"{file}: label has shape {raw.shape}, expected one channel")
        return L.map_labels(raw, table)

    return read_label


def by_stem(tree: Tree, paths: list[str], suffixes=IMAGE_SUFFIXES) -> dict[str, str]:
    return {
        pathlib.PurePosixPath(p).stem: p
        for p in paths
        if pathlib.PurePosixPath(p).suffix.lower() in suffixes
    }
