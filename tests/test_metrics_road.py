"""ROAD: noisy linear imputation against exact solutions, and MoRF/LeRF on a known model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from keras_explainable import metrics
from keras_explainable.metrics import remove_and_debias

H = W = 8
REGION = np.zeros((H, W))
REGION[2:5, 3:7] = 1  # 12 pixels
AREA = int(REGION.sum())
WEIGHTS = {(dy, dx): (1 / 6 if dy == 0 or dx == 0 else 1 / 12)
           for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)}  # fmt: skip


def dense_imputation(image, mask):
    """The ROAD system built pixel by pixel and solved densely (one image, channels last)."""
    h, w, c = image.shape
    missing = list(zip(*np.nonzero(mask)))
    index = {p: k for k, p in enumerate(missing)}
    a = np.zeros((len(missing), len(missing)))
    b = np.zeros((len(missing), c))
    for k, (i, j) in enumerate(missing):
        for (dy, dx), weight in WEIGHTS.items():
            q = (i + dy, j + dx)
            if not (0 <= q[0] < h and 0 <= q[1] < w):
                continue
            a[k, k] += weight
            if q in index:
                a[k, index[q]] -= weight
            else:
                b[k] += weight * image[q]
    out = image.astype(np.float64).copy()
    if missing:
        solved = np.linalg.solve(a, b)
        for k, p in enumerate(missing):
            out[p] = solved[k]
    return out


def test_a_hole_in_a_linear_ramp_is_filled_exactly():
    rows, cols = np.mgrid[:10, :12]
    ramp = np.stack([0.3 * rows + 0.7 * cols + 1.0, -0.2 * rows + 0.1 * cols], -1)[None]
    mask = np.zeros((1, 10, 12), bool)
    mask[0, 3:7, 2:9] = True  # an interior hole (the 8-neighbour mean of a plane is the plane)
    mask[0, 8, 10] = True
    filled = metrics.noisy_linear_imputation(ramp, mask, noise=0.0)
    np.testing.assert_allclose(filled, ramp, atol=1e-7)


def test_single_pixels_take_the_weighted_mean_of_their_neighbours(rng):
    image = rng.random((1, 5, 6, 2))
    mask = np.zeros((1, 5, 6), bool)
    mask[0, 2, 3] = True  # interior: weights sum to 1
    mask[0, 0, 0] = True  # corner: two edge neighbours (1/6) and one diagonal (1/12)
    filled = metrics.linear_imputation(image, mask)
    x = image[0]
    interior = sum(w * x[2 + dy, 3 + dx] for (dy, dx), w in WEIGHTS.items())
    corner = (x[0, 1] / 6 + x[1, 0] / 6 + x[1, 1] / 12) / (5 / 12)
    np.testing.assert_allclose(filled[0, 2, 3], interior, atol=1e-7)
    np.testing.assert_allclose(filled[0, 0, 0], corner, atol=1e-7)
    keep = ~mask[0]
    np.testing.assert_array_equal(filled[0][keep], x[keep])


def test_conjugate_gradients_match_a_dense_solve(rng):
    images = rng.normal(size=(3, 7, 9, 2))
    masks = rng.random((3, 7, 9)) < np.array([0.2, 0.5, 0.85])[:, None, None]
    filled = metrics.linear_imputation(images, masks)
    for i in range(3):
        np.testing.assert_allclose(filled[i], dense_imputation(images[i], masks[i]), atol=1e-6)


def test_noise_has_the_stated_scale_and_only_touches_removed_pixels(rng):
    images = rng.random((2, 32, 32, 3))
    masks = rng.random((2, 32, 32)) < 0.5
    clean = metrics.linear_imputation(images, masks)
    noisy = metrics.noisy_linear_imputation(images, masks, noise=0.01, seed=3)
    delta = (noisy - clean)[masks]
    assert delta.std() == pytest.approx(0.01, rel=0.05)
    assert abs(delta.mean()) < 1e-3
    np.testing.assert_array_equal(noisy[~masks], images[~masks])
    again = metrics.noisy_linear_imputation(images, masks, noise=0.01, seed=3)
    np.testing.assert_array_equal(noisy, again)


def test_every_pixel_removed_gives_zeros():
    filled = metrics.linear_imputation(np.ones((1, 3, 3, 1)), np.ones((1, 3, 3), bool))
    np.testing.assert_array_equal(filled, 0.0)


# ----------------------------------------------------------------- ROAD on a known model


def region_mean_model():
    x = keras.Input((H, W, 1))
    out = layers.Dense(2, use_bias=False, name="logits")(layers.Flatten()(x))
    model = keras.Model(x, out)
    model.get_layer("logits").set_weights([np.stack([REGION.ravel() / AREA, np.zeros(H * W)], 1)])
    return model


def reference_road(x, maps, fractions, order):
    """Scores of the region-mean model after removal + dense imputation (no noise)."""
    n = len(x)
    scores = np.zeros((n, len(fractions)))
    for i in range(n):
        ranking = sorted(range(H * W), key=lambda p: (-maps[i].ravel()[p], p))
        for k, fraction in enumerate(fractions):
            count = int(np.round(fraction * H * W))
            chosen = ranking[:count] if order == "morf" else ranking[H * W - count :]
            mask = np.zeros(H * W, bool)
            mask[chosen] = True
            filled = dense_imputation(x[i], mask.reshape(H, W))
            scores[i, k] = (filled[..., 0] * REGION).sum() / AREA
    return scores


def test_road_morf_and_lerf_on_the_oracle_map(rng):
    model = region_mean_model()
    x = np.repeat(REGION[None, ..., None], 2, 0).astype("float32")  # bright object, dark rest
    x[1] += rng.uniform(0, 0.2, (H, W, 1)).astype("float32")
    oracle = np.repeat(REGION[None], 2, 0)
    fractions = remove_and_debias.DEFAULT_FRACTIONS
    morf = metrics.road(model, x, oracle, [0, 0], order="morf", noise=0.0, activation=None)
    lerf = metrics.road(model, x, oracle, [0, 0], order="lerf", noise=0.0, activation=None)
    np.testing.assert_allclose(morf.scores, reference_road(x, oracle, fractions, "morf"), atol=1e-5)
    np.testing.assert_allclose(lerf.scores, reference_road(x, oracle, fractions, "lerf"), atol=1e-5)
    # MoRF >= 20% removes the whole object, imputed from the dark background
    np.testing.assert_allclose(morf.scores[0, 1:], 0.0, atol=1e-6)
    # LeRF up to 80% (51 of 64 pixels) leaves the 12-pixel object intact
    intact = x[:, 2:5, 3:7, 0].mean(axis=(1, 2))
    np.testing.assert_allclose(lerf.scores[:, :-1], np.repeat(intact[:, None], 8, 1), atol=1e-6)
    np.testing.assert_allclose(morf.original, [1.0, x[1, 2:5, 3:7, 0].mean()], atol=1e-6)
    combined = metrics.road_combined(model, x, oracle, [0, 0], noise=0.0, activation=None)
    np.testing.assert_allclose(combined.score, ((lerf.scores - morf.scores) / 2).mean(1), atol=1e-6)
    reversed_ = metrics.road_combined(model, x, 1 - oracle, [0, 0], noise=0.0, activation=None)
    assert np.all(combined.score > 0.3) and np.all(reversed_.score < -0.3)


def test_road_noise_is_seeded_per_image_and_fraction(rng):
    model = region_mean_model()
    x = rng.random((3, H, W, 1)).astype("float32")
    maps = rng.random((3, H, W))
    a = metrics.road(model, x, maps, [0, 0, 0], noise=0.01, seed=5, batch_size=4, activation=None)
    b = metrics.road(model, x, maps, [0, 0, 0], noise=0.01, seed=5, batch_size=64, activation=None)
    c = metrics.road(model, x, maps, [0, 0, 0], noise=0.0, activation=None)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert 0 < np.abs(a.scores - c.scores).max() < 0.02


def test_road_errors():
    model = region_mean_model()
    x = np.ones((1, H, W, 1), "float32")
    with pytest.raises(ValueError, match="morf"):
        metrics.road(model, x, REGION[None], [0], order="most")
    with pytest.raises(ValueError, match="fractions"):
        metrics.road(model, x, REGION[None], [0], fractions=[0.5, 1.5])
    with pytest.raises(ValueError, match="masks"):
        metrics.linear_imputation(np.ones((1, 4, 4, 1)), np.ones((1, 4, 5), bool))
