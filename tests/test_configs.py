"""Every config and named variant resolves, and builds its model."""

import importlib

import jax
import jax.numpy as jnp
import pytest

from configs import default
from icnet_jax import train_lib

CONFIGS = ["cityscapes", "camvid", "coco_stuff", "custom", "quickstart"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_resolves(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.num_steps > 0 and len(config.input.crop_size) == 2
    model = train_lib.create_model(config, num_classes=5)
    out = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    assert "params" in out


@pytest.mark.parametrize("variant", sorted(default.VARIANTS))
def test_variants(variant):
    config = importlib.import_module("configs.cityscapes").get_config(variant)
    model = train_lib.create_model(config, num_classes=19)
    images = jnp.zeros((1, 65, 65, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
    logits, _ = jax.eval_shape(
        lambda v: model.apply(v, images, train=True, mutable=["batch_stats"]), variables
    )
    assert set(config.loss_weights) <= set(logits)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        importlib.import_module("configs.cityscapes").get_config("nope")


def test_camvid_cpu_recipe():
    config = importlib.import_module("configs.camvid").get_config("cpu")
    assert config.dataset.name == "camvid" and config.loss.ohem
    assert config.batch_size * config.num_steps <= 12_000  # the image budget
    assert all((s - 1) % 8 == 0 for s in config.input.crop_size)
