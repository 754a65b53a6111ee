"""ImageNet trunks from the reference libraries' own models (random weights): our trunk's
features equal the library's forward on the same input.

Needs torch, torchvision and timm (requirements-imagenet.txt); skipped without them here, and
CI installs them and runs this file so that it cannot skip there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

from icnet_jax.models import ICNet, PSPNet  # noqa: E402
from icnet_jax.models.backbone import Trunk  # noqa: E402
from icnet_jax.weights import files, imagenet  # noqa: E402

# Our stage outputs and the torch modules that produce them.
STAGES = {"conv2_3": "layer1", "conv3_4": "layer2", "conv4_6": "layer3", "conv5_3": "layer4"}


def randomised(model):
    """`model` in eval mode with random BatchNorm parameters and statistics (a fresh torch model
    has scale 1, offset 0, mean 0, variance 1: it would not test their mapping)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


def torch_stages(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """The library's stem and layer1..4 outputs on NHWC `images`, as NHWC numpy."""
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    out = {}
    with torch.no_grad():
        x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        for ours, layer in STAGES.items():
            x = getattr(model, layer)(x)
            out[ours] = x.numpy().transpose(0, 2, 3, 1)
    return out


def our_stages(model, variables, images: np.ndarray) -> dict[str, np.ndarray]:
    apply = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True)[1])
    inter = apply(variables, jnp.asarray(images))["intermediates"]
    return {k: np.asarray(inter[k]["__call__"][0]) for k in STAGES if k in inter}


def assert_close(ours: np.ndarray, reference: np.ndarray, name: str) -> None:
    assert ours.shape == reference.shape, name
    scale = np.abs(reference).max()
    assert scale > 0, name
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def images(size, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (1, *size, 3)).astype(np.float32)


def pspnet_with(path, trunk: Trunk, size):
    """PSPNet50 at output stride 32 (its trunk is the plain ResNet-50) with `path`'s trunk."""
    model = PSPNet(num_classes=19, width=1.0, output_stride=32, **trunk._asdict())
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)))
    tensors = files.read_weights(path)
    merged, report = imagenet.trunk_variables(tensors, variables, trunk, path=str(path))
    return model, merged, report


@pytest.mark.slow
def test_torchvision_resnet50_pth_gives_torchvisions_features(tmp_path):
    reference = randomised(torchvision.models.resnet50(weights=None))
    reference.act1 = reference.relu
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    size = (67, 75)  # odd and even map sizes: floor-mode pooling on both
    model, variables, report = pspnet_with(path, Trunk("resnet", "3x3", "conv"), size)
    assert report.skipped["the ImageNet classifier"] == ["fc.bias", "fc.weight"]
    assert len(report.skipped["BatchNorm bookkeeping"]) == 53
    assert len(report.loaded) == 53 + 53 * 4  # every conv and its BatchNorm
    x = images(size)
    ours, theirs = our_stages(model, variables, x), torch_stages(reference, x)
    for name in STAGES:
        assert_close(ours[name], theirs[name], name)


@pytest.mark.slow
def test_timm_resnet50d_safetensors_gives_timms_features(tmp_path):
    """Deep stem, stride on the 3x3 and the average-pool shortcut; read without torch."""
    reference = randomised(timm.create_model("resnet50d", pretrained=False))
    path = tmp_path / "resnet50d.safetensors"
    safetensors_torch.save_file(reference.state_dict(), str(path))
    size = (69, 66)
    model, variables, report = pspnet_with(path, Trunk("deep", "3x3", "avgpool"), size)
    assert "timm resnet50d" in report.source
    x = images(size, seed=1)
    ours, theirs = our_stages(model, variables, x), torch_stages(reference, x)
    for name in STAGES:
        assert_close(ours[name], theirs[name], name)


@pytest.mark.slow
def test_mmseg_v1c_names_in_a_segmentor_checkpoint_load_timm_resnet50c(tmp_path):
    """mmseg's ResNetV1c is timm's resnet50c under other names (`stem.*`), inside a segmentor
    checkpoint (`{'state_dict': {'backbone.*', 'decode_head.*'}}`)."""
    reference = randomised(timm.create_model("resnet50c", pretrained=False))
    stem = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4"}
    stem |= {"conv1.6": "stem.6", "bn1": "stem.7"}
    state = {}
    for name, value in reference.state_dict().items():
        module, _, param = name.rpartition(".")
        if module == "fc":
            continue
        state["backbone." + stem.get(module, module) + "." + param] = value
    state["decode_head.conv_seg.weight"] = torch.zeros(19, 512, 1, 1)
    path = tmp_path / "pspnet_r50-d8.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, path)
    size = (65, 65)
    model, variables, report = pspnet_with(path, Trunk("deep", "3x3", "conv"), size)
    assert "mmseg ResNetV1c" in report.source
    assert report.skipped["outside the trunk"] == ["decode_head.conv_seg.weight"]
    x = images(size, seed=2)
    ours, theirs = our_stages(model, variables, x), torch_stages(reference, x)
    for name in STAGES:
        assert_close(ours[name], theirs[name], name)


@pytest.mark.slow
def test_icnet_width1_trunk_equals_torchvision_up_to_conv3_1(tmp_path):
    """ICNet runs conv1..conv3_1 on the image shrunk x2 (every other pixel of an odd size), then
    shrinks the features: up to conv3_1 it is the library's network on that half image."""
    reference = randomised(torchvision.models.resnet50(weights=None))
    reference.act1 = reference.relu
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    trunk = Trunk("resnet", "3x3", "conv")
    model = ICNet(num_classes=19, width=1.0, **trunk._asdict())
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 33, 33, 3)))
    merged, _ = imagenet.trunk_variables(files.read_weights(path), variables, trunk, path=str(path))
    x = images((129, 137), seed=3)
    inter = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True)[1])(merged, x)
    inter = inter["intermediates"]
    half = torch.from_numpy(x[:, ::2, ::2].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(half))))
        layer1 = reference.layer1(stem)
        conv3_1 = reference.layer2[0](layer1)
    for name, value in (("conv2_3", layer1), ("conv3_1", conv3_1)):
        assert_close(
            np.asarray(inter[name]["__call__"][0]), value.numpy().transpose(0, 2, 3, 1), name
        )
