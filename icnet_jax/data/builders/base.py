"""The tfds builder every dataset shares: features, bad-file policy, manual-dir fingerprint.

Reading the manual dir's files is ``files.py``'s, decoding and checking them ``decoding.py``'s.

Every example is ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1] train ids (255 = ignore),
'file_name': str}``. Images are decoded as prediction decodes them (``data.image_decode``:
upright per their EXIF orientation, as viewers and annotation tools show them) and stored as their
original PNG/JPEG bytes when these are 8-bit RGB stored upright, else re-encoded; labels as PNG.
Nothing is downloaded: each builder reads a *manual dir* (``manual_dir``, default
``<data_dir>/downloads/manual``) laid out as its module's docstring says.

Bad files (undecodable image or label, image/label size mismatch, a label value the release never
uses, an image without its label) are all found in one pass: with ``on_bad_file='error'`` one
``BadFileError`` then names every one of them; with ``'skip'`` they are left out, logged and listed
in ``builder.skipped_files``. Missing archives or folders raise ``MissingDataError`` saying what
the manual dir must hold, where to get it and which flag points at it. Both are
``errors.UserError``s: a command-line tool prints them as one ``error:`` line.

A prepared dataset records a fingerprint of its manual dir (every file's path, size and mtime,
and the builder options); ``changed_since_prepared`` compares it with the folder as it is now, so
that a folder fixed or extended after preparing is prepared again instead of silently reused.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import pathlib
from typing import Literal

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.data import taxonomy
from icnet_jax.data.builders import leftovers, storage
from icnet_jax.data.builders.decoding import (
    check_label_values,
    read_image,
)
from icnet_jax.data.builders.files import (
    MANUAL_DIR_FLAG,
    BadFileError,
    File,
    MissingDataError,
    Pair,
)

OnBadFile = Literal["error", "skip"]
_log = logging.getLogger(__name__)


FINGERPRINT_KEY = "source_fingerprint"


def tfds_info(builder: PreparedBuilder, site: str) -> tfds.core.DatasetInfo:
    """The features every builder writes; class names and palette go into ``metadata``."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=(builder.__doc__ or "").strip().splitlines()[0],
        features=storage.features(builder.image_format),
        metadata=tfds.core.MetadataDict(),
        homepage=site or None,
    )


class PreparedBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder whose data is generated here, never downloaded: one line of our own instead of
    tfds' "Downloading and preparing dataset Unknown size (download: Unknown size, ...)"."""

    def __init__(self, *, image_format: storage.ImageFormat = "png", **kwargs) -> None:
        storage.check_image_format(image_format)
        self.image_format = image_format  # before tfds' __init__, which reads the features
        super().__init__(**kwargs)

    def is_prepared(self) -> bool:
        # tfds logs "Variant folder ... has no dataset_info.json" for a folder not written yet.
        return (self.data_path / "dataset_info.json").exists() and super().is_prepared()

    def _log_download_bytes(self) -> None:
        _log.info(f"preparing {self.name} into {self.data_dir} (once: later runs reuse it)")

    def _log_download_done(self) -> None:
        counts = ", ".join(f"{s} {v.num_examples}" for s, v in sorted(self.info.splits.items()))
        _log.info(f"prepared {self.name}: {counts} examples")

    def changed_since_prepared(self) -> str | None:
        """Why the prepared copy no longer matches its sources (None: it still does)."""
        return None

    def download_and_prepare(self, *args, **kwargs) -> None:
        # Leftovers of a killed preparation are removed first (leftovers.py says when).
        with leftovers.preparing(pathlib.Path(str(self.data_path)).parent):
            super().download_and_prepare(*args, **kwargs)


class SegmentationBuilder(PreparedBuilder):
    """Common features, bad-file policy and metadata; subclasses list the (image, label) pairs.

    The class names and palette are stored in ``info.metadata`` so that a prepared dataset
    describes itself without its manual dir.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: labels stored as train ids."}
    SITE = ""  # where to get the data
    MANUAL_FILES = ""  # what the manual dir must hold, one phrase

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
    def dataset_info(self) -> taxonomy.DatasetInfo:
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

    @property
    def short_name(self) -> str:
        return self.name.removeprefix("icnet_")

    def needs(self) -> str:
        """What the manual dir must hold and where to get it, for error messages."""
        return f"it must hold {self.MANUAL_FILES}, from {self.SITE}"

    def split_source(self, split: str) -> str:
        """Where the files of ``split`` come from, for the message saying it has none."""
        return f"the manual dir {self.manual_root}"

    def missing(self, what: str) -> MissingDataError:
        return MissingDataError(
            f"{self.short_name}: {what} not found in the manual dir {self.manual_root}: "
            f"{self.needs()} ({MANUAL_DIR_FLAG}=FOLDER)"
        )

    def _options(self) -> dict:
        """Builder arguments that change the prepared data without changing its folder name."""
        options: dict[str, str] = {"on_bad_file": self.on_bad_file}
        if self.image_format != "png":  # so that datasets prepared before it existed still match
            options["image_format"] = self.image_format
        return options

    def source_hash(self) -> str:
        """Hash of the options and of every file below the manual dir (path, size, mtime): cheap
        (no file is read) and changed by any file added, removed, replaced or edited."""
        digest = hashlib.sha256(json.dumps(self._options(), sort_keys=True).encode())
        root = self.manual_root
        prepared = pathlib.Path(self._data_dir_root).resolve()
        for folder, subfolders, files in os.walk(root, followlinks=True):
            # A data_dir inside the manual dir is ours: it changes when we prepare.
            subfolders[:] = sorted(
                d for d in subfolders if pathlib.Path(folder, d).resolve() != prepared
            )
            for name in sorted(files):
                path = pathlib.Path(folder, name)
                stat = path.stat()
                relative = path.relative_to(root).as_posix()
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def changed_since_prepared(self) -> str | None:
        stored = self.info.metadata.get(FINGERPRINT_KEY)
        if not self.manual_root.is_dir():  # nothing to compare with or prepare from
            if (
                stored_format := self.info.metadata.get("image_format", "png")
            ) != self.image_format:
                raise MissingDataError(
                    f"{self.short_name} was prepared with image_format={stored_format} and its "
                    f"manual dir {self.manual_root} is gone: set "
                    f"--config.dataset.builder_kwargs.image_format={stored_format}"
                )
            return None
        if stored == self.source_hash():
            return None
        return (
            f"the files in {self.manual_root} (or on_bad_file, image_format) changed since it "
            "was prepared"
        )

    def download_and_prepare(self, *args, **kwargs) -> None:
        self._check_manual_dir()  # before tfds creates any folder
        super().download_and_prepare(*args, **kwargs)

    def _log_download_bytes(self) -> None:
        _log.info(f"preparing {self.name} from {self.manual_root} into {self.data_dir} (once)")

    def _check_manual_dir(self) -> None:
        root = self.manual_root
        if not root.is_dir():
            if self._manual_dir_arg is None:
                raise MissingDataError(
                    f"{self.short_name}: no manual dir given and the default {root} does not "
                    f"exist: set {MANUAL_DIR_FLAG}=FOLDER; {self.needs()}"
                )
            raise MissingDataError(
                f"{self.short_name}: manual dir {root} not found ({MANUAL_DIR_FLAG}); "
                f"{self.needs()}"
            )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        root = self.manual_root
        self._check_manual_dir()
        self.info.metadata[FINGERPRINT_KEY] = self.source_hash()
        self.info.metadata["image_format"] = self.image_format
        info = self.dataset_info()
        self.info.metadata["class_names"] = list(info.class_names)
        self.info.metadata["palette"] = info.palette.tolist()
        # An empty list file gives no split rather than tfds' empty-split error.
        splits = {split: pairs for split, pairs in self.list_pairs(root).items() if pairs}
        if not splits:  # raised before tfds writes anything: an empty dataset is never kept
            raise self.missing("any image (of any split)")
        self._bad_files: list[str] = []
        self._splits_left = len(splits)
        return {
            split: self._generate_examples(split, pairs, info.num_classes)
            for split, pairs in splits.items()
        }

    def _generate_examples(self, split: str, pairs: list[Pair], num_classes: int):
        """Yields the good pairs of a split. tfds consumes the splits one after another: bad files
        are collected over all of them and, with on_bad_file='error', reported together once the
        last split is read (or as soon as a split has no good file, which tfds cannot write)."""
        written = 0
        for pair in pairs:
            try:
                example = self._example(pair, num_classes)
            except BadFileError as e:
                self._bad_files.append(str(e))
                if self.on_bad_file == "skip":
                    _log.warning("skipping bad file: %s", e)
                    self.skipped_files.append(str(e))
                continue
            written += 1
            yield pair.key, example
        self._splits_left -= 1
        if (
            self.on_bad_file == "error"
            and self._bad_files
            and (not written or not self._splits_left)
        ):
            count = len(self._bad_files)
            raise BadFileError(
                f"{self.short_name}: {count} bad file{'s' * (count > 1)}: "
                + "; ".join(self._bad_files)
                + " (fix or remove them, or leave them out with "
                "--config.dataset.builder_kwargs.on_bad_file=skip)"
            )
        if not written:
            # tfds cannot write an empty split; say why instead of its bare assertion.
            raise BadFileError(
                f"{self.short_name}: all {len(pairs)} files of split {split!r} are bad, e.g. "
                f"{self._bad_files[-1]}"
            )

    def _example(self, pair: Pair, num_classes: int) -> dict:
        if pair.label is None:
            raise BadFileError(f"{pair.image}: no label file for this image")
        image = read_image(pair.image)
        try:
            label = self.read_label(pair.label)
        except ValueError as e:
            if isinstance(e, BadFileError):
                raise
            raise BadFileError(f"{pair.label}: {e}") from e
        size = image.pixels.shape[:2]
        if label.shape != size:
            upright = ""
            if image.orientation != 1:
                upright = f" as displayed (upright per its EXIF orientation {image.orientation})"
            raise BadFileError(
                f"{pair.label}: label size {label.shape} differs from size {size} of the "
                f"image {pair.image}{upright}"
            )
        check_label_values(label, num_classes, str(pair.label))
        # A plain PNG/JPEG is kept as it is: smaller than any re-encoding, the same pixels.
        original = pair.image.read() if image.plain and self.image_format == "png" else None
        return {
            "image": storage.stored_image(self.image_format, image.pixels, original),
            "label": storage.stored_label(self.image_format, label),
            "file_name": pair.key,
        }
