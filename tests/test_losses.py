"""Cascade label guidance loss against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.losses import cascade_loss, cross_entropy_sum
from tests import numpy_reference as ref


def make_batch(seed, size=(33, 65), classes=5, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=(2, *size))
    labels[rng.random(labels.shape) < ignore_fraction] = 255
    logits = {
        "sub4": rng.normal(size=(2, 3, 5, classes)),
        "sub24": rng.normal(size=(2, 5, 9, classes)),
        "sub124": rng.normal(size=(2, 9, 17, classes)),
    }
    return {k: v.astype(np.float32) for k, v in logits.items()}, labels.astype(np.int32)


def test_cross_entropy_matches_numpy():
    logits, labels = make_batch(0)
    small = ref.resize_nearest(labels, (9, 17))
    total, count = cross_entropy_sum(jnp.asarray(logits["sub124"]), jnp.asarray(small))
    expected_total, expected_count = ref.cross_entropy(logits["sub124"], small)
    np.testing.assert_allclose(total, expected_total, rtol=1e-5)
    assert count == expected_count


@pytest.mark.parametrize(
    "weights",
    [{"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}, {"sub4": 0.16, "sub24": 0.4, "sub124": 1.0}],
)
def test_cascade_loss_matches_numpy(weights):
    logits, labels = make_batch(1)
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()}, jnp.asarray(labels), weights
    )
    expected = 0.0
    for name, weight in weights.items():
        small = ref.resize_nearest(labels, logits[name].shape[1:3])
        total, count = ref.cross_entropy(logits[name], small)
        np.testing.assert_allclose(per_branch[name], total / count, rtol=1e-5)
        expected += weight * total / count
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_labels_shrink_by_nearest_neighbour_on_release_geometry():
    # On a 1025-pixel crop the 1/4 labels are exactly every 4th pixel.
    labels = np.random.default_rng(2).integers(0, 19, size=(1, 1025, 33)).astype(np.int32)
    from icnet_jax.models.layers import resize_nearest

    np.testing.assert_array_equal(
        resize_nearest(jnp.asarray(labels), (257, 9)), labels[:, ::4, ::4]
    )


def test_all_ignored_gives_zero_and_finite_gradients():
    logits, labels = make_batch(3)
    labels[:] = 255
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}

    def loss_fn(logits):
        return cascade_loss(logits, jnp.asarray(labels), weights)[0]

    params = {k: jnp.asarray(v) for k, v in logits.items()}
    loss, grads = jax.value_and_grad(loss_fn)(params)
    assert float(loss) == 0.0
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grads))


def test_branches_without_weight_are_not_used():
    logits, labels = make_batch(4)
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()}, jnp.asarray(labels), {"sub124": 1.0}
    )
    assert set(per_branch) == {"sub124"}
    np.testing.assert_allclose(loss, per_branch["sub124"])
