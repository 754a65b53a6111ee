"""Region accuracy by region size (paper Fig. 8) against hand-computed values."""

import json

import numpy as np
import pytest
import scipy.ndimage as ndi

from icnet_jax.evaluation.regions import RegionAccuracy, connected_regions, region_accuracy

# Class 1 forms two regions that do not touch (a 2x2 block and a 2x1 bar), class 0 one region of
# 28 pixels around them, two ignored pixels.
LABEL = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1, 0],
        [255, 255, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
# Wrong at (0, 0) (class 0) and at three pixels of the 2x2 block; ignored pixels don't count.
PRED_COARSE = np.array(
    [
        [2, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1, 0],
        [1, 1, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
PRED_FINE = np.where(LABEL == 255, 0, LABEL).astype(np.int32)  # all labelled pixels right


def test_regions_of_same_class_not_touching_are_two_regions():
    region_ids, classes, sizes = connected_regions(LABEL)
    order = np.argsort(sizes)
    assert classes[order].tolist() == [1, 1, 0]
    assert sizes[order].tolist() == [2, 4, 28]
    assert (region_ids[LABEL == 255] == 0).all()
    assert len(np.unique(region_ids[LABEL == 1])) == 2


def test_region_accuracy_hand_computed():
    classes, sizes, accuracies = region_accuracy(LABEL, PRED_COARSE)
    got = {(int(c), int(s)): float(a) for c, s, a in zip(classes, sizes, accuracies)}
    assert got == pytest.approx({(0, 28): 27 / 28, (1, 4): 1 / 4, (1, 2): 1.0})


def test_diagonal_touch_depends_on_connectivity():
    label = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    _, classes8, sizes8 = connected_regions(label, connectivity=8)
    _, classes4, sizes4 = connected_regions(label, connectivity=4)
    assert sorted(zip(classes8.tolist(), sizes8.tolist())) == [(0, 7), (1, 2)]
    assert sorted(zip(classes4.tolist(), sizes4.tolist())) == [(0, 7), (1, 1), (1, 1)]


def test_accumulator_bins_means_and_differences():
    acc = RegionAccuracy(bin_size=10, num_bins=3)
    # Insertion order is fine-to-coarse: ICNet's names are put coarse-to-fine.
    acc.update(LABEL, {"sub124": PRED_FINE, "sub24": PRED_FINE, "sub4": PRED_COARSE})
    result = acc.result()
    assert result["branches"] == ["sub4", "sub24", "sub124"]
    assert result["bin_edges"] == [0, 10, 20, 30]
    # Sizes 2 and 4 -> bin 0 (1..10), 28 -> bin 2 (21..30), bin 1 empty.
    assert result["region_counts"] == [2, 0, 1]
    assert result["num_regions"] == 3
    coarse = result["mean_accuracy"]["sub4"]
    assert coarse[0] == pytest.approx((1 / 4 + 1) / 2)
    assert coarse[1] is None
    assert coarse[2] == pytest.approx(27 / 28)
    assert result["mean_accuracy"]["sub24"] == [1.0, None, 1.0]
    diff = result["differences"]
    assert list(diff) == ["sub24-sub4", "sub124-sub24"]
    assert diff["sub24-sub4"][0] == pytest.approx(1 - 0.625)
    assert diff["sub24-sub4"][1] is None
    assert diff["sub24-sub4"][2] == pytest.approx(1 / 28)
    assert diff["sub124-sub24"] == [0.0, None, 0.0]
    assert result["difference_pairs"] == [["sub24", "sub4"], ["sub124", "sub24"]]
    assert result["overall_accuracy"]["sub4"] == pytest.approx((0.25 + 1 + 27 / 28) / 3)
    json.dumps(result, allow_nan=False)  # plain JSON, no NaN


def test_accumulates_over_images():
    acc = RegionAccuracy(bin_size=10, num_bins=3)
    acc.update(LABEL, {"sub4": PRED_COARSE})
    acc.update(LABEL, {"sub4": PRED_FINE})
    result = acc.result()
    assert result["num_images"] == 2
    assert result["region_counts"] == [4, 0, 2]
    assert result["mean_accuracy"]["sub4"][0] == pytest.approx((0.25 + 1 + 1 + 1) / 4)
    assert result["differences"] == {}


def test_bin_edges_and_large_regions_ignored():
    acc = RegionAccuracy()  # paper: K = 3,000, 30 bins
    sizes = np.array([1, 3000, 3001, 6000, 87001, 90000, 90001])
    assert acc.bin_index(sizes).tolist() == [0, 0, 1, 1, 29, 29, -1]
    assert RegionAccuracy(size_scale=4.0).bin_index(np.array([750, 751])).tolist() == [0, 1]

    # 300 x 300 = 90,000 pixels of class 0 (last bin) beside a 300-pixel column of class 1.
    label = np.zeros((300, 301), np.uint8)
    label[:, 300] = 1
    acc.update(label, {"sub4": label})
    # A single 90,001-pixel region is ignored.
    acc.update(np.zeros((1, 90001), np.uint8), {"sub4": np.zeros((1, 90001), np.uint8)})
    result = acc.result()
    counts = result["region_counts"]
    assert counts[0] == 1 and counts[29] == 1 and sum(counts) == 2
    assert result["num_regions_too_large"] == 1
    assert result["bin_edges"][-1] == 90000


def test_matches_scipy_on_random_map():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(40, 50))
    label[rng.random(label.shape) < 0.1] = 255
    for connectivity, structure in ((8, np.ones((3, 3))), (4, None)):
        _, classes, sizes = connected_regions(label, connectivity=connectivity)
        for c in range(4):
            components, _ = ndi.label(label == c, structure=structure)
            expected = sorted(np.bincount(components.ravel())[1:].tolist())
            assert sorted(sizes[classes == c].tolist()) == expected


def test_merge_equals_single_pass():
    a, b, both = (RegionAccuracy(bin_size=10, num_bins=3) for _ in range(3))
    a.update(LABEL, {"sub4": PRED_COARSE, "sub24": PRED_FINE})
    b.update(LABEL.T, {"sub4": PRED_COARSE.T, "sub24": PRED_FINE.T})
    both.update(LABEL, {"sub4": PRED_COARSE, "sub24": PRED_FINE})
    both.update(LABEL.T, {"sub4": PRED_COARSE.T, "sub24": PRED_FINE.T})
    a.merge(b)
    assert a.result() == both.result()


def test_errors():
    acc = RegionAccuracy()
    with pytest.raises(ValueError, match="shape"):
        acc.update(LABEL, {"sub4": PRED_COARSE[:5]})
    acc.update(LABEL, {"sub4": PRED_COARSE})
    with pytest.raises(ValueError, match="branches"):
        acc.update(LABEL, {"sub24": PRED_COARSE})
    with pytest.raises(ValueError, match="connectivity"):
        RegionAccuracy(connectivity=6)
