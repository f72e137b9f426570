"""ke.wsol: components, boxes, IoU, MaxBoxAcc(V2), pseudo-labels and mIoU on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest

from keras_explainable import wsol
from keras_explainable.metrics import boxes as boxes_module

SIZE = 40
GT = [20, 10, 29, 19]  # x_min, y_min, x_max, y_max: rows 10..19, cols 20..29 (100 px)


def box_map(box, value=1.0, size=SIZE, base=None):
    out = np.zeros((size, size)) if base is None else base.copy()
    x0, y0, x1, y1 = box
    out[y0 : y1 + 1, x0 : x1 + 1] = value
    return out


# ----------------------------------------------------------------- IoU and masks


@pytest.mark.parametrize(
    "a, b, expected",
    [([0, 0, 9, 9], [5, 0, 14, 9], 50 / 150), ([0, 0, 9, 9], [2, 2, 6, 6], 25 / 100),
     ([0, 0, 9, 9], [10, 0, 19, 9], 0.0), ([0, 0, 4, 4], [4, 0, 8, 4], 5 / 45),
     ([3, 3, 3, 3], [3, 3, 3, 3], 1.0)],
)  # fmt: skip
def test_box_iou_by_hand(a, b, expected):
    assert wsol.box_iou([a], [b])[0, 0] == pytest.approx(expected)


def test_box_iou_pairs_and_masks():
    iou = wsol.box_iou([[0, 0, 9, 9], [5, 0, 14, 9]], [[0, 0, 9, 9], [10, 0, 19, 9], [5, 0, 14, 9]])
    np.testing.assert_allclose(iou, [[1, 0, 1 / 3], [1 / 3, 1 / 3, 1]])
    masks = wsol.boxes_to_masks([[[0, 0, 1, 1], [3, 2, 3, 2]]], (4, 5))
    expected = np.zeros((4, 5), bool)
    expected[:2, :2] = True
    expected[2, 3] = True
    np.testing.assert_array_equal(masks[0], expected)


# ----------------------------------------------------------------- components


MASK = np.array(
    [[1, 1, 0, 0, 0],
     [0, 0, 0, 1, 0],
     [0, 0, 1, 0, 0],
     [1, 0, 0, 0, 0]], bool
)  # fmt: skip


@pytest.mark.parametrize("use_scipy", [False, None])
def test_components_are_8_connected_and_numbered_in_raster_order(use_scipy):
    labels, count = wsol.connected_components(MASK, use_scipy=use_scipy)
    expected = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 2, 0], [0, 0, 2, 0, 0], [3, 0, 0, 0, 0]])
    assert count == 3
    np.testing.assert_array_equal(labels, expected)


def test_numpy_labelling_equals_scipy(rng):
    pytest.importorskip("scipy")
    masks = rng.random((12, 23, 17)) < np.linspace(0.2, 0.7, 12)[:, None, None]
    numpy_labels, numpy_count = wsol.connected_components(masks, use_scipy=False)
    scipy_labels, scipy_count = wsol.connected_components(masks, use_scipy=True)
    assert numpy_count == scipy_count > 12
    np.testing.assert_array_equal(numpy_labels, scipy_labels)  # labels never cross masks


def test_boxes_from_maps_largest_all_and_strict_threshold():
    two = box_map([2, 2, 7, 5])  # 24 px at 1.0
    two = box_map([9, 10, 11, 12], 0.8, base=two)  # 9 px at 0.8
    maps = np.stack([two, np.zeros((SIZE, SIZE))])
    largest = wsol.boxes_from_maps(maps, threshold=0.5)
    np.testing.assert_array_equal(largest[0], [[2, 2, 7, 5]])
    assert largest[1].shape == (0, 4)  # nothing above the threshold
    both = wsol.boxes_from_maps(maps, threshold=0.5, mode="all")
    np.testing.assert_array_equal(both[0], [[2, 2, 7, 5], [9, 10, 11, 12]])
    only = wsol.boxes_from_maps(maps, threshold=0.8, mode="all")  # 0.8 > 0.8 is false
    np.testing.assert_array_equal(only[0], [[2, 2, 7, 5]])


# ----------------------------------------------------------------- MaxBoxAcc


def test_oracle_maps_score_one_and_disjoint_maps_zero():
    oracle = box_map(GT)
    away = box_map([0, 25, 9, 34])
    maps = np.stack([oracle, oracle, away, away])
    assert wsol.max_box_acc(maps, [GT] * 4) == pytest.approx(0.5)
    assert wsol.max_box_acc(maps[:2], np.array([GT, GT])) == 1.0
    assert wsol.max_box_acc_v2(maps[2:], np.array([GT, GT])) == 0.0


def test_box_accuracy_curve_over_thresholds():
    ring = box_map([15, 5, 34, 24], 0.5)  # a 20x20 halo at 0.5 around the 10x10 object at 1
    graded = box_map(GT, 1.0, base=ring)
    result = wsol.box_accuracy(graded[None], [GT], iou_thresholds=(0.2, 0.5))
    below = result.thresholds < 0.5
    np.testing.assert_allclose(result.best_iou[0, below], 100 / 400)  # the halo's box
    np.testing.assert_allclose(result.best_iou[0, ~below], 1.0)  # S > 0.5: the object only
    np.testing.assert_array_equal(result.box_acc[:, 1], (~below).astype(float))
    np.testing.assert_array_equal(result.box_acc[:, 0], 1.0)  # 0.25 >= 0.2 everywhere
    np.testing.assert_allclose(result.max_box_acc, [1.0, 1.0])
    np.testing.assert_allclose(result.best_threshold, [0.0, 0.5])


def test_v2_uses_every_component_and_three_iou_thresholds():
    decoy = box_map([0, 25, 14, 39])  # 225 px, away from the object
    two_blobs = box_map(GT, base=decoy)  # the object itself: 100 px
    assert wsol.max_box_acc(two_blobs[None], [GT]) == 0.0  # largest component: the decoy
    assert wsol.max_box_acc_v2(two_blobs[None], [GT]) == 1.0  # best of all components
    shifted = box_map([22, 10, 31, 19])  # IoU 80 / 120 = 0.667 with GT
    result = wsol.box_accuracy(shifted[None], [GT], iou_thresholds=(0.3, 0.5, 0.7), mode="all")
    np.testing.assert_allclose(result.max_box_acc, [1, 1, 0])
    assert wsol.max_box_acc_v2(shifted[None], [GT]) == pytest.approx(2 / 3)


def test_several_ground_truth_boxes_the_best_match_counts():
    maps = box_map([0, 0, 9, 9])[None]
    boxes = [np.array([GT, [0, 0, 9, 9]])]
    assert wsol.max_box_acc(maps, boxes, thresholds=[0.5]) == 1.0


def test_numpy_and_scipy_paths_give_the_same_accuracy(rng, monkeypatch):
    maps = rng.random((3, 16, 16))
    boxes = np.array([[2, 3, 9, 12], [0, 0, 15, 15], [5, 5, 6, 6]])
    fast = wsol.box_accuracy(maps, boxes, mode="all").best_iou
    monkeypatch.setattr(boxes_module, "_ndimage", None)
    slow = wsol.box_accuracy(maps, boxes, mode="all").best_iou
    np.testing.assert_allclose(fast, slow)


# ----------------------------------------------------------------- WSSS


def test_pseudo_labels_by_hand():
    class0 = [[1.0, 0.5, 0.1], [0.0, 0.2, -3.0]]
    class1 = [[0.0, 2.0, 0.0], [0.4, 0.2, 0.0]]  # divided by its max, 2
    cams = np.stack([class0, class1], -1)[None]
    np.testing.assert_array_equal(wsol.pseudo_labels(cams, 0.15)[0], [[1, 2, 0], [2, 1, 0]])
    only0 = wsol.pseudo_labels(cams, 0.15, image_labels=[[1, 0]])[0]
    np.testing.assert_array_equal(only0, [[1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(wsol.pseudo_labels(cams, 0.6)[0], [[1, 2, 0], [0, 0, 0]])


def test_mean_iou_by_hand():
    predictions = np.array([[[0, 1], [1, 2]]])
    targets = np.array([[[0, 1], [2, 2]]])
    result = wsol.mean_iou(predictions, targets)
    np.testing.assert_allclose(result.iou, [1.0, 0.5, 0.5])
    assert result.miou == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result.confusion, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    padded = wsol.mean_iou(predictions, targets, num_classes=4)
    assert np.isnan(padded.iou[3]) and padded.miou == pytest.approx(2 / 3)
    ignored = wsol.mean_iou(predictions, np.array([[[0, 1], [255, 2]]]))
    np.testing.assert_allclose(ignored.iou, [1.0, 1.0, 1.0])


def test_oracle_cams_give_perfect_pseudo_labels():
    masks = np.zeros((2, SIZE, SIZE), np.int64)
    masks[0][box_map(GT) > 0] = 1
    masks[1][box_map([0, 0, 9, 9]) > 0] = 2
    cams = np.stack([masks == 1, masks == 2], -1).astype(float)
    assert wsol.mean_iou(wsol.pseudo_labels(cams), masks).miou == 1.0


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        wsol.boxes_from_maps(np.zeros((1, 4, 4)), mode="biggest")
    with pytest.raises(ValueError, match="threshold"):
        wsol.boxes_from_maps(np.zeros((1, 4, 4)), threshold=2.0)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        wsol.max_box_acc(np.zeros((1, 4, 4)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="same shape"):
        wsol.mean_iou(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int))
    with pytest.raises(ValueError, match="outside"):
        wsol.mean_iou(np.full((1, 2, 2), 3), np.zeros((1, 2, 2), int), num_classes=2)
    with pytest.raises(ValueError, match="image_labels"):
        wsol.pseudo_labels(np.zeros((1, 2, 2, 3)), image_labels=np.ones((1, 2)))
