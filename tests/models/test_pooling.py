"""Pooling against numpy and the release's geometry: Caffe's ceil mode, the unrolled form's
gradient, and the pyramid pooling's windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.models import pooling


@pytest.mark.parametrize("unrolled", [False, True])
@pytest.mark.parametrize("size", [257, 256, 8, 9, 3])
def test_max_pool_ceil_matches_caffe(size, unrolled):
    x = np.random.default_rng(5).normal(size=(1, size, size + 1, 2)).astype(np.float32)
    got = np.asarray(pooling.max_pool_ceil(jnp.asarray(x), unrolled=unrolled))
    for axis, n in ((1, size), (2, size + 1)):
        out = int(np.ceil((n + 2 - 3) / 2)) + 1
        if (out - 1) * 2 >= n + 1:
            out -= 1
        assert got.shape[axis] == out
    padded = np.pad(x, ((0, 0), (1, 3), (1, 3), (0, 0)), constant_values=-np.inf)
    for i in range(got.shape[1]):
        for j in range(got.shape[2]):
            window = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            np.testing.assert_allclose(got[:, i, j], window.max(axis=(1, 2)))


@pytest.mark.parametrize("pool", [pooling.max_pool_ceil, pooling.max_pool_floor])
def test_unrolled_max_pool_gradient_goes_to_each_window_maximum(pool):
    # Distinct values: every window has one maximum, which receives the output's gradient.
    x = np.random.default_rng(6).permutation(2 * 9 * 12 * 3).reshape(2, 9, 12, 3)
    x = x.astype(np.float32)
    cotangent = np.random.default_rng(7).normal(size=pool(jnp.asarray(x)).shape)
    grad = jax.grad(lambda v: jnp.sum(pool(v, unrolled=True) * cotangent))(jnp.asarray(x))
    expected = np.zeros_like(x)
    padded = np.pad(x, ((0, 0), (1, 3), (1, 3), (0, 0)), constant_values=-np.inf)
    for n, i, j, c in np.ndindex(cotangent.shape):
        window = padded[n, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, c]
        r, q = np.unravel_index(np.argmax(window), window.shape)
        expected[n, 2 * i + r - 1, 2 * j + q - 1, c] += cotangent[n, i, j, c]
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6)


def test_pyramid_windows_are_the_released_ones_on_33x65():
    released = {
        1: ((33, 65), (33, 65)),
        2: ((17, 33), (16, 32)),
        3: ((13, 25), (10, 20)),
        6: ((8, 15), (5, 10)),
    }
    for bins, (kernel, stride) in released.items():
        (kh, sh), (kw, sw) = (pooling.pyramid_pool_window(n, bins) for n in (33, 65))
        assert ((kh, kw), (sh, sw)) == (kernel, stride), bins


@pytest.mark.parametrize("size", [1, 2, 5, 13, 33, 45, 65, 90, 129])
def test_pyramid_windows_tile_any_axis(size):
    for bins in (1, 2, 3, 6):
        kernel, stride = pooling.pyramid_pool_window(size, bins)
        count = (size - kernel) // stride + 1
        assert kernel >= stride >= 1
        assert (count - 1) * stride + kernel == size  # the windows cover the axis exactly
        assert count == (bins if size >= bins else size)
