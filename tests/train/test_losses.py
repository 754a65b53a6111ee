"""Cascade label guidance loss against a numpy reference."""

from math import ceil

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


# ---- mmsegmentation's rule, transcribed from its OHEMPixelSampler and CrossEntropyLoss --------


def mmseg_sampler(logits, labels, thresh, min_kept, ignore_label=255):
    """OHEMPixelSampler.sample with a `thresh`: `[N, h, w]` 0/1 pixel weights. Over the whole
    batch: sort the labelled pixels' softmax probabilities of their label, take the one at index
    min(min_kept * N, count - 1) (0 when nothing is labelled), threshold = max(that, thresh);
    weight 1 where the probability is strictly below the threshold."""
    prob = ref.softmax_probabilities(logits)
    valid = labels != ignore_label
    p_true = np.take_along_axis(prob, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    ordered = np.sort(p_true[valid])
    batch_kept = min_kept * labels.shape[0]
    min_threshold = ordered[min(batch_kept, ordered.size - 1)] if ordered.size else 0.0
    return (valid & (p_true < max(min_threshold, thresh))).astype(np.float64)


def mmseg_cross_entropy(logits, labels, seg_weight, class_weights, avg_non_ignore):
    """CrossEntropyLoss (reduction 'mean') with the sampler's weights: per pixel
    F.cross_entropy(weight=class_weight, reduction='none') (w[y] * ce, 0 where ignored) times
    seg_weight, summed, divided by the count of non-ignored labels (avg_non_ignore=True) or of
    every pixel (False: `loss.mean()`); never by a sum of class weights."""
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    log_p = np.log(ref.softmax_probabilities(logits))
    ce = -np.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    w = np.ones(logits.shape[-1]) if class_weights is None else np.asarray(class_weights)
    loss = np.where(valid, w[safe] * ce, 0.0) * seg_weight
    return loss.sum() / (valid.sum() if avg_non_ignore else labels.size)


def true_class_nll(logits, labels):
    z = jnp.asarray(logits)
    safe = jnp.asarray(np.where(labels == 255, 0, labels))
    return jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, safe[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 20), (0.3, 40), (0.05, 30), (0.7, 5000)])
def test_batch_ohem_keeps_the_pixels_mmseg_keeps(thresh, min_kept):
    # (0.05, 30): min_kept binds; (0.7, 5000): more than the batch holds, all but the easiest.
    logits, labels = make_batch(6)
    small = ref.resize_nearest(labels, (9, 17))
    valid = jnp.asarray(small != 255)
    nll = true_class_nll(logits["sub124"], small)
    keep = np.asarray(ohem_mask(nll, valid, thresh, min_kept, scope="batch"))
    np.testing.assert_array_equal(keep, mmseg_sampler(logits["sub124"], small, thresh, min_kept))
    per_image = np.asarray(ohem_mask(nll, valid, thresh, min_kept))
    if (thresh, min_kept) == (0.05, 30):  # the per-image rule differs where min_kept binds
        assert keep.sum() >= 2 * 30 and not np.array_equal(keep, per_image)


@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS])
@pytest.mark.parametrize("normalize", ["labelled", "pixels"])
def test_batch_ohem_with_mmseg_denominators_equals_mmseg(normalize, class_weights):
    """'batch' with 'labelled' ('pixels') is mmseg's sampler with CrossEntropyLoss(avg_non_ignore
    =True (False)) on every branch: the class weights weigh the pixels, not the denominator."""
    logits, labels = make_batch(7)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    thresh, min_kept = 0.3, 40
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()},
        jnp.asarray(labels),
        weights,
        class_weights=None if class_weights is None else jnp.asarray(class_weights),
        ohem=Ohem(thresh, min_kept, normalize, "batch"),
    )
    expected = 0.0
    for name, weight in weights.items():
        small = ref.resize_nearest(labels, logits[name].shape[1:3])
        kept = int(np.ceil(min_kept * small[0].size / labels[0].size))
        seg_weight = mmseg_sampler(logits[name], small, thresh, kept)
        assert 0 < seg_weight.sum() < (small != 255).sum()
        branch = mmseg_cross_entropy(
            logits[name], small, seg_weight, class_weights, normalize == "labelled"
        )
        np.testing.assert_allclose(per_branch[name], branch, rtol=1e-5)
        expected += weight * branch
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("scope", ["image", "batch"])
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS])
@pytest.mark.parametrize("normalize", ["kept", "labelled", "pixels"])
def test_ohem_denominators_match_numpy(normalize, class_weights, scope):
    # 'kept': the kept pixels' class weights summed (PyTorch's weighted mean over them, as the
    # ports' OhemCrossEntropy2d); 'labelled': the labelled pixels counted; 'pixels': all counted.
    logits, labels = make_batch(7)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    thresh, min_kept = 0.3, 40
    loss, per_branch = cascade_loss(
        {k: jnp.asarray(v) for k, v in logits.items()},
        jnp.asarray(labels),
        weights,
        class_weights=None if class_weights is None else jnp.asarray(class_weights),
        ohem=Ohem(thresh, min_kept, normalize, scope),
    )
    expected = 0.0
    for name, weight in weights.items():
        small = ref.resize_nearest(labels, logits[name].shape[1:3])
        kept = int(np.ceil(min_kept * small[0].size / labels[0].size))
        if scope == "image":
            keep = ref.ohem_keep(logits[name], small, thresh, kept)
        else:
            keep = mmseg_sampler(logits[name], small, thresh, kept).astype(bool)
        nll, kept_weight = ref.weighted_cross_entropy(logits[name], small, class_weights, keep)
        denominator = {
            "kept": kept_weight,
            "labelled": np.sum(small != 255),
            "pixels": small.size,
        }[normalize]
        assert kept_weight > 0 and keep.sum() < np.sum(small != 255)  # some pixels dropped
        branch = nll / denominator
        np.testing.assert_allclose(per_branch[name], branch, rtol=1e-5)
        expected += weight * branch
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def two_images_one_easy():
    """Two 8x8 images of class 0 (of 2) whose probabilities of the true class are set exactly:
    the first has 30 hard pixels (p = 0.25) and 34 easy ones (0.9); the second one hard pixel
    (0.1) and 63 between 0.505 and 0.815 (0.5 + 0.005 i)."""
    p = np.concatenate(
        [np.r_[np.full(30, 0.25), np.full(34, 0.9)], np.r_[0.1, 0.5 + 0.005 * np.arange(1, 64)]]
    ).reshape(2, 8, 8)
    logits = np.stack([np.log(p), np.log1p(-p)], axis=-1).astype(np.float32)
    return logits, np.zeros((2, 8, 8), np.int32)


@pytest.mark.parametrize(
    "scope, kept, expected_loss",
    [
        # min_kept 10 per image: the easy image keeps its 10 hardest pixels.
        (
            "image",
            [30, 10],
            (30 * np.log(4) + np.log(10) - np.log(0.505 + 0.005 * np.arange(9)).sum()) / 40,
        ),
        # min_kept 10 * 2 over the batch: the 31 pixels below 0.3 are enough.
        ("batch", [30, 1], (30 * np.log(4) + np.log(10)) / 31),
    ],
)
def test_image_and_batch_rule_on_a_hand_checked_batch(scope, kept, expected_loss):
    logits, labels = two_images_one_easy()
    ohem = Ohem(0.3, 10, "kept", scope)
    nll = true_class_nll(logits, labels)
    keep = np.asarray(ohem_mask(nll, jnp.asarray(labels == 0), 0.3, 10, scope=scope))
    assert keep.reshape(2, -1).sum(axis=1).tolist() == kept
    if scope == "batch":
        np.testing.assert_array_equal(keep, mmseg_sampler(logits, labels, 0.3, 10))
    loss, _ = cascade_loss(
        {"sub124": jnp.asarray(logits)}, jnp.asarray(labels), {"sub124": 1.0}, ohem=ohem
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)  # 1.2423 and 1.4159


@pytest.mark.parametrize("normalize", ["kept", "labelled"])
def test_batch_ohem_under_pmap_chooses_over_the_global_batch(normalize):
    """Four devices of one image each give the loss and the gradients of one device holding the
    four: the threshold is the global batch's (min_kept * 4 over all devices), not each device's,
    which would keep other pixels on this batch (one hard image, three easy ones)."""
    n = jax.local_device_count()
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 5, size=(n, 33, 65))
    labels[rng.random(labels.shape) < 0.1] = 255
    # Every image but the first favours the true class: easy pixels.
    bonus = np.r_[0.0, np.full(n - 1, 3.0)][:, None, None, None]
    logits = {}
    for name, size in (("sub4", (3, 5)), ("sub24", (5, 9)), ("sub124", (9, 17))):
        small = ref.resize_nearest(np.where(labels == 255, 0, labels), size)
        z = rng.normal(size=(n, *size, 5)) + bonus * np.eye(5)[small]
        logits[name] = jnp.asarray(z, jnp.float32)
    weights = {"sub4": 0.4, "sub24": 0.4, "sub124": 1.0}
    labels = jnp.asarray(labels, jnp.int32)
    ohem = Ohem(0.2, 400, normalize, "batch")

    def loss_fn(logits, labels, axis_name=None):
        return cascade_loss(logits, labels, weights, axis_name=axis_name, ohem=ohem)[0]

    loss, grads = jax.value_and_grad(loss_fn)(logits, labels)
    # Each device choosing over its own image would keep other pixels on this batch.
    small = ref.resize_nearest(np.asarray(labels), (9, 17))
    nll, valid = true_class_nll(logits["sub124"], small), jnp.asarray(small != 255)
    kept = ceil(400 * 9 * 17 / (33 * 65))
    global_keep = ohem_mask(nll, valid, 0.2, kept, scope="batch")
    local_keep = ohem_mask(nll, valid, 0.2, kept, scope="image")  # = 'batch' on one image
    assert not np.array_equal(global_keep, local_keep)

    def per_device(logits, labels):
        loss, grads = jax.value_and_grad(loss_fn)(logits, labels, "batch")
        return jax.lax.psum(loss, "batch"), grads

    split = jax.tree.map(lambda x: x[:, None], (logits, labels))
    p_loss, p_grads = jax.pmap(per_device, axis_name="batch")(*split)
    np.testing.assert_allclose(p_loss[0], loss, rtol=1e-6)
    for name in weights:
        np.testing.assert_allclose(p_grads[name][:, 0], grads[name], rtol=1e-5, atol=1e-8)


def test_ohem_options_come_from_the_config():
    from icnet_jax.default import get_config
    from icnet_jax.errors import UserError

    config = get_config()
    config.loss.ohem = True
    ohem = Ohem.from_config(config.loss)
    assert (ohem.normalize, ohem.scope) == ("kept", "image")
    config.loss.ohem_normalize = "labelled"
    config.loss.ohem_scope = "batch"
    ohem = Ohem.from_config(config.loss)
    assert (ohem.normalize, ohem.scope) == ("labelled", "batch")
    config.loss.ohem_normalize = "all"
    with pytest.raises(UserError, match="ohem_normalize"):
        Ohem.from_config(config.loss)
    config.loss.ohem_normalize = "kept"
    config.loss.ohem_scope = "device"
    with pytest.raises(UserError, match="ohem_scope"):
        Ohem.from_config(config.loss)
