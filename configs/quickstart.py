"""The embedded default: ICNet on a street-like dataset the package draws itself (no download).

Small enough to train on a 2-core CPU in about 10 minutes, through the same tfds + grain path as
the real datasets. The final evaluation prints mIoU per branch: as in the paper's Table 2,
sub124 should beat sub24 and sub24 beat sub4, above all on the small classes (pole, sign, person,
bicycle).
"""

from icnet_jax import default


def get_config(variant: str | None = None):
    config = default.get_config()
    config.dataset.name = "street"
    config.dataset.data_dir = "data/tfds"
    config.dataset.builder_kwargs.num_train = 400
    config.dataset.builder_kwargs.num_val = 40
    config.dataset.builder_kwargs.height = 256
    config.dataset.builder_kwargs.width = 512
    config.model.width = 0.25
    config.input.crop_size = (257, 513)
    config.input.scale_range = (0.75, 1.25)
    config.batch_size = 8
    config.num_steps = 500
    config.optim.lr = 0.03
    config.log_every = 10
    config.checkpoint_every = 200
    return default.apply_variant(config, variant)
