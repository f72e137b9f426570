"""Pointing game and energy-based pointing game on hand-made maps and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from keras_explainable import metrics, wsol

SIZE = 64
BOX = [20, 10, 29, 19]  # x_min, y_min, x_max, y_max (inclusive): rows 10..19, cols 20..29


def peaked(points, size=SIZE):
    """One map per (row, col): 1 at the point, small values elsewhere."""
    maps = np.full((len(points), size, size), 0.1)
    for i, (r, c) in enumerate(points):
        maps[i, r, c] = 1.0
    return maps


def test_peak_inside_is_a_hit_far_outside_a_miss():
    maps = peaked([(15, 25), (50, 50), (10, 20), (19, 29)])
    result = metrics.pointing_game(maps, boxes=[BOX] * 4)
    np.testing.assert_array_equal(result.hits, [True, False, True, True])
    np.testing.assert_array_equal(result.points, [(15, 25), (50, 50), (10, 20), (19, 29)])
    assert result.accuracy == pytest.approx(0.75) and result.per_class is None


def test_tolerance_is_a_euclidean_distance_in_pixels():
    # (31, 29): 12 rows below the box's bottom edge (row 19), inside its columns
    # (31, 41): 12 rows and 12 columns from the corner (19, 29): distance 16.97
    maps = peaked([(31, 29), (31, 41), (19, 44), (19, 45)])
    hits = metrics.pointing_game(maps, boxes=np.array([BOX] * 4)).hits
    np.testing.assert_array_equal(hits, [True, False, True, False])  # 15 px: col 44 yes, 45 no
    strict = metrics.pointing_game(maps, boxes=np.array([BOX] * 4), tolerance=0).hits
    assert not strict.any()
    assert metrics.pointing_game(peaked([(15, 25)]), boxes=[BOX], tolerance=0).hits[0]


def test_boxes_and_masks_agree_and_masks_can_be_finer():
    maps = peaked([(15, 25), (45, 5), (12, 36)])
    boxes = [np.array([BOX]), np.array([BOX, [0, 40, 9, 49]]), np.array([BOX])]
    masks = wsol.boxes_to_masks(boxes, (SIZE, SIZE))
    by_boxes = metrics.pointing_game(maps, boxes=boxes)
    by_masks = metrics.pointing_game(maps, masks=masks)
    np.testing.assert_array_equal(by_boxes.hits, [True, True, True])  # (12, 36): 7 px right
    np.testing.assert_array_equal(by_boxes.hits, by_masks.hits)
    # maps at half resolution are resized to the masks' size before pointing
    small = np.zeros((1, 32, 32))
    small[0, 7, 12] = 1.0
    fine = metrics.pointing_game(small, masks=masks[:1], tolerance=0)
    assert fine.hits[0] and tuple(fine.points[0]) in {(14, 24), (14, 25), (15, 24), (15, 25)}


def test_class_averaged_accuracy():
    maps = peaked([(15, 25), (15, 25), (60, 60), (60, 60)])
    result = metrics.pointing_game(maps, boxes=[BOX] * 4, classes=[0, 0, 0, 1])
    assert result.per_class == {0: pytest.approx(2 / 3), 1: 0.0}
    assert result.accuracy == pytest.approx(1 / 3)  # per image it would be 1/2


def test_energy_of_oracle_uniform_and_hand_made_maps():
    masks = wsol.boxes_to_masks([BOX] * 3, (SIZE, SIZE))
    oracle = masks[0].astype(float)
    spread = np.zeros((SIZE, SIZE))
    spread[15, 25] = 6.0  # inside: 6 + 1 + 2 = 9 of 9 + 1 = 10 energy (min is 0)
    spread[12, 22] = 1.0
    spread[18, 28] = 2.0
    spread[40, 40] = 1.0  # outside
    maps = np.stack([oracle, spread / 6.0 * 3.0, np.ones((SIZE, SIZE))])
    result = metrics.energy_pointing_game(maps, masks=masks)
    np.testing.assert_allclose(result.proportions, [1.0, 0.9, 0.0])  # constant map: no energy
    assert result.proportion == pytest.approx(1.9 / 3)


def test_random_maps_score_about_the_box_area(rng):
    maps = rng.random((200, SIZE, SIZE))
    result = metrics.energy_pointing_game(maps, boxes=[BOX] * 200)
    assert result.proportion == pytest.approx(100 / SIZE**2, rel=0.05)
    oracle = metrics.energy_pointing_game(wsol.boxes_to_masks([BOX], (SIZE, SIZE)) * 1.0,
                                          boxes=[BOX])  # fmt: skip
    assert oracle.proportion == 1.0
    points = metrics.pointing_game(maps, boxes=[BOX] * 200).accuracy
    # chance of a hit: the box dilated by 15 px, as a share of the image
    dilated = metrics.pointing_game(peaked([(r, c) for r in range(SIZE) for c in range(SIZE)]),
                                    boxes=[BOX] * SIZE**2).accuracy  # fmt: skip
    assert points == pytest.approx(dilated, abs=0.1)


def test_image_size_resizes_the_maps():
    small = np.zeros((1, 16, 16))
    small[0, 4, 6] = 1.0  # (4, 6) * 4 ~ (16..19, 24..27)
    hit = metrics.pointing_game(small, boxes=[BOX], tolerance=0, image_size=(SIZE, SIZE))
    assert hit.hits[0]


def test_errors():
    maps = peaked([(15, 25)])
    with pytest.raises(ValueError, match="exactly one"):
        metrics.pointing_game(maps)
    with pytest.raises(ValueError, match="exactly one"):
        metrics.pointing_game(maps, boxes=[BOX], masks=np.ones((1, SIZE, SIZE)))
    with pytest.raises(ValueError, match="empty"):
        metrics.pointing_game(maps, masks=np.zeros((1, SIZE, SIZE)))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(maps, boxes=[BOX], tolerance=-1)
    with pytest.raises(ValueError, match="x_min <= x_max"):
        metrics.energy_pointing_game(maps, boxes=[[30, 10, 20, 19]])
    with pytest.raises(ValueError, match="no ground-truth box"):
        metrics.energy_pointing_game(maps, boxes=[np.zeros((0, 4))])
    with pytest.raises(ValueError, match="2 images for 1 maps"):
        metrics.pointing_game(maps, boxes=[BOX, BOX])
