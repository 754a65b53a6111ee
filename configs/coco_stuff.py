"""ICNet on COCO-Stuff 10K (182 classes, images up to 640x640): 30K steps as in the paper."""

from icnet_jax import default


def get_config(variant: str | None = None):
    config = default.get_config()
    config.dataset.name = "coco_stuff"
    config.dataset.eval_split = "test"
    config.num_steps = 30_000
    config.input.crop_size = (641, 641)
    config.dataset.builder_kwargs.config = "10k"  # or "164k"
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    return default.apply_variant(config, variant)
