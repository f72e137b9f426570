"""Inspection (finding layers, expose, biases, units), filters, and the no-mutation promise."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke
from tests import models


def _np(t):
    return ops.convert_to_numpy(t)


# ------------------------------------------------------------------------ filters


def test_filters_compute_what_their_names_say():
    x = np.array([[[[-2.0], [1.0]], [[3.0], [-1.0]]]])  # (1, 2, 2, 1)
    np.testing.assert_allclose(_np(ke.filters.positive(x)), np.maximum(x, 0))
    np.testing.assert_allclose(_np(ke.filters.negative(x)), np.maximum(-x, 0))
    np.testing.assert_allclose(_np(ke.filters.absolute(x)), np.abs(x))
    np.testing.assert_allclose(_np(ke.filters.normalize(x)), (x + 2) / 5)
    np.testing.assert_allclose(_np(ke.filters.positive_normalize(x)), np.maximum(x, 0) / 3)
    np.testing.assert_allclose(_np(ke.filters.negative_normalize(x)), np.maximum(-x, 0) / 2)
    np.testing.assert_allclose(_np(ke.filters.absolute_normalize(x)), (np.abs(x) - 1) / 2)


def test_normalize_is_per_sample_and_unit_and_safe_on_constant_maps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 2)).astype("float32")
    x[1, ..., 0] = 7.0  # a constant map
    out = _np(ke.filters.normalize(x))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1, ..., 0], 0.0)
    for b, u in [(0, 0), (0, 1), (2, 1)]:
        assert out[b, ..., u].min() == 0.0 and abs(out[b, ..., u].max() - 1.0) < 1e-6
    # 1-D maps: (batch, time, units) with axis=(-2,)
    signal = rng.normal(size=(2, 9, 3))
    out = _np(ke.filters.normalize(signal, axis=(-2,)))
    np.testing.assert_allclose(out.min(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(out.max(axis=1), 1, atol=1e-6)


# ------------------------------------------------------------------------ units


def test_gather_units_one_row_per_sample():
    logits = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]], "float32")
    np.testing.assert_allclose(
        _np(ke.inspection.gather_units(logits, np.array([1, 2]))), [[0.9], [0.8]]
    )
    np.testing.assert_allclose(
        _np(ke.inspection.gather_units(logits, np.array([[2, 0], [1, 1]]))),
        [[0.3, 0.1], [0.2, 0.2]],
    )
    np.testing.assert_allclose(
        _np(ke.inspection.gather_units(logits, np.array([2, 0]), batch_dims=0)),
        [[0.3, 0.1], [0.8, 0.5]],
    )
    assert ke.inspection.gather_units(logits, None) is not None


# ------------------------------------------------------------------------ finding layers


def test_finding_layers_in_nested_models():
    model = models.nested_sequential()
    assert ke.inspection.get_logits_layer(model).name == "logits"
    assert ke.inspection.get_global_pooling_layer(model).name == "gap"
    assert ke.inspection.get_nested_layer(model, ("base", "features")).name == "features"
    assert ke.inspection.get_nested_layer(model, "features").name == "features"
    conv = ke.inspection.find_layer_with(model, klass=layers.Conv2D)
    assert conv.name == "features"
    first = ke.inspection.find_layer_with(model, properties=("kernel",), search_reversed=False)
    assert first.name == "conv1"
    with pytest.raises(ValueError, match="Did you mean 'features'"):
        ke.inspection.get_nested_layer(model, "featurse")
    with pytest.raises(ValueError, match="at least one"):
        ke.inspection.find_layer_with(model)


# ------------------------------------------------------------------------ expose


def _reference_activations(model, x):
    forward = models.np_gap_dense_forward(model, x)
    return forward


@pytest.mark.parametrize(
    "descriptor,expected",
    [
        (None, "act"),
        ("features", "act"),
        (1, "a1"),  # model.layers[1] of a functional model: 'conv1' (layers[0] is the Input)
        ({"name": "gap", "link": "input"}, "act"),
        ({"name": "features", "link": "output", "node": 0}, "act"),
        ("conv1", "a1"),
    ],
)
def test_expose_descriptors_expose_the_right_signal(descriptor, expected):
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    exposed = ke.inspection.expose(model, arguments=descriptor)
    logits, activations = exposed(x)
    forward = _reference_activations(model, x)
    np.testing.assert_allclose(_np(activations), forward[expected], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(logits), forward["scores"], rtol=1e-4, atol=1e-5)


def test_expose_accepts_a_layer_a_path_and_several_arguments():
    model = models.nested_functional()
    x = models.inputs(2)
    forward = _reference_activations(model, x)
    inner = ke.inspection.get_nested_layer(model, ("base", "conv1"))
    exposed = ke.inspection.expose(model, arguments=[inner, ("base", "features")], outputs="logits")
    logits, a1, act = exposed(x)
    np.testing.assert_allclose(_np(a1), forward["a1"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(act), forward["act"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(logits), forward["scores"], rtol=1e-4, atol=1e-5)
    # an exposed model's predict works like any Keras model's
    predicted = exposed.predict(x, verbose=0)
    np.testing.assert_allclose(predicted[0], forward["scores"], rtol=1e-4, atol=1e-5)


def test_expose_picks_the_nth_call_of_a_shared_layer():
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    x_in = keras.Input((models.H, models.W, models.C))
    first = shared(x_in)
    second = shared(layers.Activation("tanh")(first))
    out = layers.Dense(2, name="logits")(layers.GlobalAveragePooling2D()(second))
    model = keras.Model(x_in, out)
    x = models.inputs(2)
    _, a0 = ke.inspection.expose(model, {"name": "shared", "node": 0})(x)
    _, a1 = ke.inspection.expose(model, {"name": "shared", "node": 1})(x)
    kernel, bias = models.weights_of(shared)
    expected0 = models.np_conv_same(x.astype(np.float64), kernel, bias)
    expected1 = models.np_conv_same(np.tanh(expected0), kernel, bias)
    np.testing.assert_allclose(_np(a0), expected0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(a1), expected1, rtol=1e-4, atol=1e-5)
    for last in ("last", -1):
        _, a_last = ke.inspection.expose(model, {"name": "shared", "node": last})(x)
        np.testing.assert_allclose(_np(a_last), expected1, rtol=1e-4, atol=1e-5)


def test_expose_asks_for_a_built_model():
    model = keras.Sequential(
        [layers.Conv2D(2, 3), layers.GlobalAveragePooling2D(), layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="not built yet.*build"):
        ke.inspection.expose(model)


def test_expose_explains_bad_descriptors():
    model = models.gap_dense_cnn()
    with pytest.raises(ValueError, match="out of range"):
        ke.inspection.expose(model, arguments=42)
    with pytest.raises(TypeError, match="descriptor"):
        ke.inspection.expose(model, arguments=3.5)
    with pytest.raises(ValueError, match="'link'"):
        ke.inspection.expose(model, arguments={"name": "gap", "link": "sideways"})
    with pytest.raises(ValueError, match="not part of"):
        ke.inspection.expose(model, arguments=layers.Dense(3))


def test_a_model_without_a_spatial_layer_gets_a_helpful_error():
    x_in = keras.Input((8,))
    h = layers.Dense(4, name="hidden")(x_in)
    model = keras.Model(x_in, layers.Dense(3, name="out")(h))
    with pytest.raises(ValueError, match=r"no layer with a spatial output.*hidden.*expose\(model"):
        ke.inspection.expose(model)


# ------------------------------------------------------------------------ biases


def test_layers_with_biases_fold_normalization_with_the_layers_own_epsilon():
    x_in = keras.Input((6, 6, 2))
    h = layers.Conv2D(3, 3, padding="same", name="conv")(x_in)
    h = layers.BatchNormalization(epsilon=0.01, name="bn")(h)
    h = layers.Conv2D(3, 1, use_bias=False, name="nobias")(h)
    h = layers.BatchNormalization(center=False, scale=False, epsilon=0.1, name="bn_plain")(h)
    h = layers.LayerNormalization(name="ln")(h)
    h = layers.LayerNormalization(center=False, name="ln_nocenter")(h)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(2, name="logits")(h)
    model = models.set_seeded_weights(keras.Model(x_in, out))
    found, biases = ke.inspection.layers_with_biases(model, exclude=["logits"])
    assert [layer.name for layer in found] == ["conv", "bn", "bn_plain", "ln"]

    def w(name, attr):
        return _np(getattr(model.get_layer(name), attr)).astype(np.float64)

    expected_bn = w("bn", "beta") - w("bn", "gamma") * w("bn", "moving_mean") / np.sqrt(
        w("bn", "moving_variance") + 0.01
    )
    expected_plain = -w("bn_plain", "moving_mean") / np.sqrt(w("bn_plain", "moving_variance") + 0.1)
    np.testing.assert_allclose(_np(biases[0]), w("conv", "bias"), rtol=1e-6)
    np.testing.assert_allclose(_np(biases[1]), expected_bn, rtol=1e-5)
    np.testing.assert_allclose(_np(biases[2]), expected_plain, rtol=1e-5)
    np.testing.assert_allclose(_np(biases[3]), w("ln", "beta"), rtol=1e-6)
    only_layers = ke.inspection.layers_with_biases(model, return_biases=False)
    assert [layer.name for layer in only_layers][-1] == "logits"


# ------------------------------------------------------------------------ no mutation


def _snapshot(model):
    state = {
        "model_keys": sorted(model.__dict__),
        "weights": [id(w) for w in model.weights],
        "values": [np.array(_np(w)) for w in model.weights],
        "layers": {
            id(layer): sorted(layer.__dict__) for _, layer in ke.inspection.flatten_layers(model)
        },
        # no new graph nodes either (private, but the cheapest witness of a symbolic call)
        "nodes": [len(layer._inbound_nodes) for _, layer in ke.inspection.flatten_layers(model)],
    }
    return state


def _assert_same(before, after):
    assert before["model_keys"] == after["model_keys"]
    assert before["weights"] == after["weights"]
    for b, a in zip(before["values"], after["values"], strict=True):
        np.testing.assert_array_equal(b, a)
    assert before["layers"] == after["layers"]
    assert before["nodes"] == after["nodes"]


@pytest.mark.parametrize(
    "builder", [models.nested_sequential, models.residual_cnn, models.subclassed]
)
def test_explaining_never_mutates_the_model_or_the_inputs(builder):
    model = builder()
    x = models.inputs(3)
    y = np.array([0, 1, 2])
    x_copy, y_copy = x.copy(), y.copy()
    before = _snapshot(model)
    ke.gradcam(model, x, y, verbose=0)
    ke.gradients(model, x, y, verbose=0)
    exposed = ke.inspection.expose(model)
    ke.gradcam(exposed, x, y, verbose=0)
    ke.methods.cams.gradcam(exposed, x, y)
    _assert_same(before, _snapshot(model))
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)


def test_layers_are_restored_when_the_forward_pass_raises():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    before = _snapshot(model)

    def failing_method(model, inputs, indices=None, **_):
        def explode(outputs, values):
            raise RuntimeError("boom")

        from keras_explainable import backend

        taps = ke.inspection.activation_taps(model)
        return backend.value_and_gradients(model, inputs, explode, taps=taps, differentiate=(0,))

    with pytest.raises(RuntimeError, match="boom"):
        failing_method(model, x)
    with pytest.raises(RuntimeError, match="boom"):
        ke.explain(failing_method, model, x, verbose=0)
    _assert_same(before, _snapshot(model))
    assert all("call" not in layer.__dict__ for _, layer in ke.inspection.flatten_layers(model))


# ------------------------------------------------------------------------ compile once


def test_ten_samples_in_batches_of_four_trace_the_step_once():
    from keras_explainable import backend
    from keras_explainable.engine.explaining import get_step

    model = models.gap_dense_cnn()
    x = models.inputs(10)
    y = np.arange(10) % models.CLASSES
    scores, maps = ke.gradcam(model, x, y, batch_size=4, verbose=0, force=True)
    assert scores.shape == (10, 1) and maps.shape == (10, 12, 12, 1)
    step = get_step(
        model,
        ke.methods.cams.gradcam,
        spatial_axis=(-3, -2),
        postprocessing=ke.filters.positive_normalize,
        resizing=True,
    )
    assert step.calls == 3  # 4 + 4 + 2 (padded to 4)
    if backend.is_compiled_per_shape():
        assert step.traces == 1
    else:  # PyTorch runs eagerly: the step's body runs once per batch, never retraced
        assert step.traces == step.calls
    # the same call again reuses the step: no new trace
    again = ke.gradcam(model, x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(again[1], maps)
    if backend.is_compiled_per_shape():
        assert step.traces == 1 and step.calls == 6
    # each padded row matches the unpadded computation
    single = ke.gradcam(model, x[8:], y[8:], batch_size=2, verbose=0)
    np.testing.assert_allclose(single[1], maps[8:], atol=1e-6)


def test_a_flatten_straight_on_the_input_is_not_an_activation_to_explain():
    x_in = keras.Input((6, 6, 1))
    model = keras.Model(x_in, layers.Dense(3, name="out")(layers.Flatten(name="flat")(x_in)))
    with pytest.raises(ValueError, match=r"no layer with a spatial output.*flat"):
        ke.inspection.expose(model)
