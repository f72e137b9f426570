"""Grad-CAM and CAM against independent numpy computations, on every kind of model."""

import numpy as np
import pytest
from keras import ops

import keras_explainable as ke
from tests import models, reference

UNIT_CASES = [
    np.array([[2], [0], [4], [1]]),
    np.array([[2, 0, 1], [0, 0, 3], [4, 1, 2], [1, 3, 3]]),
]


def _np(t):
    return ops.convert_to_numpy(t)


@pytest.mark.parametrize("units", UNIT_CASES)
def test_gradcam_equals_numpy_on_a_flatten_head(units):
    """features (6x6x5, tanh) -> Flatten -> Dense: d score_u / dA = W reshaped."""
    model = models.flatten_dense_cnn()
    x = models.inputs(4)
    act, scores = models.np_flatten_dense_forward(model, x)
    kernel = models.weights_of(model.get_layer("logits"))[0].reshape(act.shape[1:] + (-1,))
    grads = np.stack(
        [kernel[..., units[:, u]].transpose(3, 0, 1, 2) for u in range(units.shape[1])], -1
    )
    expected = reference.positive_normalize(models.np_gradcam(act, grads))
    expected = reference.bilinear_resize(expected, (12, 12))

    exposed = ke.inspection.expose(model, arguments="features")
    raw_scores, raw = ke.methods.cams.gradcam(exposed, x, units)
    np.testing.assert_allclose(_np(raw_scores), np.take_along_axis(scores, units, 1), atol=1e-4)
    np.testing.assert_allclose(_np(raw), models.np_gradcam(act, grads), rtol=1e-4, atol=1e-5)

    s, maps = ke.gradcam(exposed, x, units, batch_size=3, verbose=0)
    assert maps.shape == (4, 12, 12, units.shape[1])
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    np.testing.assert_allclose(s, np.take_along_axis(scores, units, 1), atol=1e-4)


@pytest.mark.parametrize("units", UNIT_CASES)
def test_gradcam_is_cam_up_to_a_positive_factor_with_gap_dense(units):
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    act, kernel, _ = models.np_gap_dense_parts(model, x)
    expected_cam = np.einsum("bhwk,kbu->bhwu", act, kernel[:, units])
    _, cam = ke.methods.cams.cam(model, x, units)
    _, gradcam = ke.methods.cams.gradcam(model, x, units)
    np.testing.assert_allclose(_np(cam), expected_cam, rtol=1e-4, atol=1e-5)
    h, w = act.shape[1:3]
    np.testing.assert_allclose(_np(gradcam) * h * w, _np(cam), rtol=1e-4, atol=1e-5)
    # the shortcuts post-process both to the same maps
    np.testing.assert_allclose(
        ke.gradcam(model, x, units, verbose=0)[1], ke.cam(model, x, units, verbose=0)[1], atol=1e-5
    )


def _default_or(argument):
    return None if argument == "default" else argument


CASES = [
    # (builder, expose argument, which activation the reference uses)
    (models.gap_dense_cnn, "default", "act"),
    (models.gap_dense_cnn, "features", "act"),
    (models.gap_dense_cnn, "conv1", "a1"),
    (models.nested_sequential, "default", "act"),
    (models.nested_sequential, ("base", "conv1"), "a1"),
    (models.nested_functional, "default", "act"),
    (models.nested_functional, ("base", "features"), "act"),
    (models.nested_functional, ("base", "conv1"), "a1"),
    (models.sequential_without_input, "default", "act"),
    (models.sequential_without_input, "conv1", "a1"),
    (models.subclassed, "default", "act"),
    (models.subclassed, "conv1", "a1"),
]


@pytest.mark.parametrize("builder,argument,activation", CASES)
def test_gradcam_on_every_model_kind_matches_hand_computed_reference(builder, argument, activation):
    model = builder()
    x = models.inputs(4, seed=5)
    units = np.array([[1, 3], [0, 0], [4, 2], [2, 1]])
    forward, grads = models.np_gap_dense_backprop(model, x, units)
    expected = models.np_gradcam(forward[activation], grads[activation])

    exposed = ke.inspection.expose(model, arguments=_default_or(argument))
    _, raw = ke.methods.cams.gradcam(exposed, x, units)
    np.testing.assert_allclose(_np(raw), expected, rtol=1e-4, atol=1e-5)
    _, maps = ke.gradcam(exposed, x, units, batch_size=3, verbose=0)
    np.testing.assert_allclose(maps, reference.positive_normalize(expected), atol=1e-4)
    if argument == "default":  # a model that is not exposed gets the same default
        _, unexposed = ke.gradcam(model, x, units, batch_size=3, verbose=0)
        np.testing.assert_allclose(unexposed, maps, atol=1e-6)


def test_gradcam_at_a_layer_crossed_by_a_skip_connection():
    """residual_cnn: 'inner' feeds 'branch', whose output is added to 'stem' (the skip)."""
    model = models.residual_cnn()
    x = models.inputs(3, seed=2)
    units = np.array([[0, 4], [3, 3], [1, 2]])
    w = {
        name: models.weights_of(model.get_layer(name))
        for name in ("stem", "inner", "branch", "logits")
    }
    stem = np.maximum(models.np_conv_same(x.astype(np.float64), *w["stem"]), 0)
    inner = np.tanh(models.np_conv_same(stem, *w["inner"]))
    pre = stem + models.np_conv_same(inner, *w["branch"])
    out = np.maximum(pre, 0)
    h, wd = out.shape[1:3]
    grads = []
    for u in range(units.shape[1]):
        g_out = np.broadcast_to(
            w["logits"][0][:, units[:, u]].T[:, None, None, :] / (h * wd), out.shape
        )
        grads.append(models.np_conv_same_input_gradient(g_out * (pre > 0), w["branch"][0]))
    expected = models.np_gradcam(inner, np.stack(grads, -1))

    exposed = ke.inspection.expose(model, arguments="inner")
    _, raw = ke.methods.cams.gradcam(exposed, x, units)
    np.testing.assert_allclose(_np(raw), expected, rtol=1e-4, atol=1e-5)
    _, maps = ke.gradcam(exposed, x, units, verbose=0)
    np.testing.assert_allclose(maps, reference.positive_normalize(expected), atol=1e-4)


def test_gradcam_accepts_one_unit_per_sample_and_all_units():
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    y = np.array([4, 0, 2])
    s1, m1 = ke.gradcam(model, x, y, verbose=0)
    s2, m2 = ke.gradcam(model, x, y[:, None], verbose=0)
    assert m1.shape == (3, 12, 12, 1)  # not (3, 3): the original gathered across samples
    np.testing.assert_allclose(m1, m2)
    s_all, m_all = ke.gradcam(model, x, None, verbose=0)
    assert m_all.shape == (3, 12, 12, models.CLASSES) and s_all.shape == (3, models.CLASSES)
    np.testing.assert_allclose(np.take_along_axis(m_all, y[:, None, None, None], -1), m1, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(s_all, y[:, None], 1), s1, atol=1e-5)


def test_methods_accept_numpy_inputs_and_indices():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    scores, maps = ke.methods.cams.gradcam(model, x, np.array([[1], [2]]))
    assert tuple(maps.shape) == (2, 12, 12, 1)
    uint8 = (np.clip(x, 0, 1) * 255).astype("uint8")
    _, maps = ke.methods.cams.gradcam(model, uint8, [[1], [2]])
    assert np.isfinite(_np(maps)).all()


def _native_intermediate_gradient(model, layer, x, units):
    import keras

    two_outputs = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            activation, logits = two_outputs(tf.constant(x))
            score = tf.reduce_sum(tf.gather(logits, units[:, 0], batch_dims=1))
        return tape.gradient(score, activation).numpy()
    if keras.backend.backend() == "torch":
        import torch

        with torch.enable_grad():
            activation, logits = two_outputs(ops.convert_to_tensor(x))
            score = logits[torch.arange(len(x)), torch.as_tensor(units[:, 0])].sum()
            (gradient,) = torch.autograd.grad(score, activation)
        return gradient.cpu().numpy()
    return None  # JAX cannot differentiate w.r.t. an intermediate value (why we tap)


@pytest.fixture
def float64():
    """Build models in float64 (JAX needs x64 switched on) so finite differences are exact."""
    import keras

    previous = keras.config.floatx()
    jax_x64 = None
    if keras.backend.backend() == "jax":
        import jax

        jax_x64 = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(previous)
    if jax_x64 is not None:
        import jax

        jax.config.update("jax_enable_x64", jax_x64)


@pytest.mark.slow
def test_resnet50v2_gradcam_inside_a_residual_block_matches_finite_differences(float64):
    """conv4_block3_1_relu of ResNet50V2 is crossed by the block's skip connection."""
    import keras

    from keras_explainable import backend
    from keras_explainable._taps import Tap, tapped

    model = keras.applications.ResNet50V2(
        weights=None, classifier_activation=None, input_shape=(64, 64, 3)
    )
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3))
    units = np.array([[7], [123]])
    layer = model.get_layer("conv4_block3_1_relu")
    exposed = ke.inspection.expose(model, arguments=layer)
    _, raw = ke.methods.cams.gradcam(exposed, x, units)
    _, maps = ke.gradcam(exposed, x, units, verbose=0)
    assert tuple(raw.shape) == (2, 4, 4, 1) and maps.shape == (2, 64, 64, 1)

    # Independent check of d score / d activation: a directional central difference,
    # perturbing the layer's output by eps * v inside the running model.
    tap = Tap(layer)
    result = backend.value_and_gradients(
        model,
        x,
        lambda outputs, _: ke.inspection.gather_units(outputs, units),
        taps=[tap],
        differentiate=(0,),
    )
    activation = _np(result.tap_values[0])
    gradient = _np(result.tap_gradients[0])[..., 0]
    direction = np.random.default_rng(1).normal(size=activation.shape)

    def score_with(eps):
        shift = ops.convert_to_tensor(eps * direction)
        with tapped([tap], lambda _, a: a + shift):
            logits = _np(backend.forward(model, x)[0])
        return np.take_along_axis(logits, units, 1)[:, 0]

    # A deep random network is badly conditioned: eps = 1e-5 (float64) is the sweet spot
    # between truncation and round-off; it agrees to ~1%.
    eps = 1e-5
    finite_difference = (score_with(eps) - score_with(-eps)) / (2 * eps)
    directional = (gradient * direction).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(directional, finite_difference, rtol=3e-2)
    # Where the framework can differentiate w.r.t. a recorded tensor itself, we must agree
    # with it exactly (a two-output model is connected here: same inputs, same graph).
    native = _native_intermediate_gradient(model, layer, x, units)
    if native is not None:
        np.testing.assert_allclose(gradient, native, rtol=1e-6, atol=1e-12)
    # and Grad-CAM is the activation weighted by the gradient's spatial mean
    weights = gradient.mean(axis=(1, 2))
    np.testing.assert_allclose(
        _np(raw)[..., 0], np.einsum("bhwk,bk->bhw", activation, weights), rtol=1e-6, atol=1e-9
    )


def test_cam_with_a_logits_layer_without_kernel_says_what_to_pass():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    pooling = ke.inspection.get_global_pooling_layer(model)
    with pytest.raises(ValueError, match=f"'{pooling.name}'.*has none.*logits_layer="):
        ke.methods.cams.cam(model, x, np.array([[0], [1]]), logits_layer=pooling.name)
