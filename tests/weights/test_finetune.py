"""Fine-tuning from a checkpoint with another number of classes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import quickstart
from icnet_jax.train import trainer
from icnet_jax.weights import finetune
from tests.checkpoint_fakes import checkpoint_config, write_checkpoint

CLASSIFIERS = ("conv6_cls", "conv6_sub4", "conv6_sub2")


def fresh_state(config, num_classes, seed):
    model = trainer.create_model(config, num_classes)
    tx = trainer.create_optimizer(config)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 9, 9, 3)))
    return trainer.TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables["batch_stats"],
    )


@pytest.fixture
def checkpoint_9(tiny_checkpoint):
    path, state, _ = tiny_checkpoint  # the quickstart's width 0.25, 9 classes
    return path, state


def test_9_to_11_classes_keeps_the_backbone_and_reinitialises_classifiers(checkpoint_9, logged):
    path, source = checkpoint_9
    config = quickstart.get_config()
    state = fresh_state(config, 11, seed=7)
    loaded, report = finetune.load_pretrained(state, path, config=config)
    printed = logged()
    assert "re-initialised" in printed and "conv6_cls/kernel" in printed

    flat_src = traverse_util.flatten_dict(
        {"params": source.params, "batch_stats": source.batch_stats}
    )
    flat_new = traverse_util.flatten_dict(
        {"params": loaded.params, "batch_stats": loaded.batch_stats}
    )
    flat_fresh = traverse_util.flatten_dict(
        {"params": state.params, "batch_stats": state.batch_stats}
    )
    assert flat_new.keys() == flat_fresh.keys()
    for key, value in flat_new.items():
        if any(c in key for c in CLASSIFIERS):
            np.testing.assert_array_equal(value, flat_fresh[key])  # fresh init kept
            assert value.shape[-1] == 11
        else:
            np.testing.assert_array_equal(value, flat_src[key])
    assert sorted(r.split(" ")[0] for r in report.reinitialised) == sorted(
        f"params/{c}/{p}" for c in CLASSIFIERS for p in ("kernel", "bias")
    )
    assert report.skipped == report.reinitialised and not report.missing and not report.unused
    assert len(report.loaded) == len(flat_new) - 6
    assert int(loaded.step) == 0
    # the loaded model runs
    out = loaded.apply_fn(
        {"params": loaded.params, "batch_stats": loaded.batch_stats}, jnp.zeros((1, 33, 33, 3))
    )
    chex.assert_shape(out, (1, 33, 33, 11))


def test_same_classes_loads_everything(checkpoint_9):
    path, source = checkpoint_9
    config = quickstart.get_config()
    loaded, report = finetune.load_pretrained(fresh_state(config, 9, seed=1), path, verbose=False)
    assert not report.skipped
    chex.assert_trees_all_equal(loaded.params, jax.device_get(source.params))


def test_a_backbone_mismatch_is_an_error_naming_the_tensors(checkpoint_9):
    path, _ = checkpoint_9
    config = quickstart.get_config()
    config.model.width = 0.5
    with pytest.raises(ValueError, match=r"conv1_1_3x3_s2/conv/kernel: checkpoint \(3, 3, 3, 16\)"):
        finetune.load_pretrained(fresh_state(config, 11, seed=0), path, config=config)
    with pytest.raises(finetune.CheckpointDoesNotFitError) as error:  # before compiling
        finetune.check_fits(fresh_state(config, 11, seed=0), path, config)
    message = str(error.value)
    assert "\n" not in message and len(message) < 600 and "width 0.5" in message


def test_a_checkpoint_of_another_trunk_or_input_is_refused_naming_the_flags(tmp_path):
    # stride_on and the input normalisation change no tensor shape: only the config tells.
    trained = checkpoint_config(**{"model.stride_on": "3x3", "input.std": (2.0, 2.0, 2.0)})
    write_checkpoint(tmp_path, trained, num_classes=9)
    config = checkpoint_config()
    with pytest.raises(finetune.CheckpointDoesNotFitError) as error:
        finetune.check_fits(fresh_state(config, 9, seed=0), tmp_path, config)
    message = str(error.value)
    assert "\n" not in message
    assert "'--config.model.stride_on=3x3' '--config.input.std=(2.0, 2.0, 2.0)'" in message
    config.model.stride_on, config.input.std = "3x3", (2.0, 2.0, 2.0)
    finetune.check_fits(fresh_state(config, 9, seed=0), tmp_path, config)
