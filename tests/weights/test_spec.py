"""The weights spec (what gives weights their meaning), frozen BatchNorm only where statistics were
loaded, the BN-kept release as a fine-tuning start, the direct-API BatchNorm momentum."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from benchmarks.standin_resnet50 import torchvision_resnet50, write_safetensors
from configs import cityscapes
from icnet_jax import build, default
from icnet_jax.data import taxonomy
from icnet_jax.models import ICNet, PSPNet
from icnet_jax.models.backbone import SegmentationNetwork, trunk_layer_names
from icnet_jax.models.layers import ConvBN, resize_bilinear
from icnet_jax.weights import checkpoints, finetune, imagenet, release
from icnet_jax.weights.spec import WeightsSpec, restore_target, upgrade
from tests.checkpoint_fakes import random_state
from tests.weights.test_imagenet import fresh_state, torchvision_config
from tests.weights.test_release import bn_kept, random_release

# ---- the spec ----------------------------------------------------------------------------------


def test_a_config_saved_before_the_switches_existed_describes_the_release():
    saved = {"model": {"name": "icnet", "width": 0.5, "align_corners": True}, "input": {}}
    spec = WeightsSpec.from_config(saved, 19)
    released = WeightsSpec.from_config(default.get_config(), 19)
    assert spec == released and not spec.differences(released)
    assert (spec.stem, spec.stride_on, spec.shortcut) == ("release", "1x1", "conv")
    assert spec.bgr and spec.mean == default.IMAGENET_MEAN_RGB and not spec.bn_folded
    assert spec.frozen_bn == "none" and spec.describe() == "icnet width 0.5, 19 classes"
    assert upgrade({}) == {}  # no saved config: nothing to upgrade
    # The upgraded config builds the model (no default repeated in build.py).
    model = build.create_model(default.get_config().__class__(upgrade(saved)), 19)
    assert model.stem == "release" and model.frozen_bn == "none"


def test_differences_name_each_setting_with_both_values():
    ours = WeightsSpec.from_config(default.get_config(), 19)
    config = default.override(
        default.get_config(),
        {"model.stride_on": "3x3", "input.mean": (1.0, 2.0, 3.0), "model.freeze_bn_stats": True},
    )
    rows = ours.differences(WeightsSpec.from_config(config, 11))
    assert rows == [
        ("model.stride_on", "1x1", "3x3"),
        ("num_classes", 19, 11),
        ("input.mean", default.IMAGENET_MEAN_RGB, (1.0, 2.0, 3.0)),
        ("model.freeze_bn_stats", "none", "all"),
    ]
    # branch, dtype, eval size, schedule: the same weights
    free = default.override(
        default.get_config(),
        {"model.branch": "sub4", "model.dtype": "bfloat16", "num_steps": 5, "batch_size": 2},
    )
    assert not ours.differences(WeightsSpec.from_config(free, 19))


def test_frozen_layers_are_those_the_weights_came_from():
    config = default.override(default.get_config(), {"model.freeze_bn_stats": True})
    assert build.frozen_bn(config) == "all"
    assert build.frozen_bn(default.override(config, {"init_backbone": "r.pth"})) == "trunk"
    assert build.frozen_bn(default.override(config, {"init_checkpoint": "run"})) == "all"
    config.model.freeze_bn_stats = False
    assert build.frozen_bn(default.override(config, {"init_backbone": "r.pth"})) == "none"


def test_one_dataset_table():
    assert taxonomy.DATASETS["cityscapes"].num_classes == 19
    assert set(taxonomy.DATASETS) == {"cityscapes", "camvid", "coco_stuff", "street"}
    assert release.expected_classes(cityscapes.get_config()) == 19


def test_the_restore_target_is_the_saved_configs_model():
    saved = default.override(default.get_config(), {"model.width": 0.25}).to_dict()
    target = restore_target(saved, 7)
    assert target.params["conv6_cls"]["kernel"].shape[-1] == 7
    assert target.params["conv1_1_3x3_s2"]["conv"]["kernel"].shape[-1] == 16


# ---- BatchNorm momentum ------------------------------------------------------------------------


def test_the_direct_api_uses_the_configs_momentum():
    configured = default.get_config().model.bn_momentum
    assert configured == 0.95
    assert ICNet().bn_momentum == PSPNet().bn_momentum == SegmentationNetwork().bn_momentum
    assert ICNet().bn_momentum == ConvBN(4).bn_momentum == configured
    # numerically: one training forward moves the running mean by (1 - momentum) of the batch's
    x = np.random.default_rng(0).normal(2.0, 1.0, (2, 5, 5, 3)).astype(np.float32)
    layer = ConvBN(4, relu=False)
    variables = layer.init(jax.random.PRNGKey(0), jnp.asarray(x))
    _, updates = layer.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    kernel = np.asarray(variables["params"]["conv"]["kernel"])[0, 0]
    batch_mean = (x.reshape(-1, 3).astype(np.float64) @ kernel).mean(axis=0)
    np.testing.assert_allclose(
        updates["batch_stats"]["bn"]["mean"], (1 - configured) * batch_mean, rtol=1e-4, atol=1e-6
    )


# ---- frozen BatchNorm where the statistics came from a file ------------------------------------


def _stats(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


@pytest.mark.slow
def test_a_step_from_init_backbone_freezes_the_trunk_only(tmp_path):
    write_safetensors(tmp_path / "r.safetensors", torchvision_resnet50())
    config = default.override(
        torchvision_config(),
        {"model.freeze_bn_stats": True, "init_backbone": str(tmp_path / "r.safetensors")},
    )
    state, _ = imagenet.load_backbone(  # fresh layers: random kernels, zero running means
        random_state(config, 19), tmp_path / "r.safetensors", config, verbose=False
    )
    model = build.create_model(config, 19)
    assert model.frozen_bn == "trunk"
    x = jnp.asarray(np.random.default_rng(0).normal(0, 1, (2, 33, 33, 3)), jnp.float32)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = _stats(state.batch_stats), _stats(updates["batch_stats"])
    trunk = trunk_layer_names(model.trunk)
    assert any(k.split("/")[0] in trunk for k in before) and any(
        k.split("/")[0] not in trunk for k in before
    )
    for key, value in after.items():
        if key.split("/")[0] in trunk:  # loaded: bit-identical
            np.testing.assert_array_equal(value, before[key], err_msg=key)
        elif key.endswith("/mean"):  # fresh (zero) running means learn the data's
            assert np.any(value != 0), key


def test_training_forward_of_a_folded_release_frozen_from_the_config_equals_inference():
    released = random_release()
    config = default.override(
        cityscapes.get_config(), {"model.freeze_bn_stats": True, "init_checkpoint": "release"}
    )
    model = build.create_model(config, 19)
    assert model.frozen_bn == "all"
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 3))))
    converted, _, _ = release.release_variables(released, template)
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    variables, _ = finetune.merge_variables(fresh, converted)
    x = jnp.asarray(np.random.default_rng(1).uniform(-120, 130, (1, 33, 33, 3)), jnp.float32)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    trained = resize_bilinear(logits["sub124"], x.shape[1:3])
    inference = model.apply(variables, x)
    scale = float(np.abs(inference).max())
    np.testing.assert_allclose(trained, inference, atol=1e-4 * scale, rtol=0)
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])


# ---- the BN-kept release: live BatchNorm ---------------------------------------------------------


@pytest.mark.slow
def test_finetuning_from_bn_kept_weights_runs_live_batchnorm(tmp_path):
    kept, _ = bn_kept(random_release())
    np.save(tmp_path / "kept.npy", kept, allow_pickle=True)
    release.convert(tmp_path / "kept.npy", tmp_path / "out", cityscapes.get_config(), verbose=False)
    manager, _ = checkpoints.open_for_reading(tmp_path / "out")
    recorded = WeightsSpec.from_config(checkpoints.read_config(manager, 0), 19)
    manager.close()
    assert not recorded.bn_folded and recorded.bgr and recorded.std == (1.0, 1.0, 1.0)
    config = cityscapes.get_config()  # no frozen statistics: accepted for BN-kept weights
    state, report = finetune.load_pretrained(
        fresh_state(config), tmp_path / "out", config=config, verbose=False
    )
    assert not report.missing
    mean = state.batch_stats["conv3_1"]["1x1_reduce"]["bn"]["mean"]
    np.testing.assert_array_equal(mean, kept["conv3_1_1x1_reduce_bn/mean"])
    model = build.create_model(config, 19)
    assert model.frozen_bn == "none"
    x = jnp.asarray(np.random.default_rng(0).uniform(-120, 130, (2, 33, 33, 3)), jnp.float32)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = _stats(state.batch_stats), _stats(updates["batch_stats"])
    assert before.keys() == after.keys()
    assert all(not np.array_equal(after[k], before[k]) for k in before)  # every layer is live
