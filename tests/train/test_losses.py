"""Cascade label guidance loss against a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icnet_jax.train.losses import Ohem, cascade_loss, cross_entropy_sum, ohem_mask
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


CLASS_WEIGHTS = np.array(
    [0.5, 2.0, 1.0, 4.0, 0.0]
)  # class 4 weight 0, as a class absent from training


def cascade_reference(logits, labels, weights, class_weights=None, ohem=None):
    """The loss from the numpy reference; `ohem` = (thresh, min_kept at label resolution)."""
    total, per_branch = 0.0, {}
    for name, weight in weights.items():
        small = ref.resize_nearest(labels, logits[name].shape[1:3])
        keep = None
        if ohem is not None:
            thresh, min_kept = ohem
            area = logits[name].shape[1] * logits[name].shape[2]
            branch_kept = int(np.ceil(min_kept * area / (labels.shape[1] * labels.shape[2])))
            keep = ref.ohem_keep(logits[name], small, thresh, branch_kept)
        nll, weight_sum = ref.weighted_cross_entropy(logits[name], small, class_weights, keep)
        per_branch[name] = nll / weight_sum if weight_sum > 0 else 0.0
        total += weight * per_branch[name]
    return total, per_branch


@pytest.mark.parametrize("ohem", [None, (0.7, 200), (0.3, 40), (0.7, 5000)])
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS])
def test_class_weights_and_ohem_match_numpy(class_weights, ohem):
    # (0.7, 200): the threshold binds; (0.3, 40): min_kept binds on some images and branches;
    # (0.7, 5000): more than an image holds, so every labelled pixel is kept.
    logits, labels = make_batch(5)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()},
        jnp.asarray(labels),
        weights,
        class_weights=None if class_weights is None else jnp.asarray(class_weights),
        ohem=None if ohem is None else Ohem(*ohem),
    )
    expected, expected_per_branch = cascade_reference(logits, labels, weights, class_weights, ohem)
    for name in weights:
        np.testing.assert_allclose(per_branch[name], expected_per_branch[name], rtol=1e-5)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_ohem_keeps_at_least_min_kept_and_only_hard_pixels():
    logits, labels = make_batch(6)
    small = ref.resize_nearest(labels, (9, 17))
    z = jnp.asarray(logits["sub124"])
    nll = (
        jax.nn.logsumexp(z, axis=-1)
        - jnp.take_along_axis(z, jnp.asarray(np.where(small == 255, 0, small))[..., None], axis=-1)[
            ..., 0
        ]
    )
    valid = jnp.asarray(small != 255)
    keep = np.asarray(ohem_mask(nll, valid, thresh=0.05, min_kept=30))
    np.testing.assert_array_equal(keep, ref.ohem_keep(logits["sub124"], small, 0.05, 30))
    assert np.all(keep.reshape(2, -1).sum(axis=1) >= 30)
    assert not np.any(keep & (small == 255))


def test_class_weights_do_not_depend_on_their_scale():
    logits, labels = make_batch(7)
    args = ({k: jnp.asarray(v) for k, v in logits.items()}, jnp.asarray(labels), {"sub124": 1.0})
    a, _ = cascade_loss(*args, class_weights=jnp.asarray(CLASS_WEIGHTS))
    b, _ = cascade_loss(*args, class_weights=jnp.asarray(7.0 * CLASS_WEIGHTS))
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("options", [{"class_weights": CLASS_WEIGHTS}, {"ohem": Ohem(0.5, 60)}])
def test_ignored_pixels_neither_count_nor_get_gradient(options):
    logits, labels = make_batch(8, ignore_fraction=0.3)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}

    def loss_fn(logits):
        return cascade_loss(logits, jnp.asarray(labels), weights, **options)[0]

    params = {k: jnp.asarray(v) for k, v in logits.items()}
    loss, grads = jax.value_and_grad(loss_fn)(params)
    for name in weights:
        ignored = ref.resize_nearest(labels, logits[name].shape[1:3]) == 255
        assert ignored.any()
        assert np.all(np.asarray(grads[name])[ignored] == 0)
        # Any logits at ignored pixels: the same loss.
        changed = dict(params)
        changed[name] = jnp.where(ignored[..., None], 100.0, params[name])
        np.testing.assert_allclose(loss_fn(changed), loss, rtol=1e-6)
    labels[:] = 255
    loss, grads = jax.value_and_grad(loss_fn)(params)
    assert float(loss) == 0.0
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "options",
    [
        {"class_weights": CLASS_WEIGHTS},
        {"ohem": Ohem(0.6, 100)},
        {"class_weights": CLASS_WEIGHTS, "ohem": Ohem(0.6, 100)},
    ],
)
def test_pmap_over_four_devices_equals_one_device(options):
    """The psum of the devices' losses and their logit gradients equal one device's on the whole
    batch (ignored pixels uneven across devices; the loss computes in float32)."""
    n = jax.local_device_count()
    assert n >= 2, "tests/conftest.py should give 4 CPU devices"
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 5, size=(n, 33, 65))
    labels[0, :25] = 255
    labels[rng.random(labels.shape) < 0.1] = 255
    logits = {
        "sub4": rng.normal(size=(n, 3, 5, 5)),
        "sub24": rng.normal(size=(n, 5, 9, 5)),
        "sub124": rng.normal(size=(n, 9, 17, 5)),
    }
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    logits = {k: jnp.asarray(v, jnp.float32) for k, v in logits.items()}
    labels = jnp.asarray(labels, jnp.int32)

    def loss_fn(logits, labels, axis_name=None):
        return cascade_loss(logits, labels, weights, axis_name=axis_name, **options)[0]

    loss, grads = jax.value_and_grad(loss_fn)(logits, labels)

    def per_device(logits, labels):
        loss, grads = jax.value_and_grad(loss_fn)(logits, labels, "batch")
        return jax.lax.psum(loss, "batch"), grads

    split = jax.tree.map(lambda x: x[:, None], (logits, labels))
    p_loss, p_grads = jax.pmap(per_device, axis_name="batch")(*split)
    np.testing.assert_allclose(p_loss[0], loss, rtol=1e-6)
    for name in weights:
        np.testing.assert_allclose(p_grads[name][:, 0], grads[name], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS])
@pytest.mark.parametrize("normalize", ["kept", "labelled"])
def test_ohem_normalisation_matches_numpy(normalize, class_weights):
    # 'kept' divides the kept pixels' loss by their (class weighted) count, as the ports'
    # OhemCrossEntropy2d; 'labelled' by that of every labelled pixel, as mmsegmentation.
    logits, labels = make_batch(7)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    thresh, min_kept = 0.3, 40
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()},
        jnp.asarray(labels),
        weights,
        class_weights=None if class_weights is None else jnp.asarray(class_weights),
        ohem=Ohem(thresh, min_kept, normalize),
    )
    expected = 0.0
    for name, weight in weights.items():
        small = ref.resize_nearest(labels, logits[name].shape[1:3])
        area = logits[name].shape[1] * logits[name].shape[2]
        kept = int(np.ceil(min_kept * area / labels[0].size))
        keep = ref.ohem_keep(logits[name], small, thresh, kept)
        nll, kept_weight = ref.weighted_cross_entropy(logits[name], small, class_weights, keep)
        _, labelled_weight = ref.weighted_cross_entropy(logits[name], small, class_weights)
        assert 0 < kept_weight < labelled_weight  # some pixels dropped: the two differ
        branch = nll / (kept_weight if normalize == "kept" else labelled_weight)
        np.testing.assert_allclose(per_branch[name], branch, rtol=1e-5)
        expected += weight * branch
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_ohem_normalisation_comes_from_the_config():
    from icnet_jax.config import get_config
    from icnet_jax.errors import UserError

    config = get_config()
    config.loss.ohem = True
    assert Ohem.from_config(config.loss).normalize == "kept"
    config.loss.ohem_normalize = "labelled"
    assert Ohem.from_config(config.loss).normalize == "labelled"
    config.loss.ohem_normalize = "all"
    with pytest.raises(UserError, match="ohem_normalize"):
        Ohem.from_config(config.loss)
