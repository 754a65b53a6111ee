"""The optimiser a config describes: which BatchNorm scales and offsets it keeps fixed."""

import functools
import logging

import jax
import numpy as np
import pytest
from flax import traverse_util

from icnet_jax import build
from icnet_jax.models.backbone import RELEASE, trunk_layer_names
from icnet_jax.train import trainer
from tests.checkpoint_fakes import checkpoint_config

TRUNK = set(trunk_layer_names(RELEASE))
FROZEN = {"model.freeze_bn_stats": True, "optim.freeze_bn_affine": True, "optim.lr": 0.1}


def abstract_state(config):
    model = build.create_model(config, num_classes=5)
    tx = build.create_optimizer(config)
    create = functools.partial(build.create_train_state, model=model, tx=tx, image_size=(33, 65))
    return jax.eval_shape(create, jax.random.PRNGKey(0)), tx


def moved_bn_layers(config):
    """{top-level layer: whether its BN scale and offset get an update}, for gradients of 1."""
    abstract, tx = abstract_state(config)
    params = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), abstract.params)
    updates, _ = tx.update(params, tx.init(params), params)
    moved = {}
    for path, update in traverse_util.flatten_dict(updates).items():
        if "bn" in path:
            moved.setdefault(path[0], set()).add(bool(np.any(np.asarray(update) != 0)))
    assert all(len(v) == 1 for v in moved.values())  # scale and offset alike
    return {layer: v.pop() for layer, v in moved.items()}


@pytest.mark.parametrize(
    ("start", "frozen"),
    [
        ({"init_backbone": "r.pth"}, "trunk"),
        ({"init_checkpoint": "run"}, "all"),
        ({}, "all"),  # a run started otherwise: the switch freezes every layer
    ],
)
def test_freeze_bn_affine_keeps_only_the_layers_whose_statistics_are_frozen(start, frozen):
    config = checkpoint_config(**FROZEN, **start)
    assert build.frozen_bn(config) == frozen
    moved = moved_bn_layers(config)
    assert set(moved) >= TRUNK and set(moved) - TRUNK  # trunk and head layers both have BN
    for layer, did_move in moved.items():
        assert did_move == (frozen == "trunk" and layer not in TRUNK), layer


def test_without_freeze_bn_affine_every_bn_layer_learns():
    config = checkpoint_config(**{**FROZEN, "optim.freeze_bn_affine": False})
    assert all(moved_bn_layers(config).values())


def test_freeze_bn_affine_without_frozen_statistics_freezes_nothing_and_says_so(caplog):
    config = checkpoint_config(**{**FROZEN, "model.freeze_bn_stats": False})
    with caplog.at_level(logging.WARNING, logger="icnet_jax.build"):
        moved = moved_bn_layers(config)
    assert all(moved.values())
    assert "freeze_bn_affine=True has no effect" in caplog.text
    # The optimiser state has the same structure with and without layers to freeze.
    a = jax.tree.structure(abstract_state(config)[0].opt_state)
    b = jax.tree.structure(abstract_state(checkpoint_config(**FROZEN))[0].opt_state)
    assert a == b


@pytest.mark.slow
def test_a_step_from_a_loaded_trunk_moves_the_head_bn_scales_only():
    config = checkpoint_config(**FROZEN, init_backbone="r.pth")
    model = trainer.create_model(config, num_classes=5, axis_name=trainer.AXIS)
    tx = trainer.create_optimizer(config)
    state = trainer.create_train_state(jax.random.PRNGKey(0), model, tx, (33, 65))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(2, 33, 65, 3)).astype(np.float32),
        "label": rng.integers(0, 5, size=(2, 33, 65)).astype(np.int32),
    }
    step = trainer.make_train_step(config, devices=jax.local_devices()[:2])
    new, _ = jax.device_get(step(state, trainer.shard(batch, 2)))
    before = traverse_util.flatten_dict(jax.device_get(state.params))
    after = traverse_util.flatten_dict(new.params)
    scales = [k for k in before if k[-2:] == ("bn", "scale")]
    head = [k for k in scales if k[0] not in TRUNK]
    trunk = [k for k in scales if k[0] in TRUNK]
    assert head and trunk
    for key in trunk:  # loaded: statistics and affine parameters kept
        np.testing.assert_array_equal(after[key], before[key])
    for key in head:  # fresh: learns its scale
        assert not np.array_equal(after[key], before[key]), key
