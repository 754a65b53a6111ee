"""ICNet on your own images and label PNGs (see the README's "Your own data")."""

from icnet_jax import default


def get_config(variant: str | None = None):
    config = default.get_config()
    config.dataset.name = "custom"
    config.dataset.builder_kwargs.dataset_name = "custom"  # tells prepared datasets apart
    config.dataset.builder_kwargs.ignore_label = 255  # raw label value of ignored pixels
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    config.num_steps = 10_000
    config.input.crop_size = (513, 513)
    return default.apply_variant(config, variant)
