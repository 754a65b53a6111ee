"""A user's own dataset: images and single-channel label PNGs in a folder.

Manual dir: ``images/{train,val}/<stem>.{jpg,jpeg,png,bmp}``, ``labels/{train,val}/<stem>.png``
(one channel or palette PNG of class ids), ``classes.txt`` (one class name a line, the line number
is the id), optional ``palette.txt`` (``R G B`` a line). Pixels equal to ``ignore_label``
(default 255) are ignored. Each subfolder of ``images/`` is a split.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.data import labels as L
from icnet_jax.data.builders.base import SegmentationBuilder
from icnet_jax.data.builders.decoding import label_png
from icnet_jax.data.builders.files import BadFileError, DirTree, File, Pair, by_stem, tree_paths


@dataclasses.dataclass(eq=False)
class CustomConfig(tfds.core.BuilderConfig):
    """``name`` tells prepared custom datasets apart; ``ignore_label`` is the raw ignore value."""

    ignore_label: int = L.IGNORE_LABEL


class IcnetCustom(SegmentationBuilder):
    """A user dataset: images/<split>/, labels/<split>/, classes.txt, optional palette.txt."""

    SITE = "your own annotation tool"
    MANUAL_FILES = (
        "classes.txt, images/<split>/*.jpg|png and labels/<split>/*.png of class ids "
        "(README: Your own data)"
    )

    def __init__(
        self, *, dataset_name: str = "default", ignore_label: int = L.IGNORE_LABEL, **kwargs
    ) -> None:
        kwargs.setdefault("config", CustomConfig(name=dataset_name, ignore_label=ignore_label))
        super().__init__(**kwargs)

    def _options(self) -> dict:
        return {**super()._options(), "ignore_label": self.builder_config.ignore_label}

    def dataset_info(self) -> L.DatasetInfo:
        classes_file = self.manual_root / "classes.txt"
        if not classes_file.is_file():
            raise self.missing(f"class list {classes_file}")
        names = [n.strip() for n in classes_file.read_text().splitlines() if n.strip()]
        if 0 <= self.builder_config.ignore_label < len(names):
            raise BadFileError(
                f"ignore_label {self.builder_config.ignore_label} is a class id of {classes_file}: "
                "set --config.dataset.builder_kwargs.ignore_label to the value of unlabelled pixels"
            )
        palette = None
        if (self.manual_root / "palette.txt").is_file():
            rows = (self.manual_root / "palette.txt").read_text().split("\n")
            palette = np.array([[int(v) for v in r.split()] for r in rows if r.strip()])
        return L.custom_info(self.builder_config.name, names, palette)

    def split_source(self, split: str) -> str:
        folder = self.manual_root / "images" / split
        return f"folder {folder} {'has no image' if folder.is_dir() else 'does not exist'}"

    def read_label(self, file: File) -> np.ndarray:
        raw = label_png(file)
        if raw.ndim != 2:
            raise BadFileError(f"{file}: label has shape {raw.shape}, expected one channel")
        num_classes = len(self.info.metadata["class_names"])
        return L.map_labels(raw, L.identity_table(num_classes, self.builder_config.ignore_label))

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[Pair]]:
        if not (root / "images").is_dir():
            raise self.missing(f"folder {root / 'images'}/<split>/")
        tree = DirTree(root)
        splits = {}
        for split_dir in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
            labels = by_stem(tree, tree_paths(root, f"labels/{split_dir.name}"), (".png",))
            images = by_stem(tree, tree_paths(root, f"images/{split_dir.name}"))
            splits[split_dir.name] = [
                Pair(p, File(tree, p), File(tree, labels[s]) if s in labels else None)
                for s, p in sorted(images.items())
            ]
        if not splits:
            raise self.missing(f"split folders {root / 'images'}/<split>/")
        return splits
