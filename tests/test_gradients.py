"""Gradients (saliency) against central finite differences and hand-written backprop."""

import numpy as np
import pytest
from keras import ops

import keras_explainable as ke
from tests import models


def _identity(g):
    return g


def _finite_difference_gradients(forward, x, units, eps=1e-4):
    """d score_u / d x by central differences of a float64 numpy forward pass."""
    x = x.astype(np.float64)
    grads = np.zeros(x.shape + (units.shape[1],))
    flat_size = int(np.prod(x.shape[1:]))
    for b in range(len(x)):
        steps = np.eye(flat_size).reshape((flat_size,) + x.shape[1:]) * eps
        plus = forward(x[b][None] + steps)
        minus = forward(x[b][None] - steps)
        for u, unit in enumerate(units[b]):
            diff = (plus[:, unit] - minus[:, unit]) / (2 * eps)
            grads[b, ..., u] = diff.reshape(x.shape[1:])
    return grads


def _relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize(
    "units", [np.array([[1], [4], [0]]), np.array([[1, 3, 0], [4, 2, 2], [0, 1, 4]])]
)
def test_gradients_equal_central_finite_differences(units):
    model = models.flatten_dense_cnn()
    x = models.inputs(3)
    fd = _finite_difference_gradients(
        lambda batch: models.np_flatten_dense_forward(model, batch)[1], x, units
    )
    scores, maps = ke.methods.gradient.gradients(model, x, units, gradient_filter=_identity)
    expected = fd.mean(axis=-2)  # channel mean of the raw gradient
    assert maps.shape == expected.shape
    assert _relative_error(ops.convert_to_numpy(maps), expected) < 1e-3
    _, expected_scores = models.np_flatten_dense_forward(model, x)
    np.testing.assert_allclose(
        ops.convert_to_numpy(scores), np.take_along_axis(expected_scores, units, 1), atol=1e-4
    )
    # the default filter is |.| before the channel mean
    _, absolute = ke.methods.gradient.gradients(model, x, units)
    assert _relative_error(ops.convert_to_numpy(absolute), np.abs(fd).mean(axis=-2)) < 1e-3


def test_gradients_shortcut_normalizes_like_the_seed():
    model = models.flatten_dense_cnn()
    x = models.inputs(5)
    y = np.array([0, 1, 2, 3, 4])
    fd = _finite_difference_gradients(
        lambda batch: models.np_flatten_dense_forward(model, batch)[1], x, y[:, None]
    )
    expected = np.abs(fd).mean(axis=-2)
    lowest = expected.min(axis=(1, 2), keepdims=True)
    expected = (expected - lowest) / (expected.max(axis=(1, 2), keepdims=True) - lowest)
    scores, maps = ke.gradients(model, x, y, batch_size=2, verbose=0)
    assert isinstance(maps, np.ndarray) and maps.shape == (5, 12, 12, 1)
    np.testing.assert_allclose(maps, expected, atol=2e-3)
    assert maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize(
    "builder",
    [
        models.gap_dense_cnn,
        models.nested_sequential,
        models.nested_functional,
        models.sequential_without_input,
        models.subclassed,
    ],
)
def test_gradients_match_hand_written_backprop_on_every_model_kind(builder):
    model = builder()
    x = models.inputs(4, seed=3)
    units = np.array([[0, 2], [1, 1], [4, 3], [2, 0]])
    _, expected = models.np_gap_dense_backprop(model, x, units)
    _, maps = ke.methods.gradient.gradients(model, x, units, gradient_filter=_identity)
    np.testing.assert_allclose(
        ops.convert_to_numpy(maps), expected["x"].mean(axis=-2), rtol=1e-3, atol=1e-5
    )
    _, via_explain = ke.explain(
        ke.methods.gradient.gradients,
        model,
        x,
        units,
        verbose=0,
        gradient_filter=_identity,
        resizing=False,
    )
    np.testing.assert_allclose(via_explain, expected["x"].mean(axis=-2), rtol=1e-3, atol=1e-5)


def test_gradients_of_an_exposed_model_explain_its_logits():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    y = np.array([3, 1])
    plain = ke.gradients(model, x, y, verbose=0)
    exposed = ke.gradients(ke.inspection.expose(model), x, y, verbose=0)
    np.testing.assert_allclose(plain[0], exposed[0], atol=1e-5)
    np.testing.assert_allclose(plain[1], exposed[1], atol=1e-5)
