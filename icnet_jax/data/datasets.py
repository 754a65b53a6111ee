"""The one entry point of the training code to the datasets: prepared once, read randomly.

    source, info = get_data_source("cityscapes", "train", data_dir="data/tfds",
                                   manual_dir="data/manual/cityscapes")
    example = source[0]  # {'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1], 'file_name': bytes}

Datasets and their builder keyword arguments (see ``builders.<name>`` for each manual dir layout):

- ``cityscapes``: ``on_bad_file``. Splits train, val, test, trainval.
- ``camvid``: ``config='segnet'`` (default) or ``'original'``, ``on_bad_file``. Splits train, val,
  test (those present), trainval.
- ``coco_stuff``: ``config='10k'`` (default; splits train, test) or ``'164k'`` (train, val),
  ``on_bad_file``.
- ``custom``: ``dataset_name`` (tells prepared custom datasets apart), ``ignore_label`` (raw value
  of ignored pixels, default 255), ``on_bad_file``. Splits: the subfolders of ``images/``.
- ``street``: ``num_train``, ``num_val``, ``height``, ``width``, ``seed``; no manual dir.

Every dataset also takes ``image_format``: ``'png'`` (default, smallest) or ``'raw'`` (uint8
arrays, about 3x cheaper to read, 2-4x the disk; ``builders.storage`` gives the figures).

A dataset is prepared (written as array_record under ``data_dir``) on first use, and again
whenever its manual dir's files (paths, sizes, mtimes), ``on_bad_file`` or ``image_format`` changed
since then (the prepared copy records their fingerprint). Reading needs no TensorFlow. A manual
dir without any image is an error and never leaves a prepared copy; ``check_splits(config)``
checks, before training, that every split the config names has examples.

Any split can be filtered by the start of its examples' file names (without folders):
``train[0006R0]`` keeps the examples whose names start with ``0006R0``, ``train[-0006R0]`` drops
them, ``train[0001TP,0016E5]`` keeps either prefix. CamVid names start with their sequence, so
this trains on some street sequences and evaluates on another (see docs/camvid.md).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from icnet_jax.data import taxonomy
from icnet_jax.data.augment import file_name_of
from icnet_jax.data.builders import BUILDERS
from icnet_jax.errors import UserError

_log = logging.getLogger(__name__)


class MissingSplitError(UserError, ValueError):
    """A split a config or command names is not in the prepared dataset (or has no example)."""


def get_builder(
    name: str,
    *,
    data_dir: str | pathlib.Path,
    manual_dir: str | pathlib.Path | None = None,
    **builder_kwargs: Any,
) -> tfds.core.GeneratorBasedBuilder:
    """The builder of dataset ``name`` (prepared if needed, so its ``info`` is complete)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    if name != "street":
        builder_kwargs["manual_dir"] = manual_dir
    builder = BUILDERS[name](data_dir=str(data_dir), **builder_kwargs)
    if builder.is_prepared() and (reason := _reason_to_prepare_again(builder)):
        _log.info(f"{name}: {reason}: preparing it again")
        shutil.rmtree(builder.data_dir)
        builder = BUILDERS[name](data_dir=str(data_dir), **builder_kwargs)
    if not builder.is_prepared():
        builder.download_and_prepare(file_format="array_record")
        skipped = getattr(builder, "skipped_files", [])
        if skipped:
            _log.warning("%s: %d bad files skipped, first: %s", name, len(skipped), skipped[0])
    return builder


def _reason_to_prepare_again(builder: tfds.core.GeneratorBasedBuilder) -> str | None:
    if not builder.info.splits:  # left by an older version that cached empty datasets
        return "the prepared copy holds no example"
    return builder.changed_since_prepared()


def _split_spec(builder: tfds.core.GeneratorBasedBuilder, split: str) -> str:
    """tfds split string for ``split``; ``trainval`` reads train and val without a copy."""
    splits = builder.info.splits
    if split in splits:
        return split
    if split == "trainval" and "train" in splits and "val" in splits:
        return "train+val"
    where = builder.split_source(split) if hasattr(builder, "split_source") else builder.name
    raise MissingSplitError(
        f"{builder.name}: no split {split!r} ({where}); available: {sorted(splits)} (+ trainval)"
    )


# `split[prefix,...]` or `split[-prefix,...]` (tfds' own `train[:10%]` slices do not match).
_FILE_FILTER = re.compile(r"^(?P<split>[\w+]+)\[(?P<drop>-?)(?P<prefixes>[\w.-]+(,[\w.-]+)*)\]$")


class FilteredSource:
    """The examples of `source` at `indices`, in that order (itself a random-access source)."""

    def __init__(self, source: Any, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.source[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"FilteredSource({len(self)} of {len(self.source)} examples)"


def _filtered_source(builder: tfds.core.GeneratorBasedBuilder, split: str) -> Any:
    """The source of ``split``, filtered by file-name prefix when ``split`` asks for it."""
    match = _FILE_FILTER.match(split)
    if not match:
        return builder.as_data_source(_split_spec(builder, split))
    spec = _split_spec(builder, match["split"])
    prefixes = tuple(match["prefixes"].split(","))
    drop = bool(match["drop"])
    # File names only: reading them without decoding the images takes a fraction of a second.
    skip = {"image": tfds.decode.SkipDecoding(), "label": tfds.decode.SkipDecoding()}
    names = builder.as_data_source(spec, decoders=skip)
    basenames = [os.path.basename(file_name_of(names[i])) for i in range(len(names))]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in basenames):
            raise UserError(
                f"split {split!r}: no file name of {builder.name} {match['split']!r} starts with "
                f"{prefix!r} (names look like {basenames[0]!r}); fix the prefix"
            )
    indices = [i for i, name in enumerate(basenames) if name.startswith(prefixes) != drop]
    if not indices:
        raise UserError(f"split {split!r} leaves no example of {builder.name} {match['split']!r}")
    return FilteredSource(builder.as_data_source(spec), np.asarray(indices))


def dataset_info(name: str, builder: tfds.core.GeneratorBasedBuilder) -> taxonomy.DatasetInfo:
    """Class names and palette stored with the prepared dataset."""
    meta = builder.info.metadata
    return taxonomy.DatasetInfo(
        name, tuple(meta["class_names"]), np.asarray(meta["palette"], dtype=np.uint8)
    )


def get_data_source(
    name: str,
    split: str,
    *,
    data_dir: str | pathlib.Path,
    manual_dir: str | pathlib.Path | None = None,
    **builder_kwargs: Any,
) -> tuple[Any, taxonomy.DatasetInfo]:
    """Prepares dataset ``name`` once and returns a random-access source of ``split``.

    Args:
      name: one of ``cityscapes``, ``camvid``, ``coco_stuff``, ``custom``, ``street``.
      split: e.g. ``train``, ``val``, ``test``, ``trainval``, or one of them filtered by file-name
        prefix, ``train[-0006R0]`` (see the module docstring).
      data_dir: where prepared datasets live (``<data_dir>/icnet_<name>/<config>/<version>``).
      manual_dir: folder with the downloaded archives/folders (default
        ``<data_dir>/downloads/manual``); ignored for ``street``.
      **builder_kwargs: per dataset, see the module docstring.

    Returns:
      source: ``len(source)`` examples; ``source[i]`` is a dict with ``image`` uint8
        ``[H, W, 3]`` RGB, ``label`` uint8 ``[H, W, 1]`` train ids (255 = ignore) and
        ``file_name`` (bytes).
      info: class names, palette and ignore label.

    Raises:
      errors.UserError: a file-name filter matches no file name, or leaves no example.
      builders.MissingDataError: the manual dir lacks what the dataset needs.
      builders.BadFileError: a bad file, with ``on_bad_file='error'`` (the default).
    """
    builder = get_builder(name, data_dir=data_dir, manual_dir=manual_dir, **builder_kwargs)
    return _filtered_source(builder, split), dataset_info(name, builder)


def num_examples(
    name: str,
    split: str,
    *,
    data_dir: str | pathlib.Path,
    manual_dir: str | pathlib.Path | None = None,
    **builder_kwargs: Any,
) -> int:
    """Number of examples of ``split`` (prepares the dataset if needed)."""
    source, _ = get_data_source(
        name, split, data_dir=data_dir, manual_dir=manual_dir, **builder_kwargs
    )
    return len(source)


def config_source(config: Any, split: str):
    """`(source, DatasetInfo)` of `split` of `config.dataset` (prepared on first use)."""
    d = config.dataset
    return get_data_source(
        d.name,
        split,
        data_dir=str(pathlib.Path(d.data_dir).expanduser()),
        manual_dir=d.manual_dir or None,
        **d.builder_kwargs.to_dict(),
    )


# What to set instead of a split that is missing or empty.
_SPLIT_FLAGS = {
    "train_split": "--config.dataset.train_split=SPLIT",
    "eval_split": "--config.dataset.eval_split=SPLIT ('' to train without evaluating)",
}


def check_splits(config: Any) -> None:
    """Raises errors.UserError unless every split ``config.dataset`` names (``train_split``, and
    ``eval_split`` unless empty) has examples: run before any compilation, so that a missing
    ``val`` folder fails at once rather than after the whole schedule. Prepares the dataset on
    first use (as training would)."""
    for field, flag in _SPLIT_FLAGS.items():
        split = config.dataset.get(field)
        if not split:
            continue
        try:
            source, _ = config_source(config, split)
        except MissingSplitError as e:
            raise MissingSplitError(f"{e}: add it, or set {flag}") from None
        if not len(source):
            raise MissingSplitError(f"{config.dataset.name} split {split!r} is empty; set {flag}")
