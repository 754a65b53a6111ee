"""Cityscapes (https://www.cityscapes-dataset.com, login required): 19 classes.

Manual dir: ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` as downloaded, or their
extracted folders ``leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png`` and
``gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png``. Splits train, val, test (test labels
are all ignore in the release); ``get_data_source`` also serves ``trainval`` = train + val.
labelIds are mapped to trainIds while preparing.
"""

from __future__ import annotations

import pathlib
import re
import zipfile

from icnet_jax.data import taxonomy
from icnet_jax.data.builders.base import SegmentationBuilder
from icnet_jax.data.builders.decoding import label_png, table_reader
from icnet_jax.data.builders.files import BadFileError, DirTree, File, Pair, Tree, ZipTree


class IcnetCityscapes(SegmentationBuilder):
    """Cityscapes fine annotations, 19 classes (labelIds mapped to trainIds)."""

    SITE = "the Cityscapes web site (https://www.cityscapes-dataset.com, login required)"
    MANUAL_FILES = (
        "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, or their extracted folders "
        "leftImg8bit/ and gtFine/"
    )
    _IMAGE = re.compile(r"(?:^|/)leftImg8bit/(train|val|test)/([^/]+)/([^/]+)_leftImg8bit\.png$")
    _LABEL = re.compile(r"(?:^|/)gtFine/(train|val|test)/([^/]+)/([^/]+)_gtFine_labelIds\.png$")

    def dataset_info(self) -> taxonomy.DatasetInfo:
        return taxonomy.CITYSCAPES

    read_label = table_reader(label_png, taxonomy.CITYSCAPES_TABLE)

    def _tree(self, root: pathlib.Path, folder: str, archive: str) -> Tree:
        if (root / folder).is_dir():
            return DirTree(root, folder)
        if (root / archive).is_file():
            try:
                return ZipTree(root / archive)
            except zipfile.BadZipFile as e:
                raise BadFileError(f"{root / archive}: not a valid zip archive ({e})") from e
        raise self.missing(f"{root / archive} (or its extracted folder {root / folder}/)")

    def list_pairs(self, root: pathlib.Path) -> dict[str, list[Pair]]:
        images = self._tree(root, "leftImg8bit", "leftImg8bit_trainvaltest.zip")
        gts = self._tree(root, "gtFine", "gtFine_trainvaltest.zip")
        label_of = {}
        for path in gts.paths():
            if m := self._LABEL.search(path):
                label_of[(m[1], m[3])] = File(gts, path)
        splits: dict[str, list[Pair]] = {}
        for path in images.paths():
            if m := self._IMAGE.search(path):
                split, city, stem = m[1], m[2], m[3]
                key = f"{split}/{city}/{stem}"
                splits.setdefault(split, []).append(
                    Pair(key, File(images, path), label_of.get((split, stem)))
                )
        if not splits:
            raise self.missing(f"images leftImg8bit/<split>/<city>/*_leftImg8bit.png below {root}")
        return splits
