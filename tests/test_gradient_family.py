"""Gradient x Input, Integrated Gradients and FullGrad against numpy references.

The reference model (``_fullgrad_cnn``) has a tanh convolution (fused
activation), a batch norm with a non-default epsilon, average pooling, a ReLU
convolution, global pooling and a Dense classifier; its forward pass and
backprop are written out in float64 numpy below, and the backprop itself is
checked against central finite differences.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke

try:
    from tests import models
    from tests.reference import bilinear_resize, linear_weights
except ImportError:  # tests/ on sys.path instead of the repository root
    import models
    from reference import bilinear_resize, linear_weights

H = W = 12
C = 3
CLASSES = 5
UNITS_1 = np.array([[1], [4], [0]])
UNITS_3 = np.array([[1, 3, 0], [4, 2, 2], [0, 1, 4]])


def _fullgrad_cnn():
    x = keras.Input((H, W, C))
    h = layers.Conv2D(4, 3, padding="same", activation="tanh", name="c1")(x)
    h = layers.BatchNormalization(epsilon=0.05, name="bn")(h)
    h = layers.AveragePooling2D(2, name="pool")(h)
    h = layers.Conv2D(5, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(CLASSES, name="logits")(h)
    return models.set_seeded_weights(keras.Model(x, out, name="fullgrad_cnn"), seed=3)


def _relu_bn_cnn():
    """Piecewise linear (ReLU, max pooling, BN): FullGrad's decomposition is exact."""
    x = keras.Input((H, W, C))
    h = layers.Conv2D(4, 3, padding="same", name="c1")(x)
    h = layers.BatchNormalization(epsilon=0.01, name="bn")(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dense(7, activation="relu", name="hidden")(h)
    out = layers.Dense(CLASSES, name="logits")(h)
    return models.set_seeded_weights(keras.Model(x, out, name="relu_bn_cnn"), seed=5)


# ------------------------------------------------------------------ numpy reference


def _weights(model, name):
    return [np.asarray(ops.convert_to_numpy(w), np.float64) for w in model.get_layer(name).weights]


def _conv_adjoint(grad, kernel):
    """d/d input of a 'same' stride-1 convolution, given d/d output."""
    return models.np_conv_same(grad, kernel[::-1, ::-1].transpose(0, 1, 3, 2), 0.0)


def _np_forward(model, x):
    k1, b1 = _weights(model, "c1")
    gamma, beta, mean, variance = _weights(model, "bn")
    k2, b2 = _weights(model, "c2")
    kernel, bias = _weights(model, "logits")
    f = {"k1": k1, "b1": b1, "k2": k2, "b2": b2, "kernel": kernel}
    f["scale"] = gamma / np.sqrt(variance + 0.05)
    f["shift"] = beta - gamma * mean / np.sqrt(variance + 0.05)
    f["z1"] = models.np_conv_same(x.astype(np.float64), k1, b1)
    f["a1"] = np.tanh(f["z1"])
    f["n"] = f["a1"] * f["scale"] + f["shift"]
    b, h, w, c = f["n"].shape
    f["p"] = f["n"].reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    f["z2"] = models.np_conv_same(f["p"], k2, b2)
    f["a2"] = np.maximum(f["z2"], 0)
    f["scores"] = f["a2"].mean(axis=(1, 2)) @ kernel + bias
    return f


def _np_backprop(model, x, units):
    """Gradients of score_u w.r.t. x, z1 (pre-tanh), bn output, z2 (pre-relu): (..., U)."""
    f = _np_forward(model, x)
    grads = {"x": [], "z1": [], "n": [], "z2": []}
    _, h2, w2, _ = f["z2"].shape
    for u in range(units.shape[1]):
        d_a2 = np.broadcast_to(
            f["kernel"][:, units[:, u]].T[:, None, None, :] / (h2 * w2), f["a2"].shape
        )
        d_z2 = d_a2 * (f["z2"] > 0)
        d_p = _conv_adjoint(d_z2, f["k2"])
        d_n = np.repeat(np.repeat(d_p, 2, axis=1), 2, axis=2) / 4
        d_z1 = d_n * f["scale"] * (1 - f["a1"] ** 2)
        d_x = _conv_adjoint(d_z1, f["k1"])
        for key, value in zip(("x", "z1", "n", "z2"), (d_x, d_z1, d_n, d_z2)):
            grads[key].append(value)
    return f, {key: np.stack(value, axis=-1) for key, value in grads.items()}


def _finite_differences(model, x, units, eps=1e-4):
    x = x.astype(np.float64)
    flat = int(np.prod(x.shape[1:]))
    steps = np.eye(flat).reshape((flat,) + x.shape[1:]) * eps
    grads = np.zeros(x.shape + (units.shape[1],))
    for b in range(len(x)):
        plus = _np_forward(model, x[b][None] + steps)["scores"]
        minus = _np_forward(model, x[b][None] - steps)["scores"]
        for u, unit in enumerate(units[b]):
            grads[b, ..., u] = ((plus[:, unit] - minus[:, unit]) / (2 * eps)).reshape(x.shape[1:])
    return grads


def _relative_error(actual, expected):
    return np.linalg.norm(np.asarray(actual) - expected) / np.linalg.norm(expected)


def _absolute_normalize(term, axes):
    term = np.abs(term)
    low = term.min(axis=axes, keepdims=True)
    high = term.max(axis=axes, keepdims=True)
    return (term - low) / np.maximum(high - low, 1e-12)


def _np_fullgrad(model, x, units):
    f, g = _np_backprop(model, x, units)
    axes = (1, 2, 3)
    x64 = x.astype(np.float64)[..., None]
    maps = _absolute_normalize(g["x"] * x64, axes).sum(axis=3)
    maps += _absolute_normalize(g["z1"] * f["b1"][:, None], axes).sum(axis=3)
    maps += _absolute_normalize(g["n"] * f["shift"][:, None], axes).sum(axis=3)
    small = _absolute_normalize(g["z2"] * f["b2"][:, None], axes).sum(axis=3)
    maps += bilinear_resize(small, (H, W))
    return f, maps


def _np_integrated_gradients(model, x, units, baseline, steps, rule):
    alphas, weights = ke.methods.gradient.path_points(steps, rule)
    x = x.astype(np.float64)
    total = 0.0
    for alpha, weight in zip(alphas, weights):
        _, g = _np_backprop(model, baseline + alpha * (x - baseline), units)
        total = total + weight * g["x"]
    return ((x - baseline)[..., None] * total).sum(axis=3)


def _scores_at(f, units):
    return np.take_along_axis(f["scores"], units, axis=1)


def _np(value):
    return ops.convert_to_numpy(value)


# ------------------------------------------------------------------ the reference itself


def test_numpy_backprop_equals_central_finite_differences():
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    _, g = _np_backprop(model, x, UNITS_3)
    assert _relative_error(g["x"], _finite_differences(model, x, UNITS_3)) < 1e-6


@pytest.mark.parametrize("units", [UNITS_1, UNITS_3], ids=["U1", "U3"])
def test_gradients_equal_central_finite_differences(units):
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    expected = _finite_differences(model, x, units).mean(axis=3)
    _, maps = ke.methods.gradient.gradients(model, x, units, gradient_filter=lambda g: g)
    assert _relative_error(_np(maps), expected) < 1e-3


# ------------------------------------------------------------------ gradient x input


@pytest.mark.parametrize("units", [UNITS_1, UNITS_3], ids=["U1", "U3"])
def test_gradients_x_inputs_equal_numpy(units):
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    expected = (_finite_differences(model, x, units) * x.astype(np.float64)[..., None]).sum(3)
    f = _np_forward(model, x)
    scores, maps = ke.methods.gradient.gradients_x_inputs(model, x, units)
    assert _np(maps).shape == (3, H, W, units.shape[1])
    assert _relative_error(_np(maps), expected) < 1e-3
    np.testing.assert_allclose(_np(scores), _scores_at(f, units), rtol=1e-4, atol=1e-5)

    y = units[:, 0] if units.shape[1] == 1 else units
    scores, maps = ke.explain(
        ke.methods.gradient.gradients_x_inputs, model, x, y, verbose=0,
        postprocessing=None, resizing=False, batch_size=2,
    )  # fmt: skip
    assert _relative_error(maps, expected) < 1e-3
    np.testing.assert_allclose(scores, _scores_at(f, units), rtol=1e-4, atol=1e-5)


def test_gradients_x_inputs_of_a_linear_model_add_up_to_the_score():
    x_in = keras.Input((H, W, C))
    out = layers.Dense(CLASSES, use_bias=False)(layers.Flatten()(x_in))
    model = models.set_seeded_weights(keras.Model(x_in, out))
    x = models.inputs(2)
    scores, maps = ke.methods.gradient.gradients_x_inputs(model, x, np.array([[0, 3], [4, 1]]))
    np.testing.assert_allclose(_np(maps).sum(axis=(1, 2)), _np(scores), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ integrated gradients


@pytest.mark.parametrize("units", [UNITS_1, UNITS_3], ids=["U1", "U3"])
@pytest.mark.parametrize(
    "rule, chunk_size, baseline",
    [("midpoint", None, None), ("trapezoid", 3, 0.25), ("left", 4, "sample"), ("right", 1, None)],
)
def test_integrated_gradients_equal_numpy(units, rule, chunk_size, baseline):
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    if isinstance(baseline, str):
        baseline = models.inputs(1, seed=9)[0] * 0.5
    np_baseline = 0.0 if baseline is None else np.asarray(baseline, np.float64)
    expected = _np_integrated_gradients(model, x, units, np_baseline, 8, rule)
    f = _np_forward(model, x)
    scores, maps = ke.methods.gradient.integrated_gradients(
        model, x, units, baseline=baseline, n_steps=8, rule=rule, chunk_size=chunk_size
    )
    assert _np(maps).shape == (3, H, W, units.shape[1])
    assert _relative_error(_np(maps), expected) < 1e-4
    np.testing.assert_allclose(_np(scores), _scores_at(f, units), rtol=1e-4, atol=1e-5)

    y = units[:, 0] if units.shape[1] == 1 else units
    scores, maps = ke.explain(
        ke.methods.gradient.integrated_gradients, model, x, y, verbose=0, postprocessing=None,
        resizing=False, batch_size=2, baseline=baseline, n_steps=8, rule=rule,
        chunk_size=chunk_size,
    )  # fmt: skip
    assert _relative_error(maps, expected) < 1e-4
    np.testing.assert_allclose(scores, _scores_at(f, units), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("baseline, rule", [(None, "midpoint"), (-0.5, "trapezoid")])
def test_integrated_gradients_completeness(baseline, rule):
    # The ReLU's kinks slow the convergence: 64 steps leave 2.6% on one unit, 256 < 0.6%.
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=4)
    scores, maps = ke.methods.gradient.integrated_gradients(
        model, x, UNITS_3, baseline=baseline, n_steps=256, rule=rule, chunk_size=64
    )
    at_baseline = _np_forward(model, np.full_like(x, 0.0 if baseline is None else baseline))
    expected = _np(scores) - _scores_at(at_baseline, UNITS_3)
    np.testing.assert_allclose(_np(maps).sum(axis=(1, 2)), expected, rtol=0.01)


def test_integrated_gradients_rejects_bad_parameters():
    model = _fullgrad_cnn()
    x = models.inputs(1)
    with pytest.raises(ValueError, match="steps"):
        ke.methods.gradient.integrated_gradients(model, x, n_steps=0)
    with pytest.raises(ValueError, match="rule"):
        ke.methods.gradient.integrated_gradients(model, x, rule="simpson")
    with pytest.raises(ValueError, match="baseline"):
        ke.methods.gradient.integrated_gradients(model, x, baseline=np.zeros((5, 5, 3)))
    with pytest.raises(ValueError, match="chunk_size"):
        ke.methods.gradient.integrated_gradients(model, x, chunk_size=0)


def test_path_points_integrate_polynomials():
    for rule in ("midpoint", "trapezoid"):
        alphas, weights = ke.methods.gradient.path_points(10, rule)
        assert np.isclose(weights.sum(), 1.0)
        assert np.isclose((weights * alphas).sum(), 0.5)  # exact for linear integrands
    alphas, _ = ke.methods.gradient.path_points(4, "right")
    np.testing.assert_allclose(alphas, [0.25, 0.5, 0.75, 1.0])


# ------------------------------------------------------------------ full gradients


@pytest.mark.parametrize("units", [UNITS_1, UNITS_3], ids=["U1", "U3"])
def test_full_gradients_equal_numpy(units):
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    f, expected = _np_fullgrad(model, x, units)
    scores, maps = ke.methods.gradient.full_gradients(model, x, units)
    assert _np(maps).shape == (3, H, W, units.shape[1])
    np.testing.assert_allclose(_np(maps), expected, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(_np(scores), _scores_at(f, units), rtol=1e-4, atol=1e-5)

    y = units[:, 0] if units.shape[1] == 1 else units
    scores, maps = ke.explain(
        ke.methods.gradient.full_gradients, model, x, y, verbose=0,
        postprocessing=None, resizing=False, batch_size=2,
    )  # fmt: skip
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(scores, _scores_at(f, units), rtol=1e-4, atol=1e-5)


def test_full_gradients_give_one_map_per_unit():
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    _, together = ke.methods.gradient.full_gradients(model, x, UNITS_3)
    together = _np(together)
    for u in range(3):
        _, alone = ke.methods.gradient.full_gradients(model, x, UNITS_3[:, u : u + 1])
        np.testing.assert_allclose(together[..., u], _np(alone)[..., 0], rtol=1e-4, atol=1e-5)
    assert np.abs(together[..., 0] - together[..., 1]).max() > 0.1
    assert np.abs(together[..., 1] - together[..., 2]).max() > 0.1


def test_full_gradients_of_the_seed_exposed_model_with_cached_biases():
    model = _fullgrad_cnn()
    x = models.inputs(3, seed=2)
    _, expected = _np_fullgrad(model, x, UNITS_3)
    logits = ke.inspection.get_logits_layer(model)
    inters, biases = ke.inspection.layers_with_biases(model, exclude=[logits])
    assert [layer.name for layer in inters] == ["c1", "bn", "c2"]
    exposed = ke.inspection.expose(model, inters, logits)
    for given in (biases, None):
        scores, maps = ke.methods.gradient.full_gradients(exposed, x, UNITS_3, biases=given)
        np.testing.assert_allclose(_np(maps), expected, rtol=1e-4, atol=2e-4)
    scores, maps = ke.explain(
        ke.methods.gradient.full_gradients, exposed, x, UNITS_3, verbose=0, biases=biases,
        postprocessing=None, resizing=False,
    )  # fmt: skip
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("builder", [_relu_bn_cnn, models.gap_dense_cnn])
def test_full_gradient_decomposition_is_complete_for_piecewise_linear_models(builder):
    model = builder()
    x = models.inputs(3, seed=6)
    d = ke.methods.gradient.full_gradient_decomposition(model, x, UNITS_3)
    total = _np(d.input_term).sum(axis=(1, 2, 3))
    for term in d.bias_terms:
        term = _np(term)
        total = total + term.reshape(len(term), -1, term.shape[-1]).sum(axis=1)
    np.testing.assert_allclose(total, _np(d.scores), rtol=1e-4, atol=1e-4)
    names = [layer.name for layer in d.layers]
    assert "logits" in names and len(names) == len(d.bias_terms)


def test_full_gradients_include_layer_norm_beta_and_dense_layers_outside_the_map():
    x_in = keras.Input((H, W, C))
    h = layers.Conv2D(4, 3, padding="same", name="c1")(x_in)
    h = layers.LayerNormalization(name="ln", scale=False)(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(CLASSES, name="logits")(h)
    model = models.set_seeded_weights(keras.Model(x_in, out), seed=8)
    x = models.inputs(2, seed=3)
    units = np.array([[2], [0]])
    d = ke.methods.gradient.full_gradient_decomposition(model, x, units)
    assert [layer.name for layer in d.layers] == ["c1", "ln", "logits"]
    # the classifier's bias-gradient is its own bias (d score_u / d z_u = 1)
    bias = _weights(model, "logits")[1]
    classifier_term = _np(d.bias_terms[2])[:, :, 0]  # (batch, classes) for the one unit
    np.testing.assert_allclose(classifier_term[[0, 1], units[:, 0]], bias[units[:, 0]], rtol=1e-6)
    # FullGrad's map: the input term and the two spatial layers only
    term_axes = (1, 2, 3)
    expected = sum(
        _absolute_normalize(_np(t).astype(np.float64), term_axes).sum(axis=3)
        for t in (d.input_term, d.bias_terms[0], d.bias_terms[1])
    )
    _, maps = ke.methods.gradient.full_gradients(model, x, units)
    np.testing.assert_allclose(_np(maps), expected, rtol=1e-5, atol=1e-5)


def test_full_gradients_leave_the_model_as_it_was():
    model = _fullgrad_cnn()
    x = models.inputs(2)
    before = _np(model(x))
    activation = model.get_layer("c1").activation
    ke.methods.gradient.full_gradients(model, x, np.array([[1], [2]]))
    assert model.get_layer("c1").activation is activation
    assert "call" not in model.get_layer("c1").__dict__
    np.testing.assert_array_equal(_np(model(x)), before)


def test_full_gradients_reject_mismatched_biases():
    model = _fullgrad_cnn()
    x = models.inputs(1)
    with pytest.raises(ValueError, match="biases"):
        ke.methods.gradient.full_gradients(model, x, np.array([[0]]), biases=[np.zeros(4)])
    exposed = ke.inspection.expose(model, ["c1", "bn"], "logits")
    with pytest.raises(ValueError, match="does not match"):
        ke.methods.gradient.full_gradients(
            exposed, x, np.array([[0]]), biases=[np.zeros(7), np.zeros(4)]
        )


@pytest.mark.parametrize(
    "builder", [models.nested_functional, models.nested_sequential, models.subclassed]
)
def test_full_gradients_of_nested_and_subclassed_models_equal_the_flat_model(builder):
    x = models.inputs(2, seed=5)
    units = np.array([[1, 4], [2, 0]])
    _, expected = ke.methods.gradient.full_gradients(models.gap_dense_cnn(), x, units)
    _, maps = ke.methods.gradient.full_gradients(builder(), x, units)
    np.testing.assert_allclose(_np(maps), _np(expected), rtol=1e-5, atol=1e-6)


def test_full_gradients_of_a_1d_signal():
    x_in = keras.Input((None, 3))
    h = layers.Conv1D(4, 3, padding="same", activation="relu", name="c1")(x_in)
    h = layers.MaxPooling1D(2, name="pool")(h)
    h = layers.Conv1D(5, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling1D(name="gap")(h)
    out = layers.Dense(4, name="logits")(h)
    model = models.set_seeded_weights(keras.Model(x_in, out), seed=2)
    x = np.random.default_rng(0).normal(size=(2, 16, 3)).astype("float32")
    units = np.array([[1, 2], [0, 3]])
    d = ke.methods.gradient.full_gradient_decomposition(model, x, units)
    total = _np(d.input_term).sum(axis=(1, 2))
    for term in d.bias_terms:
        term = _np(term)
        total = total + term.reshape(len(term), -1, term.shape[-1]).sum(axis=1)
    np.testing.assert_allclose(total, _np(d.scores), rtol=1e-4, atol=1e-4)  # completeness

    axes = (1, 2)
    expected = _absolute_normalize(_np(d.input_term).astype(np.float64), axes).sum(axis=2)
    expected += _absolute_normalize(_np(d.bias_terms[0]).astype(np.float64), axes).sum(axis=2)
    small = _absolute_normalize(_np(d.bias_terms[1]).astype(np.float64), axes).sum(axis=2)
    expected += np.einsum("Tt,btu->bTu", linear_weights(8, 16), small)
    scores, maps = ke.explain(
        ke.methods.gradient.full_gradients, model, x, units, verbose=0, spatial_axis=(-2,),
        postprocessing=None, resizing=False,
    )  # fmt: skip
    assert maps.shape == (2, 16, 2)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
