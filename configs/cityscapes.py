"""ICNet on Cityscapes, paper recipe: 30K steps, batch 16 (`:trainval90k` for the test server)."""

from icnet_jax import config as default


def get_config(variant: str | None = None):
    config = default.get_config()
    if variant == "trainval90k":
        config.dataset.train_split = "trainval"
        config.num_steps = 90_000
        variant = None
    config.input.eval_size = (1025, 2049)  # the release's evaluation protocol
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    return default.apply_variant(config, variant)
