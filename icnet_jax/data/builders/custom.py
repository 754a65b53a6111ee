"""A user's own dataset: images and label PNGs in a folder.

Manual dir: ``images/{train,val}/<stem>.{jpg,jpeg,png,bmp}``, ``labels/{train,val}/<stem>.png``,
``classes.txt`` (one class name a line, the line number is the id), optional ``palette.txt``
(``R G B`` a line, line i the colour of class i). Each subfolder of ``images/`` is a split.

A label PNG holds either class ids (one channel, or a palette-mode PNG whose indices are the ids;
pixels equal to ``ignore_label``, default 255, are ignored) or colours (RGB/RGBA, as annotation
tools export them), mapped to class ids through ``palette.txt`` while preparing; there, pixels of
the grey ``(ignore_label,) * 3`` (white by default) are ignored unless that colour is a class's.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax import errors
from icnet_jax.data import taxonomy
from icnet_jax.data.builders.base import SegmentationBuilder
from icnet_jax.data.builders.decoding import label_png
from icnet_jax.data.builders.files import (
    BadFileError,
    DirTree,
    File,
    MissingDataError,
    Pair,
    by_stem,
    tree_paths,
)

PALETTE_FILE = "palette.txt"


@dataclasses.dataclass(eq=False)
class CustomConfig(tfds.core.BuilderConfig):
    """``name`` tells prepared custom datasets apart; ``ignore_label`` is the raw ignore value."""

    ignore_label: int = taxonomy.IGNORE_LABEL


class IcnetCustom(SegmentationBuilder):
    """A user dataset: images/<split>/, labels/<split>/, classes.txt, optional palette.txt."""

    SITE = "your own annotation tool"
    MANUAL_FILES = (
        "classes.txt, images/<split>/*.jpg|png and labels/<split>/*.png of class ids "
        "(or colours listed in palette.txt) (README: Your own data)"
    )

    def __init__(
        self, *, dataset_name: str = "default", ignore_label: int = taxonomy.IGNORE_LABEL, **kwargs
    ) -> None:
        kwargs.setdefault("config", CustomConfig(name=dataset_name, ignore_label=ignore_label))
        super().__init__(**kwargs)

    def _options(self) -> dict:
        return {**super()._options(), "ignore_label": self.builder_config.ignore_label}

    def dataset_info(self) -> taxonomy.DatasetInfo:
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
        if self.palette_path.is_file():
            palette = read_palette(self.palette_path, len(names))
        return taxonomy.custom_info(self.builder_config.name, names, palette)

    @property
    def palette_path(self) -> pathlib.Path:
        return self.manual_root / PALETTE_FILE

    def split_source(self, split: str) -> str:
        folder = self.manual_root / "images" / split
        return f"folder {folder} {'has no image' if folder.is_dir() else 'does not exist'}"

    def read_label(self, file: File) -> np.ndarray:
        raw = label_png(file)
        num_classes = len(self.info.metadata["class_names"])
        if raw.ndim == 2:  # class ids, or the indices of a palette-mode PNG
            table = taxonomy.identity_table(num_classes, self.builder_config.ignore_label)
            return taxonomy.map_labels(raw, table)
        if not self.palette_path.is_file():
            raise MissingDataError(
                f"{file} is a colour label: list the class colours in {self.palette_path} "
                "(R G B a line, line i = class i), or save labels as one channel of class ids"
            )
        keys, ids = self._colour_table
        try:
            return taxonomy.colour_labels_to_ids(raw, keys, ids)
        except ValueError:
            packed = taxonomy.rgb_key(raw)
            unknown = np.unique(packed[~np.isin(packed, keys)]).tolist()
            colours = ", ".join(str(_unpack(k)) for k in unknown[:5])
            verb = "are" if len(unknown) > 1 else "is"
            raise BadFileError(
                f"{file}: colour{'s' * (len(unknown) > 1)} {colours} {verb} not in "
                f"{self.palette_path} (its {num_classes} colours are the classes; "
                f"{self._ignore_note})"
            ) from None

    @functools.cached_property
    def _colour_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted packed colours (``taxonomy.rgb_key``) and their train ids, for colour labels."""
        palette = read_palette(self.palette_path, len(self.info.metadata["class_names"]))
        colours: dict[int, int] = {}
        for class_id, key in enumerate(taxonomy.rgb_key(palette).tolist()):
            if key in colours:  # a UserError of the dataset, not of one label file
                raise errors.UserError(
                    f"{self.palette_path}: classes {colours[key]} and {class_id} have the same "
                    f"colour {_unpack(key)}: colour labels cannot tell them apart"
                )
            colours[key] = class_id
        ignore = self.builder_config.ignore_label
        if 0 <= ignore <= 255:
            colours.setdefault(int(taxonomy.rgb_key(np.array([ignore] * 3))), taxonomy.IGNORE_LABEL)
        order = sorted(colours)
        return np.asarray(order, np.int32), np.asarray([colours[k] for k in order], np.uint8)

    @property
    def _ignore_note(self) -> str:
        ignore = self.builder_config.ignore_label
        if not 0 <= ignore <= 255:
            return "no colour is ignored"
        return f"{(ignore,) * 3} is ignored"

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


def read_palette(path: pathlib.Path, num_classes: int) -> np.ndarray:
    """uint8 ``[num_classes, 3]`` RGB from ``palette.txt`` (``R G B`` a line; blank lines skipped).

    Raises:
      BadFileError: a line is not three integers in [0, 255], or the count is not the classes'.
    """
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = line.replace(",", " ").split()
        if len(values) != 3 or not all(v.isdigit() and int(v) <= 255 for v in values):
            raise BadFileError(f"{path}:{number}: {line.strip()!r} is not 'R G B' (0-255 each)")
        rows.append([int(v) for v in values])
    if len(rows) != num_classes:
        raise BadFileError(
            f"{path}: {len(rows)} colours for the {num_classes} classes of classes.txt "
            "(one colour a line, line i the colour of class i)"
        )
    return np.asarray(rows, np.uint8)


def _unpack(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255
