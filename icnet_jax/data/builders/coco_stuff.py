"""COCO-Stuff: 182 classes (91 thing + 91 stuff), 10K or 164K release.

config ``10k`` (cocostuff-10k-v1.1.zip, github.com/nightrome/cocostuff10k)
  ``images/*.jpg``, ``annotations/*.mat`` (field ``S``: 0 = unlabeled, 1..182 = class + 1),
  ``imageLists/train.txt``, ``imageLists/test.txt`` (one image stem a line). Splits train, test.
config ``164k`` (github.com/nightrome/cocostuff)
  ``train2017/*.jpg``, ``val2017/*.jpg`` (or ``images/{train,val}2017``) and label PNGs 0..181,
  255 = unlabeled in ``stuffthingmaps_trainval2017/{train,val}2017/`` (or
  ``annotations/{train,val}2017``). Splits train, val (those present).
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.data import taxonomy
from icnet_jax.data.builders.base import SegmentationBuilder
from icnet_jax.data.builders.decoding import label_mat, label_png, table_reader
from icnet_jax.data.builders.files import DirTree, File, Pair, by_stem, tree_paths


class IcnetCocoStuff(SegmentationBuilder):
    """COCO-Stuff, 182 classes (91 thing + 91 stuff), 10K or 164K release."""

    SITE = "the COCO-Stuff GitHub pages (github.com/nightrome/cocostuff10k, nightrome/cocostuff)"
    MANUAL_FILES = (
        "images/ annotations/ imageLists/ of cocostuff-10k-v1.1.zip (builder_kwargs.config='164k': "
        "train2017/ val2017/ and stuffthingmaps_trainval2017/)"
    )
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="10k", description="cocostuff-10k-v1.1: 9K train, 1K test"),
        tfds.core.BuilderConfig(name="164k", description="COCO 2017 train/val stuff+thing maps"),
    ]

    def dataset_info(self) -> taxonomy.DatasetInfo:
        return taxonomy.COCO_STUFF

    _label_10k = table_reader(label_mat, taxonomy.COCO_STUFF_10K_TABLE)
    _label_164k = table_reader(label_png, taxonomy.COCO_STUFF_164K_TABLE)

    def read_label(self, file: File) -> np.ndarray:
        if self.builder_config.name == "10k":
            return self._label_10k(file)
        return self._label_164k(file)

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[Pair]]:
        tree = DirTree(root)
        if self.builder_config.name == "10k":
            for sub in ("images", "annotations", "imageLists"):
                if not (root / sub).is_dir():
                    raise self.missing(f"folder {root / sub} (from cocostuff-10k-v1.1.zip)")
            images = by_stem(tree, tree_paths(root, "images"))
            labels = by_stem(tree, tree_paths(root, "annotations"), (".mat",))
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
                    Pair(
                        images[s],
                        File(tree, images[s]),
                        File(tree, labels[s]) if s in labels else None,
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
            labels = by_stem(tree, tree_paths(root, label_dir), (".png",))
            splits[split] = [
                Pair(p, File(tree, p), File(tree, labels[s]) if s in labels else None)
                for s, p in sorted(by_stem(tree, tree_paths(root, image_dir)).items())
            ]
        if not splits:
            raise self.missing(
                "train2017/ images (COCO 2017) with stuffthingmaps_trainval2017/train2017/ labels "
                "(stuffthingmaps_trainval2017.zip)"
            )
        return splits


def _first_dir(root: pathlib.Path, candidates: list[str]) -> str | None:
    return next((c for c in candidates if (root / c).is_dir()), None)
