"""ICNet on CamVid (SegNet layout, 360x480, 11 classes): 10K steps as in the paper."""

from icnet_jax import config as default


def get_config(variant: str | None = None):
    config = default.get_config()
    config.dataset.name = "camvid"
    config.num_steps = 10_000
    # 32k+1 sizes keep the release geometry; 361 rows would not (1/8 maps of 45 and 46 rows).
    config.input.crop_size = (353, 481)  # the 360x480 frame less 7 rows
    config.dataset.builder_kwargs.config = "segnet"  # or "original" (720x960, 32 colours)
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    return default.apply_variant(config, variant)
