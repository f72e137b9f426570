"""Deletion / insertion AUC and Average Drop / Increase in Confidence, with known answers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable import metrics
from tests import models

H = W = 8
REGION = np.zeros((H, W))
REGION[2:5, 3:7] = 1  # 12 pixels
AREA = int(REGION.sum())


def linear_model(kernels):
    """Flatten -> Dense without bias: logit k = sum(kernels[k] * x) (one-channel images)."""
    x = keras.Input((H, W, 1))
    out = layers.Dense(len(kernels), use_bias=False, name="logits")(layers.Flatten()(x))
    model = keras.Model(x, out)
    model.get_layer("logits").set_weights([np.stack([k.ravel() for k in kernels], 1)])
    return model


def region_mean_model():
    """Class 0 scores the mean of REGION; class 1 scores nothing."""
    return linear_model([REGION / AREA, np.zeros((H, W))])


def ones(n=3):
    return np.ones((n, H, W, 1), "float32")


# ----------------------------------------------------------------- AUC


@pytest.mark.parametrize(
    "curve, expected",
    [([1.0, 0.5, 0.0], 0.5), ([0.0, 1.0], 0.5), ([1, 1, 1, 1], 1.0), ([0.0, 0.0, 1.0], 0.25),
     ([1.0, 0.0, 0.0, 0.0, 0.0], 0.125)],
)  # fmt: skip
def test_normalized_auc_by_hand(curve, expected):
    assert metrics.normalized_auc(curve) == pytest.approx(expected)


def test_normalized_auc_rows_and_errors():
    np.testing.assert_allclose(
        metrics.normalized_auc([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]), [0.5, 0.25]
    )
    with pytest.raises(ValueError, match="two points"):
        metrics.normalized_auc([1.0])


# ----------------------------------------------------------------- deletion / insertion


def test_deletion_oracle_curve_and_auc_are_exact():
    model = region_mean_model()
    oracle = np.repeat(REGION[None], 3, 0)
    result = metrics.deletion(model, ones(), oracle, y=np.zeros(3, int), steps=64, activation=None)
    k = np.arange(65)
    expected_curve = np.maximum(0.0, 1 - k / AREA)  # one pixel per step, region first
    np.testing.assert_allclose(result.curves, np.broadcast_to(expected_curve, (3, 65)), atol=1e-6)
    # (sum_{k<=12} (1 - k/12) - 1/2) / 64 = 6 / 64
    np.testing.assert_allclose(result.auc, 6 / 64, atol=1e-6)
    np.testing.assert_allclose(result.fractions, k / 64)
    reversed_ = metrics.deletion(
        model, ones(), 1 - oracle, np.zeros(3, int), steps=64, activation=None
    )
    np.testing.assert_allclose(reversed_.auc, 58 / 64, atol=1e-6)  # the region goes last
    assert np.all(result.auc < reversed_.auc)


def test_perfect_map_beats_random_maps_by_the_expected_margin(rng):
    model = region_mean_model()
    n = 48
    oracle = metrics.deletion(
        model, ones(n), np.repeat(REGION[None], n, 0), np.zeros(n, int), steps=16, activation=None
    )
    random = metrics.deletion(model, ones(n), rng.random((n, H, W)), np.zeros(n, int), steps=16,
                              activation=None)  # fmt: skip
    # random order: E[score after k of 64 pixels] = 1 - k/64, so E[AUC] = 1/2;
    # the oracle empties the region in 3 steps of 4 pixels: AUC = (1 + 2/3 + 1/3 - 1/2) / 16
    oracle_auc = metrics.normalized_auc(np.maximum(0, 1 - np.arange(17) * 4 / AREA))
    np.testing.assert_allclose(oracle.auc, oracle_auc, atol=1e-6)
    assert random.auc.mean() == pytest.approx(0.5, abs=0.04)
    assert random.auc.mean() - oracle.auc.mean() == pytest.approx(0.5 - oracle_auc, abs=0.04)


def test_insertion_oracle_from_a_zero_substrate_is_exact():
    model = region_mean_model()
    oracle = np.repeat(REGION[None], 2, 0)
    result = metrics.insertion(
        model, ones(2), oracle, np.zeros(2, int), steps=64, substrate=0.0, activation=None
    )
    k = np.arange(65)
    np.testing.assert_allclose(result.curves[0], np.minimum(k, AREA) / AREA, atol=1e-6)
    np.testing.assert_allclose(result.auc, 58 / 64, atol=1e-6)


def np_gaussian_blur(x, size=11, sigma=5.0):
    """Per-channel correlation with a normalised Gaussian, zero padding ('same')."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    half = size // 2
    padded = np.pad(x, ((0, 0), (half, half), (half, half), (0, 0)))
    out = np.zeros(x.shape)
    for i in range(size):
        for j in range(size):
            out += kernel[i, j] * padded[:, i : i + x.shape[1], j : j + x.shape[2], :]
    return out


def test_blur_substrate_matches_a_numpy_gaussian(rng):
    x = rng.uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(metrics.gaussian_blur(x), np_gaussian_blur(x), atol=1e-5)


def np_softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_curves(forward, x, maps, units, steps, substrate, mode):
    """Curves built pixel by pixel from a Python sort (ties: raster order)."""
    n, h, w, _ = x.shape
    curves = np.zeros((n, steps + 1))
    for i in range(n):
        order = sorted(range(h * w), key=lambda p: (-maps[i].ravel()[p], p))
        for k in range(steps + 1):
            chosen = order[: (k * h * w) // steps]
            image = (x[i] if mode == "deletion" else substrate[i]).copy().reshape(h * w, -1)
            image[chosen] = (substrate[i] if mode == "deletion" else x[i]).reshape(h * w, -1)[
                chosen
            ]
            probs = np_softmax(forward(image.reshape(1, h, w, -1)))
            curves[i, k] = probs[0, units[i]]
    return curves


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curves_match_a_numpy_reference_on_a_cnn(mode, rng):
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    maps = rng.random((3, 6, 6))  # smaller than the images: resized (bilinear)
    maps_full = metrics._common.resize_maps(maps, (12, 12))
    forward = lambda v: models.np_gap_dense_forward(model, v)["scores"]
    function = metrics.deletion if mode == "deletion" else metrics.insertion
    result = function(model, x, maps, steps=9, batch_size=7)
    top = forward(x).argmax(-1)
    np.testing.assert_array_equal(result.units, top)  # y=None: the top-1 class
    substrate = np.zeros_like(x) if mode == "deletion" else np_gaussian_blur(x)
    expected = reference_curves(forward, x, maps_full, top, 9, substrate, mode)
    np.testing.assert_allclose(result.curves, expected, atol=1e-4)
    np.testing.assert_allclose(result.auc, metrics.normalized_auc(expected), atol=1e-4)


def test_steps_capped_batch_size_invariant_and_inputs_untouched(rng):
    model = models.gap_dense_cnn()
    x = models.inputs(2, h=4, w=4)
    model_small = keras.Sequential([keras.Input((4, 4, 3)), *model.layers[1:]])
    maps = rng.random((2, 4, 4))
    x_copy, maps_copy = x.copy(), maps.copy()
    a = metrics.deletion(model_small, x, maps, y=[1, 2], steps=500, batch_size=5)
    b = metrics.deletion(model_small, x, maps, y=np.array([1, 2]), steps=16, batch_size=64)
    assert a.curves.shape == (2, 17)  # 500 steps capped at 16 pixels
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-6)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(maps, maps_copy)


def test_substrate_options():
    model = region_mean_model()
    oracle = np.repeat(REGION[None], 2, 0)
    half = metrics.deletion(
        model, ones(2), oracle, [0, 0], steps=64, substrate=0.5, activation=None
    )
    assert half.curves[0, -1] == pytest.approx(0.5, abs=1e-6)
    fn = metrics.deletion(model, ones(2), oracle, [0, 0], steps=64, activation=None,
                          substrate=lambda images: images * 0.25)  # fmt: skip
    assert fn.curves[0, -1] == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="does not broadcast"):
        metrics.deletion(model, ones(2), oracle, [0, 0], substrate=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="'blur'"):
        metrics.insertion(model, ones(2), oracle, [0, 0], substrate="gray")


# ----------------------------------------------------------------- Average Drop / Increase


def test_average_drop_and_increase_closed_form():
    other = np.zeros((H, W))
    other[6:8, 0:2] = 1  # 4 pixels
    # logit_0 = mean(x on REGION) - mean(x on other), logit_1 = 0: p_0 = sigmoid(logit_0)
    model = linear_model([REGION / AREA - other / other.sum(), np.zeros((H, W))])
    maps = np.stack([REGION, other, REGION * 0.5 + other])  # the third: REGION at half weight
    result = metrics.confidence_change(model, ones(3), maps, y=[0, 0, 0])
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(result.original, 0.5, atol=1e-6)  # logit 1 - 1 = 0
    expected_o = sigmoid(np.array([1.0, -1.0, 0.5 - 1.0]))
    np.testing.assert_allclose(result.explained, expected_o, atol=1e-6)
    drops = np.maximum(0, 0.5 - expected_o) / 0.5
    assert result.average_drop == pytest.approx(100 * drops.mean(), abs=1e-4)
    assert result.increase_in_confidence == pytest.approx(100 / 3, abs=1e-4)
    np.testing.assert_array_equal(result.increase, [True, False, False])
    assert metrics.average_drop(model, ones(3), maps, [0, 0, 0]) == pytest.approx(
        result.average_drop
    )
    assert metrics.increase_in_confidence(model, ones(3), maps, [0, 0, 0]) == pytest.approx(100 / 3)


def test_confidence_change_matches_numpy_on_a_cnn(rng):
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    maps = rng.normal(size=(4, 12, 12, 1))
    result = metrics.confidence_change(model, x, maps, y=[0, 1, 2, 3], batch_size=3)
    forward = lambda v: np_softmax(models.np_gap_dense_forward(model, v)["scores"])
    s = maps[..., 0]
    s = (s - s.min(axis=(1, 2), keepdims=True)) / np.ptp(s, axis=(1, 2), keepdims=True)
    y_, o_ = (
        forward(x)[np.arange(4), [0, 1, 2, 3]],
        forward(x * s[..., None])[np.arange(4), [0, 1, 2, 3]],
    )
    np.testing.assert_allclose(result.original, y_, atol=1e-5)
    np.testing.assert_allclose(result.explained, o_, atol=1e-5)
    assert result.average_drop == pytest.approx(
        100 * np.mean(np.maximum(0, y_ - o_) / y_), abs=1e-3
    )


def test_works_with_gradcam_maps_end_to_end():
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    _, maps = ke.gradcam(model, x, [0, 1, 2, 3], verbose=0)
    result = metrics.deletion(model, x, maps, [0, 1, 2, 3], steps=12)
    assert result.curves.shape == (4, 13) and np.all(np.isfinite(result.auc))


# ----------------------------------------------------------------- errors


def test_clear_errors():
    model = region_mean_model()
    with pytest.raises(ValueError, match="one map per image"):
        metrics.deletion(model, ones(2), np.zeros((2, H, W, 3)), [0, 0])
    with pytest.raises(ValueError, match="2 maps for 3 images"):
        metrics.deletion(model, ones(3), np.zeros((2, H, W)), [0, 0, 0])
    with pytest.raises(ValueError, match="outside"):
        metrics.deletion(model, ones(2), np.zeros((2, H, W)), [0, 5])
    with pytest.raises(TypeError, match="integers"):
        metrics.deletion(model, ones(2), np.zeros((2, H, W)), [0.5, 1])
    with pytest.raises(ValueError, match=r"x\[None\]"):
        metrics.deletion(model, ones(1)[0], np.zeros((1, H, W)), [0])
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion(model, ones(2), np.zeros((2, H, W)), [0, 0], steps=0)
    with pytest.raises(TypeError, match="Keras 3 model"):
        metrics.deletion(lambda v: v, ones(2), np.zeros((2, H, W)), [0, 0])
    single = linear_model([REGION])
    with pytest.raises(ValueError, match="sigmoid"):
        metrics.deletion(single, ones(2), np.zeros((2, H, W)), [0, 0])
    assert metrics.deletion(single, ones(2), REGION[None].repeat(2, 0), [0, 0], steps=4,
                            activation="sigmoid").curves.shape == (2, 5)  # fmt: skip


def test_metric_calls_reuse_one_compiled_forward_per_model(rng):
    """Metrics compile the model's forward pass once per model, not once per call."""
    import gc
    import weakref

    from keras_explainable.engine import step as engine_step

    model = models.gap_dense_cnn()
    x = models.inputs(2)
    maps = rng.random((2, 12, 12))
    first = metrics.deletion(model, x, maps, steps=4, batch_size=8)
    step = engine_step.get_scores_step(model, "softmax")
    traces, calls = step.traces, step.calls
    assert calls > 0 and step.signatures()  # the metric ran through this cached step
    again = metrics.deletion(model, x, maps, steps=4, batch_size=8)
    metrics.average_drop(model, x, maps, batch_size=8)
    assert engine_step.get_scores_step(model, "softmax") is step  # the same program
    assert step.calls > calls
    # Compiled backends don't run the Python body again; torch runs it eagerly.
    if ke.backend.NAME == "torch":
        assert step.traces == step.calls
    else:
        assert step.traces == traces == 1
    np.testing.assert_allclose(again.curves, first.curves)
    # The cache holds the model weakly: it does not keep it alive.
    reference = weakref.ref(model)
    del model, step
    gc.collect()
    assert reference() is None
