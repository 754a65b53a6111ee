"""Checkpoints of random weights written as training writes them, without compiling anything
(shared by the tests through the session fixture `tiny_checkpoint` of conftest.py)."""

import functools
import json

import jax
import numpy as np

from configs import quickstart
from icnet_jax import default
from icnet_jax.train import trainer
from icnet_jax.weights import checkpoints

NUM_CLASSES = 9  # the street dataset's


def checkpoint_config(**overrides):
    """The config saved with the test checkpoints: settings unlike the command line's below."""
    config = quickstart.get_config()
    config.model.width = 0.25
    config.input.mean = (0.0, 0.0, 0.0)
    config.input.std = (1.0, 1.0, 1.0)
    config.input.bgr = False
    config.input.crop_size = (33, 65)
    return default.override(config, overrides)


def random_state(config, num_classes: int, seed: int = 0):
    """A TrainState with random weights (fan-in scaled) without compiling `model.init`."""
    model = trainer.create_model(config, num_classes)
    tx = trainer.create_optimizer(config)
    abstract = jax.eval_shape(
        functools.partial(trainer.create_train_state, model=model, tx=tx, image_size=(33, 65)),
        jax.random.PRNGKey(0),
    )
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", getattr(path[-1], "name", ""))
        if name in ("var", "scale"):
            return np.ones(leaf.shape, leaf.dtype)
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)
        if name == "bias":
            return (0.1 * rng.normal(size=leaf.shape)).astype(leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def write_checkpoint(workdir, config, num_classes: int = NUM_CLASSES, step: int = 7, seed=0):
    """Saves a random-weight checkpoint with `config` as training would; returns the state."""
    state = random_state(config, num_classes, seed)
    checkpoints.write(workdir, step, state, json.loads(config.to_json()))
    return state
