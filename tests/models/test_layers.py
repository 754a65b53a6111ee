"""Resizing, conv-BN and pyramid pooling against numpy references and the release's geometry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.models import layers, pooling
from tests import numpy_reference as ref

# (in, out): exact x2/x4 zooms and x2 shrinks of the release, and arbitrary sizes.
RESIZES = [
    (33, 65),
    (65, 257),
    (1025 // 8 + 1, 1025 // 4 + 1),
    (65, 33),
    (9, 5),
    (10, 5),
    (7, 12),
    (12, 7),
    (1, 4),
    (5, 1),
    (6, 6),
]


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(("in_size", "out_size"), RESIZES)
def test_resize_bilinear_matches_numpy(in_size, out_size, align_corners):
    x = np.random.default_rng(0).normal(size=(2, in_size, in_size + 2, 3)).astype(np.float32)
    size = (out_size, out_size + 1)
    got = layers.resize_bilinear(jnp.asarray(x), size, align_corners=align_corners)
    np.testing.assert_allclose(got, ref.resize_bilinear(x, size, align_corners), atol=1e-5)


@pytest.mark.parametrize(("in_size", "out_size"), RESIZES)
def test_resize_gradient_is_transposed_interpolation(in_size, out_size):
    x = np.random.default_rng(1).normal(size=(1, in_size, 3, 2)).astype(np.float32)
    g = np.random.default_rng(2).normal(size=(1, out_size, 3, 2)).astype(np.float32)
    grad = jax.grad(lambda x: jnp.sum(layers.resize_bilinear(x, (out_size, 3)) * g))(x)
    matrix = ref.interpolation_matrix(in_size, out_size, True)
    np.testing.assert_allclose(grad, np.einsum("oi,nowc->niwc", matrix, g), atol=1e-5)


def test_align_corners_equals_scale_and_translate_recipe():
    # The recipe of the reference notes: scale (out-1)/(in-1), translation 0.5 - scale/2.
    x = np.random.default_rng(3).normal(size=(1, 17, 33, 2)).astype(np.float32)
    out = (33, 65)
    scale = jnp.array([(o - 1) / (i - 1) for i, o in zip(x.shape[1:3], out)])
    expected = jax.image.scale_and_translate(
        x, (1, *out, 2), (1, 2), scale, 0.5 - scale / 2, "linear", antialias=False
    )
    np.testing.assert_allclose(layers.resize_bilinear(x, out), expected, atol=1e-5)


def test_shrink_of_odd_size_picks_every_other_pixel():
    x = jnp.arange(2 * 9 * 17 * 1, dtype=jnp.float32).reshape(2, 9, 17, 1)
    np.testing.assert_array_equal(layers.resize_bilinear(x, (5, 9)), x[:, ::2, ::2])


@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_nearest_matches_numpy_and_keeps_labels(align_corners):
    labels = np.random.default_rng(4).integers(0, 5, size=(2, 37, 61)).astype(np.int32)
    for size in [(10, 16), (37, 61), (5, 8), (80, 100)]:
        got = np.asarray(layers.resize_nearest(jnp.asarray(labels), size, align_corners))
        np.testing.assert_array_equal(got, ref.resize_nearest(labels, size, align_corners))


def test_release_sizes():
    assert [layers.shrink_size(n) for n in (1025, 2049, 65, 129)] == [513, 1025, 33, 65]
    assert [layers.zoom_size(n, 2) for n in (33, 65, 129)] == [65, 129, 257]
    assert layers.zoom_size(257, 4) == 1025
    assert layers.zoom_size(33, 2, align_corners=False) == 66


@pytest.mark.parametrize("strides", [1, 2])
def test_pointwise_matmul_is_a_1x1_convolution(strides):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 9, 11, 5)).astype(np.float32)
    kernel = rng.normal(size=(1, 1, 5, 7)).astype(np.float32)
    expected = np.einsum("nhwi,io->nhwo", x[:, ::strides, ::strides], kernel[0, 0])

    def conv(fn, v, k):
        module = nn.Conv(7, (1, 1), strides=strides, padding="VALID", conv_general_dilated=fn)
        return module.apply({"params": {"kernel": k, "bias": jnp.zeros(7)}}, v)

    got = conv(layers.pointwise_matmul, x, kernel)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    grads = [
        jax.grad(lambda v, k, fn=fn: jnp.sum(conv(fn, v, k) ** 2), argnums=(0, 1))(x, kernel)
        for fn in (layers.pointwise_matmul, None)
    ]
    for got_grad, conv_grad in zip(*grads):
        np.testing.assert_allclose(got_grad, conv_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(33, 65), (12, 24), (9, 17)])
def test_sum_pyramid_pooling_matches_numpy(shape):
    x = np.random.default_rng(6).normal(size=(2, *shape, 4)).astype(np.float32)
    expected = x.astype(np.float64)
    for bins in (1, 2, 3, 6):
        (kh, sh), (kw, sw) = (pooling.pyramid_pool_window(n, bins) for n in shape)
        pooled = ref.average_pool(x, (kh, kw), (sh, sw))
        expected = expected + ref.resize_bilinear(pooled, shape)
    got = layers.SumPyramidPooling().apply({}, jnp.asarray(x))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_conv_bn_padding_follows_caffe():
    for n in (8, 9):
        x = jnp.ones((1, n, n, 2))
        for k, s, d in ((3, 2, 1), (3, 1, 2), (1, 2, 1)):
            layer = layers.ConvBN(4, k, strides=s, dilation=d)
            variables = layer.init(jax.random.PRNGKey(0), x)
            out = layer.apply(variables, x)
            pad = d * (k - 1) // 2
            assert out.shape[1] == (n + 2 * pad - d * (k - 1) - 1) // s + 1
