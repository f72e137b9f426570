"""Model-parameter randomization sanity check, Spearman and SSIM."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import metrics
from tests import models

# ----------------------------------------------------------------- similarities


def test_spearman_by_hand():
    a = np.array([[1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    b = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    # ranks of a[0]: 1, 2.5, 2.5, 4 -> covariance 4.5, norms sqrt(4.5) and sqrt(5)
    result = metrics.spearman(a, b)
    np.testing.assert_allclose(result[:2], [4.5 / np.sqrt(4.5 * 5), -1.0])
    assert np.isnan(result[2])  # a constant map has no ranking


def test_spearman_is_pearson_of_ranks_without_ties(rng):
    a, b = rng.normal(size=(5, 7, 7)), rng.normal(size=(5, 7, 7))
    ranks = lambda m: m.reshape(5, -1).argsort(1).argsort(1).astype(float)
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(ranks(a), ranks(b))]
    np.testing.assert_allclose(metrics.spearman(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.spearman(a, np.exp(a)), 1.0)  # monotone: rank-invariant


def test_ssim_matches_keras_ops_image_ssim(rng):
    if not hasattr(keras.ops.image, "ssim"):
        pytest.skip("keras.ops.image.ssim needs a newer Keras")
    a = rng.random((3, 16, 20))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    expected = keras.ops.convert_to_numpy(
        keras.ops.image.ssim(a[..., None].astype("float32"), b[..., None].astype("float32"))
    )
    np.testing.assert_allclose(metrics.ssim(a, b), expected, atol=1e-4)
    np.testing.assert_allclose(metrics.ssim(a, a), 1.0)
    assert metrics.ssim(a[:, :5, :5], b[:, :5, :5]).shape == (3,)  # a 5x5 window


# ----------------------------------------------------------------- the sanity check


@pytest.mark.parametrize(
    "method", [ke.methods.gradient.gradients, ke.methods.cams.gradcam], ids=["gradients", "gradcam"]
)
def test_gradients_and_gradcam_decorrelate_under_cascading_randomization(method):
    model = models.gap_dense_cnn()
    x = models.inputs(8)
    before = [w.copy() for w in model.get_weights()]
    result = metrics.model_randomization(method, model, x)
    table = result.table()
    assert [row["layer"] for row in table] == ["none", "logits", "features", "conv1"]
    # stage 0 is the intact clone: the same maps
    np.testing.assert_allclose(result.spearman[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(result.ssim[0], 1.0, atol=1e-6)
    last = table[-1]
    assert abs(last["spearman"]) < 0.4 and abs(last["spearman_abs"]) < 0.4 and last["ssim"] < 0.4
    assert table[0]["spearman"] - last["spearman"] > 0.6
    # the user's model is untouched
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert "spearman" in str(result)


def test_independent_mode_restores_the_other_layers():
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    y = np.array([0, 1, 2, 3])
    cascading = metrics.model_randomization(
        ke.methods.cams.gradcam, model, x, y, seed=3, return_maps=True
    )
    independent = metrics.model_randomization(
        ke.methods.cams.gradcam, model, x, y, mode="independent", seed=3, return_maps=True
    )
    # the first stage randomizes the same layer with the same draws in both modes
    np.testing.assert_allclose(independent.maps[1], cascading.maps[1], atol=1e-5)
    # afterwards independent randomizes one layer only: the logits stay trained
    assert not np.allclose(independent.maps[2], cascading.maps[2], atol=1e-3)
    assert independent.maps.shape == (4, 4, 12, 12)


def test_layers_selection_exposed_models_and_initializer():
    model = models.nested_functional()
    exposed = ke.inspection.expose(model)
    layers = metrics.randomization_layers(exposed)
    assert [path for path, _ in layers] == ["logits", "base/features", "base/conv1"]
    result = metrics.model_randomization(
        ke.methods.cams.gradcam, exposed, models.inputs(3), [0, 1, 2],
        layers=["base/features"], initializer="zeros",
    )  # fmt: skip
    assert result.layers == ["none", "base/features"]
    assert np.all(np.isnan(result.spearman[1]))  # zero features: constant (all-zero) maps
    with pytest.raises(ValueError, match="Unknown layers"):
        metrics.model_randomization(ke.methods.cams.gradcam, model, models.inputs(2), layers="nope")


def test_subclassed_models_that_cannot_be_cloned_get_a_clear_error():
    model = models.subclassed()
    with pytest.raises(TypeError, match="could not be cloned"):
        metrics.model_randomization(ke.methods.gradient.gradients, model, models.inputs(2))
