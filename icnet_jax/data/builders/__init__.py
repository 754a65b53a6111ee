"""tfds builders that prepare each dataset as array_record, labels already in train ids.

One module per dataset, whose docstring gives the manual dir's layout: ``cityscapes.py``,
``camvid.py``, ``coco_stuff.py``, ``custom.py``, ``street.py`` (generated, the quickstart's);
what they share is in ``files.py`` (reading folders and zip archives, the errors about them),
``decoding.py`` (decoding and checking images and labels) and ``base.py`` (the builder: stored
features, bad-file policy, manual-dir fingerprint). ``BUILDERS`` is the registry
``datasets.get_data_source`` reads.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from icnet_jax.data.builders.camvid import IcnetCamvid
from icnet_jax.data.builders.cityscapes import IcnetCityscapes
from icnet_jax.data.builders.coco_stuff import IcnetCocoStuff
from icnet_jax.data.builders.custom import IcnetCustom
from icnet_jax.data.builders.decoding import check_label_values
from icnet_jax.data.builders.files import BadFileError, MissingDataError
from icnet_jax.data.builders.street import IcnetStreet

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "cityscapes": IcnetCityscapes,
    "camvid": IcnetCamvid,
    "coco_stuff": IcnetCocoStuff,
    "custom": IcnetCustom,
    "street": IcnetStreet,
}

__all__ = ["BUILDERS", "BadFileError", "MissingDataError", "check_label_values"]
