"""Synthetic street scenes (`data.synthetic_street.render_street`), the quickstart's data: no
manual dir; splits train, val."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import tensorflow_datasets as tfds

from icnet_jax.data import taxonomy
from icnet_jax.data.builders import storage
from icnet_jax.data.builders.base import PreparedBuilder, tfds_info
from icnet_jax.data.synthetic_street import render_street


@dataclasses.dataclass(eq=False)
class StreetConfig(tfds.core.BuilderConfig):
    num_train: int = 1000
    num_val: int = 100
    height: int = 256
    width: int = 512
    seed: int = 0


class IcnetStreet(PreparedBuilder):
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
        if kwargs.get("image_format", "png") != "png":
            name += f"_{kwargs['image_format']}"
        config = StreetConfig(
            name=name, num_train=num_train, num_val=num_val, height=height, width=width, seed=seed
        )
        kwargs.setdefault("config", config)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds_info(self, "")

    def _split_generators(self, dl_manager):
        del dl_manager
        self.info.metadata["class_names"] = list(taxonomy.STREET.class_names)
        self.info.metadata["palette"] = taxonomy.STREET.palette.tolist()
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
            key = f"street_{i:06d}"
            yield (
                key,
                {
                    "image": storage.stored_image(self.image_format, image),
                    "label": storage.stored_label(self.image_format, label),
                    "file_name": key,
                },
            )
