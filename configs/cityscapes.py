"""ICNet on Cityscapes, paper recipe: 30K steps, batch 16 (`:trainval90k` for the test server)."""

from icnet_jax import default

# The test-server model: 90K steps on train + val (paper Sec. 5.1).
TRAINVAL90K = {"dataset.train_split": "trainval", "num_steps": 90_000}


def get_config(variant: str | None = None):
    config = default.get_config()
    config.input.eval_size = (1025, 2049)  # the release's evaluation protocol
    config.dataset.builder_kwargs.on_bad_file = "error"  # or "skip" (counted, logged)
    return default.apply_variant(config, variant, {"trainval90k": TRAINVAL90K})
