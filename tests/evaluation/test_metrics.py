"""Confusion matrix and mIoU against numpy and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax.evaluation.metrics import confusion_matrix, segmentation_metrics
from tests import numpy_reference as ref


def test_confusion_matrix_matches_numpy_and_jits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(3, 17, 29))
    labels[rng.random(labels.shape) < 0.3] = 255
    predictions = rng.integers(0, 6, size=labels.shape)
    expected = ref.confusion_matrix(labels, predictions, 6)
    got = jax.jit(confusion_matrix, static_argnums=2)(labels, predictions, 6)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == jnp.int32


def test_confusion_summed_across_devices():
    n = jax.local_device_count()
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(n, 2, 8, 8))
    predictions = rng.integers(0, 4, size=(n, 2, 8, 8))
    summed = jax.pmap(
        lambda t, p: jax.lax.psum(confusion_matrix(t, p, 4), "batch"), axis_name="batch"
    )(labels, predictions)[0]
    np.testing.assert_array_equal(summed, ref.confusion_matrix(labels, predictions, 4))


def test_metrics_hand_computed():
    # Ground truth rows, predictions columns; class 3 absent from both.
    confusion = np.array([[5, 1, 0, 0], [2, 3, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]])
    metrics = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    iou = [5 / (6 + 7 - 5), 3 / (5 + 4 - 3), 4 / 4]
    np.testing.assert_allclose(metrics["iou"][:3], iou)
    assert np.isnan(metrics["iou"][3])
    assert metrics["per_class"]["d"] is None
    assert metrics["absent_classes"] == ["d"]
    np.testing.assert_allclose(metrics["miou"], np.mean(iou))
    np.testing.assert_allclose(metrics["pixel_accuracy"], 12 / 15)
    np.testing.assert_allclose(metrics["mean_accuracy"], np.mean([5 / 6, 3 / 5, 1.0]))
    assert metrics["num_pixels"] == 15


def test_class_only_predicted_counts_with_zero_iou():
    confusion = np.array([[4, 1], [0, 0]])  # class 1 never in ground truth but predicted once
    metrics = segmentation_metrics(confusion)
    np.testing.assert_allclose(metrics["iou"], [0.8, 0.0])
    np.testing.assert_allclose(metrics["miou"], 0.4)
    assert metrics["absent_classes"] == []


def test_large_counts_do_not_overflow():
    confusion = np.full((2, 2), 2**31 - 1, dtype=np.int64) + np.eye(2, dtype=np.int64) * 2**31
    metrics = segmentation_metrics(confusion)
    assert metrics["num_pixels"] == int(confusion.sum())
    np.testing.assert_allclose(metrics["miou"], (2**32 - 1) / (2**32 - 1 + 2 * (2**31 - 1)))
