"""Pretrained starts without torch: frozen-statistics BatchNorm for BN-folded weights, the trunk
switches, the safetensors and .npy readers and the name mapping of ImageNet ResNet-50s.

(The comparison against the libraries' own forward passes is tests/weights/test_imagenet_torch.py.)
"""

import sys

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from benchmarks.standin_resnet50 import torchvision_resnet50, write_safetensors
from configs import cityscapes, quickstart
from icnet_jax import default
from icnet_jax.build import bn_affine_mask
from icnet_jax.errors import UserError
from icnet_jax.models import ICNet, PSPNet
from icnet_jax.models.layers import BN_EPSILON, resize_bilinear
from icnet_jax.models.pooling import avg_pool_ceil, max_pool_floor
from icnet_jax.train import trainer
from icnet_jax.weights import files, finetune, imagenet, release
from tests.weights.test_release import folded_params, nest, random_release

TORCH_INPUT = {"input.bgr": False, "input.mean": default.TORCH_MEAN, "input.std": default.TORCH_STD}

# ---- pooling and switches --------------------------------------------------------------------


def numpy_pool(x, window, stride, pad, ceil, reduce):
    """PyTorch's pooling on `[H, W]`, by loops: windows clipped to the input; a ceil-mode window
    that would start in the right padding is dropped."""
    out = []
    for n in x.shape:
        size = (n + 2 * pad - window + (stride - 1 if ceil else 0)) // stride + 1
        if ceil and (size - 1) * stride >= n + pad:
            size -= 1
        out.append(size)
    result = np.zeros(out)
    for i in range(out[0]):
        for j in range(out[1]):
            r0, c0 = i * stride - pad, j * stride - pad
            patch = x[max(r0, 0) : r0 + window, max(c0, 0) : c0 + window]
            result[i, j] = reduce(patch)
    return result


@pytest.mark.parametrize("shape", [(7, 8), (6, 9), (1, 2)])
def test_pools_match_pytorch_semantics(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = np.asarray(max_pool_floor(jnp.asarray(x)[None, :, :, None]))[0, :, :, 0]
    np.testing.assert_array_equal(got, numpy_pool(x, 3, 2, 1, False, np.max))
    got = np.asarray(avg_pool_ceil(jnp.asarray(x)[None, :, :, None]))[0, :, :, 0]
    np.testing.assert_allclose(got, numpy_pool(x, 2, 2, 0, True, np.mean), rtol=1e-6)


def shapes(model, size=(33, 33)):
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3))))
    return {
        "/".join(k): v.shape for k, v in traverse_util.flatten_dict(variables["params"]).items()
    }


def test_trunk_switches_give_the_sources_layers():
    released = shapes(PSPNet(width=1.0))
    assert released["conv1_1_3x3_s2/conv/kernel"] == (3, 3, 3, 64)
    assert released["conv1_3_3x3/conv/kernel"] == (3, 3, 64, 128)
    assert released["conv2_1/1x1_proj/conv/kernel"] == (1, 1, 128, 256)
    resnet = shapes(PSPNet(width=1.0, stem="resnet", stride_on="3x3"))
    assert resnet["conv1_7x7_s2/conv/kernel"] == (7, 7, 3, 64)
    assert not any(k.startswith("conv1_1") for k in resnet)
    assert resnet["conv2_1/1x1_proj/conv/kernel"] == (1, 1, 64, 256)
    deep = shapes(PSPNet(width=1.0, stem="deep", stride_on="3x3", shortcut="avgpool"))
    assert [deep[f"{n}/conv/kernel"] for n in ("conv1_1_3x3_s2", "conv1_2_3x3", "conv1_3_3x3")] == [
        (3, 3, 3, 32),
        (3, 3, 32, 32),
        (3, 3, 32, 64),
    ]
    # the average pool adds no parameters: the same tensors as the conv shortcut
    assert deep.keys() == shapes(PSPNet(width=1.0, stem="deep", stride_on="3x3")).keys()
    with pytest.raises(ValueError, match="stride_on must be one of"):
        shapes(ICNet(stride_on="2x2"))


@pytest.mark.parametrize("size", [(33, 33), (32, 34)])
def test_every_trunk_gives_the_release_map_sizes_on_odd_sides(size):
    """On 8k+1 sides the switches keep the release's geometry (each stage's output size)."""

    def stage_sizes(**kw):
        model = PSPNet(num_classes=3, width=0.25, output_stride=32, **kw)
        v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3))))
        f = jax.eval_shape(
            lambda v: model.apply(v, jnp.zeros((1, *size, 3)), capture_intermediates=True)[1], v
        )["intermediates"]
        return [f[k]["__call__"][0].shape[1:3] for k in ("conv2_3", "conv3_4", "conv5_3")]

    released = stage_sizes()
    for kw in ({"stem": "resnet", "stride_on": "3x3"}, {"stem": "deep", "shortcut": "avgpool"}):
        if size[0] % 2:
            assert stage_sizes(**kw) == released
        else:  # 32x34 -> 16x17 after the stride-2 conv: pooled 9x9 (Caffe's ceil mode), 8x9
            assert released[0] == (9, 9) and stage_sizes(**kw)[0] == (8, 9)


# ---- frozen BatchNorm --------------------------------------------------------------------------


def test_frozen_bn_training_forward_of_converted_folded_weights_equals_inference():
    released = random_release()
    model = ICNet(num_classes=19)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    converted, _, _ = release.release_variables(released, template)
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    variables, _ = finetune.merge_variables(fresh, converted)  # training-only heads: zeros
    x = jnp.asarray(np.random.default_rng(1).uniform(-120, 130, (2, 65, 129, 3)), jnp.float32)

    frozen = ICNet(num_classes=19, frozen_bn="all")
    logits, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    train_sub124 = resize_bilinear(logits["sub124"], x.shape[1:3])
    # Independent reference: the release's inference form (BN folded into the convolutions).
    reference = ICNet(num_classes=19, fold_bn=True).apply({"params": folded_params(released)}, x)
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(train_sub124, reference, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(frozen.apply(variables, x), reference, atol=1e-4 * scale, rtol=0)
    # statistics kept as they were
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])

    # the bug this guards against: training-mode BatchNorm on batch statistics
    unfrozen, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    moved = np.abs(resize_bilinear(unfrozen["sub124"], x.shape[1:3]) - reference).max()
    assert moved > 0.1 * scale


@pytest.fixture(scope="module")
def converted_folded(tmp_path_factory):
    path = tmp_path_factory.mktemp("folded")
    np.save(path / "icnet.npy", nest(random_release()), allow_pickle=True)
    release.convert(path / "icnet.npy", path / "out", cityscapes.get_config(), verbose=False)
    return path / "out"


def fresh_state(config, num_classes=19):
    """A TrainState of the config's model with zeros for weights and ones for variances (shapes
    from `jax.eval_shape`: a real initialisation of a width-1 network costs a minute here)."""
    model = trainer.create_model(config, num_classes)
    tx = trainer.create_optimizer(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 3))))
    variables = jax.tree_util.tree_map_with_path(
        lambda path, s: (np.ones if path[-1].key == "var" else np.zeros)(s.shape, s.dtype), shapes
    )
    return trainer.TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables["batch_stats"],
    )


@pytest.mark.slow
def test_finetuning_from_converted_folded_weights_needs_frozen_statistics(converted_folded):
    _, saved, _, _ = finetune.restore_checkpoint(converted_folded)
    assert saved["bn_folded"] is True
    config = cityscapes.get_config()
    with pytest.raises(UserError, match=r"BN-folded.*--config\.model\.freeze_bn_stats=True"):
        finetune.load_pretrained(fresh_state(config), converted_folded, config=config)
    config.model.freeze_bn_stats = True
    loaded, report = finetune.load_pretrained(
        fresh_state(config), converted_folded, config=config, verbose=False
    )
    assert not report.missing and int(loaded.step) == 0


def test_the_refusal_also_catches_placeholder_statistics_without_the_record():
    config = cityscapes.get_config()
    stats = {"conv1": {"bn": {"mean": np.zeros(4), "var": np.full(4, 1 - BN_EPSILON)}}}
    fresh = {"conv1": {"bn": {"mean": np.zeros(4), "var": np.ones(4)}}}
    assert finetune.folded_layers(stats) == ["conv1"] and not finetune.folded_layers(fresh)
    with pytest.raises(UserError, match="1 layers, e.g. conv1"):
        finetune.check_folded_start(stats, {}, config, "ckpt")
    finetune.check_folded_start(fresh, {}, config, "ckpt")  # a checkpoint of our own: fine


@pytest.mark.slow
def test_a_frozen_step_keeps_statistics_and_frozen_affine_keeps_bn_parameters(tmp_path):
    config = default.override(
        quickstart.get_config(),
        {"model.freeze_bn_stats": True, "optim.freeze_bn_affine": True, "optim.lr": 0.1},
    )
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
    old = jax.device_get(state)
    chex.assert_trees_all_equal(new.batch_stats, old.batch_stats)
    mask = traverse_util.flatten_dict(bn_affine_mask(old.params))
    before, after = traverse_util.flatten_dict(old.params), traverse_util.flatten_dict(new.params)
    assert {k[-1] for k, is_bn in mask.items() if is_bn} == {"scale", "bias"}
    assert all(k[-2] == "bn" for k, is_bn in mask.items() if is_bn)
    for key, is_bn in mask.items():
        if is_bn:
            np.testing.assert_array_equal(after[key], before[key])
    assert not np.array_equal(
        after[("conv1_sub1", "conv", "kernel")], before[("conv1_sub1", "conv", "kernel")]
    )


# ---- files --------------------------------------------------------------------------------------


def test_safetensors_are_read_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.normal(size=(2, 3)).astype(np.float32),
        "b": rng.normal(size=(4,)).astype(np.float16),
        "c": rng.normal(size=(3, 1, 2)).astype(ml_dtypes.bfloat16),
        "n": np.array(7, np.int64),
    }
    write_safetensors(tmp_path / "w.safetensors", tensors)
    read = files.read_weights(tmp_path / "w.safetensors")
    assert read.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(read[name], value)
        assert read[name].dtype == value.dtype
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 12)
    with pytest.raises(UserError, match="bad.safetensors: not a safetensors file"):
        files.read_weights(tmp_path / "bad.safetensors")


def torchvision_config(variant="width1"):
    overrides = {"model.stem": "resnet", "model.stride_on": "3x3", **TORCH_INPUT}
    return default.override(cityscapes.get_config(variant), overrides)


def test_torchvision_names_load_into_icnet_width1(tmp_path, logged):
    tensors = torchvision_resnet50(dtype=np.float16)  # half precision files become float32
    write_safetensors(tmp_path / "resnet50.safetensors", tensors)
    config = torchvision_config()
    state = fresh_state(config)
    loaded, report = imagenet.load_backbone(state, tmp_path / "resnet50.safetensors", config)
    printed = logged()
    assert "torchvision resnet50" in printed and "fc.bias, fc.weight" in printed
    assert report.skipped["the ImageNet classifier"] == ["fc.bias", "fc.weight"]
    assert len(report.skipped["BatchNorm bookkeeping"]) == 53
    assert len(report.loaded) == 53 * 5
    assert "conv6_cls" in report.untouched and "conv_sub4" in report.untouched
    p, s = loaded.params, loaded.batch_stats

    def f32(name):
        return tensors[name].astype(np.float32)

    np.testing.assert_array_equal(
        p["conv1_7x7_s2"]["conv"]["kernel"], f32("conv1.weight").transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        p["conv4_1"]["1x1_proj"]["conv"]["kernel"],
        f32("layer3.0.downsample.0.weight").transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        p["conv4_1"]["1x1_proj"]["bn"]["bias"], f32("layer3.0.downsample.1.bias")
    )
    np.testing.assert_array_equal(
        p["conv5_3"]["3x3"]["conv"]["kernel"], f32("layer4.2.conv2.weight").transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        p["conv3_2"]["1x1_increase"]["bn"]["scale"], f32("layer2.1.bn3.weight")
    )
    np.testing.assert_array_equal(
        s["conv2_3"]["1x1_reduce"]["bn"]["var"], f32("layer1.2.bn1.running_var")
    )
    # outside the trunk: untouched
    jax.tree.map(
        np.testing.assert_array_equal, loaded.params["conv6_cls"], state.params["conv6_cls"]
    )
    assert loaded.params["conv1_7x7_s2"]["conv"]["kernel"].dtype == jnp.float32


def test_a_config_that_does_not_fit_the_file_is_told_which_flags_to_set(tmp_path):
    write_safetensors(tmp_path / "r.safetensors", torchvision_resnet50())
    config = cityscapes.get_config("width1")  # the release's trunk and preprocessing
    with pytest.raises(UserError) as error:
        imagenet.load_backbone(None, tmp_path / "r.safetensors", config)
    message = str(error.value)
    for flag in (
        "--config.model.stem=resnet",
        "--config.model.stride_on=3x3",
        "--config.input.bgr=False",
        "'--config.input.mean=(123.675, 116.28, 103.53)'",
        "'--config.input.std=(58.395, 57.12, 57.375)'",
    ):
        assert flag in message
    assert "shortcut" not in message and "\n" not in message
    with pytest.raises(UserError, match=r"--config\.model\.width=1\.0"):
        imagenet.load_backbone(None, tmp_path / "r.safetensors", torchvision_config(None))
    config = torchvision_config()
    config.init_checkpoint = "elsewhere"
    with pytest.raises(UserError, match="not both"):
        imagenet.load_backbone(None, tmp_path / "r.safetensors", config)


def test_wrong_files_are_refused_naming_the_tensors(tmp_path, monkeypatch):
    config = torchvision_config()
    state = fresh_state(config)
    tensors = torchvision_resnet50()

    def refused(changed, match, name="r.safetensors"):
        write_safetensors(tmp_path / name, changed)
        with pytest.raises(UserError, match=match):
            imagenet.load_backbone(state, tmp_path / name, config, verbose=False)

    refused({k: v for k, v in tensors.items() if k != "layer2.3.bn2.running_var"},
            r"1 missing: layer2\.3\.bn2\.running_var \[128\]")  # fmt: skip
    refused({**tensors, "layer3.0.conv2.weight": np.zeros((256, 256, 1, 1), np.float32)},
            r"wrong shape: layer3\.0\.conv2\.weight: file \[256, 256, 1, 1\], model expects "
            r"\[256, 256, 3, 3\]")  # fmt: skip
    refused({**tensors, "layer5.0.conv1.weight": np.zeros((1,), np.float32)},
            r"unexpected: layer5\.0\.conv1\.weight \[1\]")  # fmt: skip
    refused({"encoder.weight": np.zeros((1,), np.float32)}, r"not a ResNet-50 this loader knows")
    (tmp_path / "r.h5").write_bytes(b"")
    with pytest.raises(UserError, match=r"unknown weights format '\.h5'"):
        files.read_weights(tmp_path / "r.h5")
    with pytest.raises(UserError, match="no such file"):
        files.read_weights(tmp_path / "absent.pth")
    (tmp_path / "r.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # as without the extras
    with pytest.raises(UserError, match=r"needs torch \(pip install -r requirements-pretrained"):
        files.read_weights(tmp_path / "r.pth")


def pspnet50_release(folded=False, seed=0):
    """PSPNet50 tensors in the release's Caffe names (`conv2_1_1x1_reduce/weights`, BN kept as
    `<conv>_bn/{scale, offset, mean, variance}` or folded into `biases`), head included."""
    model = PSPNet(num_classes=150, width=1.0)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 3))))
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in traverse_util.flatten_dict(variables["params"]).items():
        layer = "_".join(p for p in path[:-1] if p not in ("conv", "bn", "ppm"))
        value = rng.normal(0, 0.1, leaf.shape).astype(np.float32)
        if path[-1] == "kernel":
            out[f"{layer}/weights"] = value
        elif path[-2] == "bn" and not folded:
            out[f"{layer}_bn/{'scale' if path[-1] == 'scale' else 'offset'}"] = value
        elif path[-1] == "bias" and (path[-2] != "bn" or folded):
            out[f"{layer}/biases"] = value
    for path, leaf in traverse_util.flatten_dict(variables["batch_stats"]).items():
        layer = "_".join(p for p in path[:-1] if p not in ("conv", "bn", "ppm"))
        if not folded:
            name = "mean" if path[-1] == "mean" else "variance"
            out[f"{layer}_bn/{name}"] = rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return out


@pytest.mark.parametrize("model_name", ["icnet", "pspnet"])
def test_the_pspnet50_release_npy_fills_the_trunk(tmp_path, model_name, logged):
    tensors = pspnet50_release()
    np.save(tmp_path / "pspnet50.npy", nest(tensors), allow_pickle=True)
    config = cityscapes.get_config("width1" if model_name == "icnet" else "pspnet50")
    loaded, report = imagenet.load_backbone(fresh_state(config), tmp_path / "pspnet50.npy", config)
    assert "PSPNet50 release" in logged()
    head = report.skipped["not part of the trunk (PSPNet's head)"]
    assert (
        "conv6/weights" in head
        and "conv5_4_bn/scale" in head
        and "conv5_3_pool6_conv/weights" in head
    )
    assert not any(n.startswith(("conv5_3_1x1", "conv1_")) for n in head)
    p, s = loaded.params, loaded.batch_stats
    np.testing.assert_array_equal(
        p["conv5_3"]["1x1_increase"]["conv"]["kernel"], tensors["conv5_3_1x1_increase/weights"]
    )
    np.testing.assert_array_equal(p["conv1_2_3x3"]["bn"]["bias"], tensors["conv1_2_3x3_bn/offset"])
    np.testing.assert_array_equal(
        s["conv3_1"]["1x1_proj"]["bn"]["var"], tensors["conv3_1_1x1_proj_bn/variance"]
    )


def test_a_bn_folded_trunk_needs_frozen_statistics(tmp_path):
    np.save(tmp_path / "folded.npy", nest(pspnet50_release(folded=True)), allow_pickle=True)
    config = cityscapes.get_config("pspnet50")
    with pytest.raises(UserError, match=r"--config\.model\.freeze_bn_stats=True"):
        imagenet.load_backbone(fresh_state(config), tmp_path / "folded.npy", config)
    config.model.freeze_bn_stats = True
    loaded, _ = imagenet.load_backbone(
        fresh_state(config), tmp_path / "folded.npy", config, verbose=False
    )
    np.testing.assert_array_equal(
        loaded.batch_stats["conv2_1"]["3x3"]["bn"]["var"], np.float32(1 - BN_EPSILON)
    )
