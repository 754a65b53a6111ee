"""ICNet and PSPNet: shapes at many sizes, every switch, jit, tracing, folding, pmap."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.models import ICNet, PSPNet, fold_batchnorm, released_tensors
from icnet_jax.models.icnet import TRAINING_ONLY_LAYERS
from icnet_jax.train.losses import cascade_loss

RELEASED_TSV = "icnet_cityscapes_released_tensors.tsv"
SIZES = [(1025, 2049), (1024, 2048), (720, 960), (360, 480), (640, 640), (333, 517)]


def abstract_variables(model: nn.Module, size=(65, 65)):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3))))


def real_variables(model: nn.Module, size, seed=0):
    """Initialised variables with BatchNorm statistics measured on random images (momentum 0) and
    perturbed scales and offsets, so that folding is exercised on realistic magnitudes."""
    images = jax.random.normal(jax.random.PRNGKey(seed), (2, *size, 3))
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), images)
    calibrate = functools.partial(
        model.clone(bn_momentum=0.0).apply, train=True, mutable=["batch_stats"]
    )
    _, stats = jax.jit(calibrate)(variables, images)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 10_000))

    def perturb(path, x):
        if path[-1].key == "scale":
            return x * jax.random.uniform(next(keys), x.shape, minval=0.8, maxval=1.2)
        if path[-1].key == "bias":
            return x + jax.random.uniform(next(keys), x.shape, minval=-0.1, maxval=0.1)
        return x

    return {"params": jax.tree_util.tree_map_with_path(perturb, variables["params"]), **stats}


def param_count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size", SIZES)
def test_icnet_shapes_at_any_size(size):
    model = ICNet(num_classes=19)
    variables = abstract_variables(model)
    images = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    for branch in ("sub4", "sub24", "sub124"):
        out = jax.eval_shape(ICNet(branch=branch).apply, variables, images)
        chex.assert_shape(out, (2, *size, 19))
        chex.assert_type(out, jnp.float32)
    train_out, _ = jax.eval_shape(
        functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, images
    )
    assert set(train_out) == {"sub4", "sub24", "sub124"}
    # Each branch is about 1/16, 1/8 and 1/4 of the input (exactly, on 8k+1 sizes).
    for name, factor in (("sub4", 16), ("sub24", 8), ("sub124", 4)):
        h, w = train_out[name].shape[1:3]
        assert abs(h - size[0] / factor) <= 2 and abs(w - size[1] / factor) <= 2, (name, h, w)
        assert train_out[name].shape[-1] == 19


def test_icnet_release_geometry_at_1025x2049():
    variables = abstract_variables(ICNet())
    images = jax.ShapeDtypeStruct((1, 1025, 2049, 3), jnp.float32)
    out, _ = jax.eval_shape(
        functools.partial(ICNet().apply, train=True, mutable=["batch_stats"]), variables, images
    )
    assert {k: v.shape[1:3] for k, v in out.items()} == {
        "sub4": (65, 129),
        "sub24": (129, 257),
        "sub124": (257, 513),
    }


@pytest.mark.parametrize("upsampling", ["bilinear", "deconv3", "deconv5", "deconv7"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
def test_icnet_switches(upsampling, width):
    model = ICNet(num_classes=11, width=width, cff_upsampling=upsampling)
    variables = abstract_variables(model)
    for size in [(97, 193), (96, 192)]:
        images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
        chex.assert_shape(jax.eval_shape(model.apply, variables, images), (1, *size, 11))
    first = variables["params"]["conv1_1_3x3_s2"]["conv"]["kernel"].shape
    assert first == (3, 3, 3, round(64 * width))


def test_released_tensors_after_folding():
    folded = jax.eval_shape(fold_batchnorm, abstract_variables(ICNet(num_classes=19)))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), folded["params"])
    tensors = released_tensors(params, skip=TRAINING_ONLY_LAYERS)
    from tests.conftest import SHARED_DATA

    tsv = SHARED_DATA.parent / "reference" / RELEASED_TSV
    if not tsv.exists():
        pytest.skip(f"{tsv} is absent")
    expected = {}
    for line in tsv.read_text().splitlines():
        name, dtype, shape = line.split("\t")
        expected[name] = (dtype, tuple(int(d) for d in shape.strip("[]").split(",")))
    assert {n: (str(t.dtype), t.shape) for n, t in tensors.items()} == expected
    assert param_count(tensors) == 6_685_715


def test_branch_settings_share_one_checkpoint():
    variables = abstract_variables(ICNet())
    assert set(variables["params"]) >= {"conv6_cls", "conv6_sub2", "conv6_sub4", "conv3_sub1"}


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_icnet_jit_and_no_jit_agree(self):
        model = ICNet(num_classes=5, width=0.25)
        variables = real_variables(model, (33, 65))
        images = jax.random.normal(jax.random.PRNGKey(2), (2, 33, 65, 3))
        out = self.variant(model.apply)(variables, images)
        reference = jax.jit(model.apply)(variables, images)
        # Op-by-op and fused XLA code round differently through 50 layers.
        scale = float(jnp.max(jnp.abs(reference)))
        chex.assert_trees_all_close(out, reference, atol=1e-4 * scale, rtol=0)
        chex.assert_tree_all_finite(out)


def test_no_retracing():
    model = ICNet(num_classes=5, width=0.25)
    variables = real_variables(model, (33, 65))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(variables, images):
        return model.apply(variables, images)

    for seed in range(3):
        forward(variables, jax.random.normal(jax.random.PRNGKey(seed), (2, 33, 65, 3)))


@pytest.mark.parametrize(
    "model",
    [
        ICNet(num_classes=7, width=0.25),
        ICNet(num_classes=7, width=0.25, cff_upsampling="deconv5"),
        PSPNet(num_classes=7, width=0.25, output_stride=16),
    ],
    ids=["icnet", "icnet-deconv5", "pspnet"],
)
def test_folded_model_equals_unfolded(model):
    variables = real_variables(model, (49, 97))
    images = jax.random.normal(jax.random.PRNGKey(3), (2, 49, 97, 3))
    # In float64 folding is exact up to rounding far below 1e-4.
    with jax.enable_x64(True):
        wide = model.clone(dtype=jnp.float64)
        variables64 = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
        expected = jax.jit(wide.apply)(variables64, images.astype(jnp.float64))
        got = jax.jit(wide.clone(fold_bn=True).apply)(fold_batchnorm(variables64), images)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # In float32 the two round differently through 50 layers: 1e-4 of the logits' range.
    expected = jax.jit(model.apply)(variables, images)
    got = jax.jit(model.clone(fold_bn=True).apply)(fold_batchnorm(variables), images)
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(jnp.max(jnp.abs(expected))))


def test_bfloat16():
    model = ICNet(num_classes=5, width=0.25, dtype=jnp.bfloat16)
    variables = real_variables(model, (33, 65))
    out = jax.jit(model.apply)(variables, jnp.ones((1, 33, 65, 3)))
    chex.assert_type(out, jnp.bfloat16)
    chex.assert_shape(out, (1, 33, 65, 5))


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_pspnet_shapes(output_stride, width):
    model = PSPNet(num_classes=19, width=width, output_stride=output_stride)
    variables = abstract_variables(model)
    for size in [(713, 713), (360, 480), (333, 517)]:
        images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
        chex.assert_shape(jax.eval_shape(model.apply, variables, images), (1, *size, 19))
        out, _ = jax.eval_shape(
            functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, images
        )
        h = out["psp"].shape[1]
        assert abs(h - size[0] / output_stride) <= 2
        assert out["aux"].shape[1] == (h if output_stride < 32 else out["aux"].shape[1])
    ppm = variables["params"]["ppm"]
    assert ppm["conv5_4"]["conv"]["kernel"].shape[-1] == round(512 * width)


def test_pmap_matches_single_device_loss_and_batchnorm():
    """4 devices x 1 image with synchronised BatchNorm == 1 device x 4 images.

    In float64, so that the check sees the arithmetic, not float32 rounding (which a randomly
    initialised 50-layer network amplifies differently for different reduction orders).
    """
    n = jax.local_device_count()
    assert n >= 2, "tests/conftest.py should give 4 CPU devices"
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    images = jax.random.normal(jax.random.PRNGKey(4), (n, 49, 97, 3))
    labels = jax.random.randint(jax.random.PRNGKey(5), (n, 49, 97), 0, 5)
    labels = labels.at[0, :20].set(255)  # uneven ignored pixels across devices
    single = ICNet(num_classes=5, width=0.25)
    variables = real_variables(single, (49, 97))

    def loss_and_stats(model, variables, images, labels, axis_name=None):
        logits, state = model.apply(variables, images, train=True, mutable=["batch_stats"])
        loss, _ = cascade_loss(logits, labels, weights, axis_name=axis_name)
        return loss, state["batch_stats"]

    with jax.enable_x64(True):
        single = single.clone(dtype=jnp.float64)
        variables = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
        images = images.astype(jnp.float64)
        loss, stats = jax.jit(functools.partial(loss_and_stats, single))(variables, images, labels)
        synced = single.clone(axis_name="batch")

        def per_device(images, labels):
            loss, stats = loss_and_stats(synced, variables, images, labels, axis_name="batch")
            return jax.lax.psum(loss, "batch"), stats

        p_loss, p_stats = jax.pmap(per_device, axis_name="batch")(images[:, None], labels[:, None])
    np.testing.assert_allclose(p_loss[0], loss, rtol=1e-5)
    p_stats = jax.tree.map(lambda x: x[0], p_stats)
    chex.assert_trees_all_close(p_stats, stats, atol=1e-5, rtol=1e-5)
