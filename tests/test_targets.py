"""``ke.targets`` and ``target=``: every built-in target against a closed form.

The models are tiny and built once per module (each new model or shape costs an
XLA compile on JAX). The references are numpy: a linear two-head model (its
input gradients are its kernel columns), a fully convolutional segmenter (Seg-
Grad-CAM has a closed form on it) and a two-head CNN with its single-head twin
(``output("b")`` must give the twin's maps).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable.engine.step import get_step
from keras_explainable.methods import cams, gradient, meta, perturbation

from .conftest import BACKEND
from .models import np_conv_same, set_seeded_weights, weights_of

N, H, W, C = 5, 8, 8, 3


def identity(g):
    return g


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).uniform(-1, 1, (N, H, W, C)).astype("float32")


@pytest.fixture(scope="module")
def heads():
    """A two-head CNN (list and dict outputs) and its single-head twin, sharing weights."""
    inputs = keras.Input((H, W, C))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    g = layers.GlobalAveragePooling2D(name="gap")(h)
    a = layers.Dense(3, name="a")(g)
    b = layers.Dense(2, name="b")(g)
    model = set_seeded_weights(keras.Model(inputs, [a, b], name="two_heads"))
    twin = keras.Model(inputs, b, name="twin")
    as_dict = keras.Model(inputs, {"cls": a, "aux": b}, name="dict_heads")
    return model, twin, as_dict


@pytest.fixture(scope="module")
def exposures(heads):
    """Both heads' models exposed at 'features' (one object each: their steps are reused)."""
    model, twin, _ = heads
    return (
        ke.inspection.expose(model, arguments="features"),
        ke.inspection.expose(twin, arguments="features"),
    )


@pytest.fixture(scope="module")
def linear():
    """``[a, b] = flatten(x) @ W + c``: the gradient of unit u is ``W[:, u]``."""
    inputs = keras.Input((4, 4, 2))
    f = layers.Flatten()(inputs)
    a = layers.Dense(3, name="a")(f)
    b = layers.Dense(2, name="b")(f)
    return set_seeded_weights(keras.Model(inputs, [a, b], name="linear"), seed=1)


@pytest.fixture(scope="module")
def segmenter():
    """Fully convolutional: ``feat = relu(conv3x3(x))``, ``logits = conv1x1(feat)``."""
    inputs = keras.Input((H, W, C))
    feat = layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    logits = layers.Conv2D(3, 1, name="logits")(feat)
    return set_seeded_weights(keras.Model(inputs, logits, name="segmenter"), seed=2)


def kernel_map(model, name, units):
    """The linear model's input gradient of ``units`` of output ``name``, channel mean."""
    kernel = weights_of(model.get_layer(name))[0]  # (32, classes)
    return kernel[:, np.atleast_1d(units)].reshape(4, 4, 2, -1).mean(axis=2)  # (4, 4, U)


def np_segmenter(model, x):
    act = np.maximum(np_conv_same(x.astype(np.float64), *weights_of(model.get_layer("feat"))), 0)
    kernel, bias = weights_of(model.get_layer("logits"))
    return act, kernel[0, 0], act @ kernel[0, 0] + bias


def seg_gradcam_reference(model, x, units, mask=None):
    """Seg-Grad-CAM in closed form: ``w_k = mean_p M_p W[k, u]``, ``map = sum_k w_k A^k``."""
    act, kernel, logits = np_segmenter(model, x)
    scores, maps = [], []
    for b, unit in enumerate(units):
        region = (logits[b].argmax(-1) == unit) if mask is None else mask[b]
        region = region.astype(np.float64)
        scores.append((logits[b, ..., unit] * region).sum())
        weights = kernel[:, unit] * region.mean()
        maps.append(act[b] @ weights)
    return np.array(scores)[:, None], np.array(maps)[..., None]


# --------------------------------------------------------------------------- closed forms


def test_built_in_targets_equal_their_closed_forms(linear):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 2)).astype("float32")
    y = np.array([[0, 2], [1, 1], [2, 0]])
    run = lambda target, units=y: [  # noqa: E731
        keras.ops.convert_to_numpy(t)
        for t in gradient.gradients(linear, x, units, gradient_filter=identity, target=target)
    ]
    a, b = (np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in linear(x))
    expected_a = np.stack([kernel_map(linear, "a", row) for row in y])

    scores, maps = run(ke.targets.classes())
    np.testing.assert_allclose(scores, np.take_along_axis(a, y, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps, expected_a, rtol=1e-5, atol=1e-6)

    for key in ("b", 1, -1):
        scores, maps = run(ke.targets.output(key), y[:, :1] % 2)
        np.testing.assert_allclose(scores, np.take_along_axis(b, y[:, :1] % 2, 1), atol=1e-5)
        expected = np.stack([kernel_map(linear, "b", row) for row in y[:, :1] % 2])
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)

    # regression: sign=-1 is the negated gradient, on the first output and on "b"
    up = run(ke.targets.regression(2), None)
    down = run(ke.targets.regression(2, sign=-1), None)
    np.testing.assert_allclose(up[0], a[:, 2:3], atol=1e-5)
    np.testing.assert_allclose(up[1], np.broadcast_to(kernel_map(linear, "a", 2), (3, 4, 4, 1)))
    np.testing.assert_array_equal(down[0], -up[0])
    np.testing.assert_array_equal(down[1], -up[1])
    scores, maps = run(ke.targets.output("b", then=ke.targets.regression(1, sign=-1)), None)
    np.testing.assert_allclose(scores, -b[:, 1:2], atol=1e-5)
    np.testing.assert_allclose(maps[0], -kernel_map(linear, "b", 1), rtol=1e-5)
    # regression(index=None): y picks the columns
    scores, _ = run(ke.targets.regression(None), y)
    np.testing.assert_allclose(scores, np.take_along_axis(a, y, 1), atol=1e-5)

    # a custom function of both outputs
    def custom(outputs, units):
        del units
        return 2.0 * outputs[1][:, :1] + outputs[0][:, 2:3]

    scores, maps = run(custom, None)
    np.testing.assert_allclose(scores, 2 * b[:, :1] + a[:, 2:3], atol=1e-5)
    expected = 2 * kernel_map(linear, "b", 0) + kernel_map(linear, "a", 2)
    np.testing.assert_allclose(maps[1], expected, rtol=1e-5, atol=1e-6)


def test_segmentation_target_is_seg_grad_cam_in_closed_form(segmenter, x):
    exposed = ke.inspection.expose(segmenter, arguments="feat", outputs="logits")
    y = np.array([0, 1, 2, 1, 0])
    mask = np.zeros((N, H, W), bool)
    mask[:, 2:6, 1:5] = True
    mask[1] = False
    mask[1, 0, :] = True  # another region per sample
    for region in (mask, None):
        target = ke.targets.segmentation(region)
        scores, maps = cams.gradcam(exposed, x, y, target=target)
        expected_scores, expected_maps = seg_gradcam_reference(segmenter, x, y, region)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), expected_scores, atol=1e-4)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(maps), expected_maps, atol=1e-5)

    # through explain: the mask is sliced and padded with x (batches of 2: 2 + 2 + 1)
    target = ke.targets.segmentation(mask)
    scores, maps = ke.explain(
        cams.gradcam, exposed, x, y, batch_size=2, verbose=0, target=target, resizing=False
    )
    expected_scores, expected_maps = seg_gradcam_reference(segmenter, x, y, mask)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    np.testing.assert_allclose(maps, expected_maps, atol=1e-5)


def test_per_sample_rows_follow_copied_samples(segmenter, x):
    """SmoothGrad tiles the batch and occlusion repeats each sample: the mask rows follow."""
    y = np.array([2, 0, 1, 1, 2])
    mask = np.random.default_rng(5).uniform(size=(N, H, W)) > 0.5
    target = ke.targets.segmentation(mask)
    plain = gradient.gradients(segmenter, x, y, target=target)
    smooth = meta.smooth(gradient.gradients, repetitions=2, noise=0.0)
    _, smoothed = ke.explain(smooth, segmenter, x, y, batch_size=3, verbose=0, target=target)
    np.testing.assert_allclose(smoothed, keras.ops.convert_to_numpy(plain[1]), atol=1e-6)

    # occlusion repeats every sample (sample-major): one sample per batch gives the reference
    target = ke.targets.segmentation(mask[:3])
    params = dict(window=4, stride=4, chunk_size=None, verbose=0, target=target)
    _, together = ke.explain(perturbation.occlusion, segmenter, x[:3], y[:3], **params)
    _, alone = ke.explain(perturbation.occlusion, segmenter, x[:3], y[:3], batch_size=1, **params)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.abs(together).max() > 0


# --------------------------------------------------------------------------- multi-output


def test_output_of_a_two_output_model_equals_its_single_output_twin(heads, exposures, x):
    model, twin, as_dict = heads
    y = np.array([1, 0, 1, 1, 0])
    cases = [
        (ke.gradcam, model, "b"),
        (ke.gradcam, as_dict, "aux"),  # a dict output, by key
        (ke.gradients, model, 1),  # by position
    ]
    for shortcut, explained, key in cases:
        expected_scores, expected = shortcut(twin, x, y, verbose=0)
        scores, maps = shortcut(explained, x, y, verbose=0, target=ke.targets.output(key))
        np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
        np.testing.assert_allclose(maps, expected, atol=1e-6)
    # an exposed model: the layer comes from the exposure, the scores from the real "b"
    exposed, exposed_twin = exposures
    scores, maps = ke.gradcam(exposed, x, y, verbose=0, target=ke.targets.output("b"))
    twin_scores, twin_maps = ke.gradcam(exposed_twin, x, y, verbose=0)
    np.testing.assert_allclose(scores, twin_scores, atol=1e-6)
    np.testing.assert_allclose(maps, twin_maps, atol=1e-6)


def test_a_multi_output_model_without_target_explains_its_first_output(heads, x):
    # [class logits, a vector head] is a multi-output model, not the seed's
    # [logits, *activations] convention: Grad-CAM finds its own layer (not "no spatial axes")
    model, _, _ = heads
    inputs = model.inputs[0]
    first = keras.Model(inputs, model.outputs[0], name="first_head")
    legacy = keras.Model(inputs, [model.outputs[0], model.get_layer("features").output])
    assert not ke.inspection.exposes_activations(model)
    assert ke.inspection.exposes_activations(legacy)
    y = np.array([1, 0, 2, 1, 0])
    expected_scores, expected = ke.gradcam(first, x, y, verbose=0)
    for explained in (model, legacy):  # the legacy convention explains the same layer
        scores, maps = ke.gradcam(explained, x, y, verbose=0)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
        np.testing.assert_allclose(maps, expected, atol=1e-6)


def test_classes_is_the_default_bit_for_bit(heads, exposures, x):
    _, twin, _ = heads
    y = np.array([1, 0, 1, 1, 0])
    for explained in (twin, exposures[0]):
        default = ke.gradcam(explained, x, y, verbose=0)
        chosen = ke.gradcam(explained, x, y, verbose=0, target=ke.targets.classes())
        for a, b in zip(default, chosen):
            np.testing.assert_array_equal(a, b)


def test_metrics_score_the_chosen_output(heads, x):
    model, twin, _ = heads
    maps = np.random.default_rng(1).uniform(size=(N, H, W))
    y = np.array([1, 0, 1, 1, 0])
    expected = ke.metrics.deletion(twin, x, maps, y, steps=4)
    result = ke.metrics.deletion(model, x, maps, y, steps=4, target=ke.targets.output("b"))
    np.testing.assert_allclose(result.curves, expected.curves, atol=1e-6)
    # a regression value is scored raw: the softmax (the default) is not applied to it
    raw = ke.metrics.confidence_change(
        model, x, maps, activation=None, target=ke.targets.output("b", ke.targets.regression(1))
    )
    default = ke.metrics.confidence_change(
        model, x, maps, target=ke.targets.output("b", ke.targets.regression(1))
    )
    b = keras.ops.convert_to_numpy(model(x)[1])
    np.testing.assert_allclose(raw.original, b[:, 1], atol=1e-5)
    np.testing.assert_allclose(default.original, raw.original)


def test_explain_prediction_takes_a_target(heads, x):
    model, twin, _ = heads
    explained = ke.explain_prediction(model, x[0], target=ke.targets.output("b"))
    expected = ke.explain_prediction(twin, x[0])
    assert explained.targets[0].target == expected.targets[0].target
    np.testing.assert_allclose(explained.targets[0].heatmap, expected.targets[0].heatmap, atol=1e-6)
    np.testing.assert_allclose(explained.targets[0].score, expected.targets[0].score, rtol=1e-5)
    value = ke.explain_prediction(model, x[0], method="gradients", target=ke.targets.regression())
    assert np.isnan(value.targets[0].probability)


# --------------------------------------------------------------------------- the compiled step


def test_a_reused_target_traces_once_and_a_new_one_gets_its_own_step(heads, x):
    model, _, _ = heads
    calls = []

    def second_output(outputs, units):
        calls.append(1)
        return keras.ops.take_along_axis(outputs[1], units, axis=-1)

    y = np.array([1, 0, 1, 1, 0])
    first = ke.gradients(model, x, y, verbose=0, target=second_output)
    again = ke.gradients(model, x, y, verbose=0, target=second_output)
    np.testing.assert_array_equal(first[1], again[1])
    params = dict(spatial_axis=(-3, -2), postprocessing=ke.filters.normalize, resizing=False)
    step = get_step(model, gradient.gradients, target=second_output, **params)
    assert step.calls == 2
    assert step.traces == (2 if BACKEND == "torch" else 1)  # torch runs eagerly
    other = ke.targets.output("b")
    ke.gradients(model, x, y, verbose=0, target=other)
    assert get_step(model, gradient.gradients, target=other, **params) is not step
    assert get_step(model, gradient.gradients, **params) is not step  # the default's own


# --------------------------------------------------------------------------- bad input


def test_bad_targets_raise_clear_errors(heads, segmenter, x):
    model, _, as_dict = heads
    with pytest.raises(ValueError, match=r"no output named 'bb'.*Did you mean 'b'.*\['a', 'b'\]"):
        ke.gradcam(model, x, verbose=0, target=ke.targets.output("bb"))
    with pytest.raises(ValueError, match=r"no output named 'axu'.*Did you mean 'aux'"):
        ke.gradients(as_dict, x, verbose=0, target=ke.targets.output("axu"))
    with pytest.raises(ValueError, match=r"output\(2\).*2 output"):
        ke.gradients(model, x, verbose=0, target=ke.targets.output(2))
    with pytest.raises(ValueError, match=r"dict of outputs.*ke.targets.output\(name\)"):
        ke.gradients(as_dict, x, verbose=0)
    with pytest.raises(ValueError, match=r"outside the 2 units"):
        ke.gradients(model, x, np.full(N, 2), verbose=0, target=ke.targets.output("b"))
    with pytest.raises(ValueError, match=r"expected|must return \(batch, 1\)"):
        gradient.gradients(model, x, np.zeros(N, int), target=lambda o, u: o[1])
    with pytest.raises(ValueError, match=r"returns \(batch, U\) scores"):
        gradient.gradients(model, x, target=lambda o, u: o[1][:, 0])
    with pytest.raises(TypeError, match=r"int32 scores.*float"):
        gradient.gradients(model, x, target=lambda o, u: keras.ops.cast(o[1], "int32"))
    with pytest.raises(TypeError, match=r"ke.targets.Target .* or a function"):
        ke.gradients(model, x, verbose=0, target="b")
    with pytest.raises(TypeError, match=r"instance"):
        ke.gradients(model, x, verbose=0, target=ke.targets.Target)
    with pytest.raises(ValueError, match=r"sign=.*\+1 or -1"):
        ke.targets.regression(sign=2)
    with pytest.raises(ValueError, match=r"regression\(index=5\).*2 value"):
        gradient.gradients(model, x, target=ke.targets.output("b", ke.targets.regression(5)))
    with pytest.raises(TypeError, match=r"'plain' takes no `target=`"):

        def plain(model, inputs, indices=None, spatial_axis=(-3, -2)):
            return gradient.gradients(model, inputs, indices, spatial_axis=spatial_axis)

        ke.explain(plain, model, x, verbose=0, target=ke.targets.output("b"))
    with pytest.raises(ValueError, match=r"CAM weighs.*ke.gradcam"):
        ke.cam(model, x, verbose=0, target=ke.targets.output("b"))

    mask = np.ones((N, H, W), bool)
    with pytest.raises(ValueError, match=r"pass y"):
        ke.gradcam(segmenter, x, verbose=0, target=ke.targets.segmentation(mask))
    with pytest.raises(ValueError, match=r"mask has shape \(5, 4, 8\).*\(samples, 8, 8\)"):
        ke.gradcam(segmenter, x, np.zeros(N, int), verbose=0,
                   target=ke.targets.segmentation(mask[:, :4]))  # fmt: skip
    with pytest.raises(ValueError, match=r"\(3, 8, 8\).*5 samples"):
        ke.gradcam(segmenter, x, np.zeros(N, int), verbose=0,
                   target=ke.targets.segmentation(mask[:3]))  # fmt: skip
    with pytest.raises(ValueError, match=r"\(samples, h, w\)"):
        ke.targets.segmentation(np.ones(8, bool))
    with pytest.raises(ValueError, match=r"segmentation\(\) explains a \(batch, h, w, classes\)"):
        ke.gradients(model, x, np.zeros(N, int), verbose=0, target=ke.targets.segmentation())
    with pytest.raises(ValueError, match=r"metrics score every unit.*segmentation"):
        ke.metrics.deletion(segmenter, x, mask, np.zeros(N, int), target=ke.targets.segmentation())
    with pytest.raises(ValueError, match=r"tta.*cannot follow"):
        augmented = meta.tta(gradient.gradients, scales=(2.0,))
        augmented(segmenter, x, np.zeros(N, int), target=ke.targets.segmentation(mask))


def test_nothing_the_user_passed_is_changed(heads, segmenter, x):
    model, _, _ = heads
    mask = np.zeros((N, H, W), bool)
    mask[:, :3] = True
    kept_mask, kept_x = mask.copy(), x.copy()
    target = ke.targets.segmentation(mask)
    state = dict(vars(target))
    weights = [w.copy() for w in segmenter.get_weights()]
    ke.gradcam(segmenter, x, np.ones(N, int), verbose=0, batch_size=2, target=target)
    np.testing.assert_array_equal(mask, kept_mask)
    np.testing.assert_array_equal(x, kept_x)
    assert vars(target).keys() == state.keys()
    assert all(vars(target)[key] is value for key, value in state.items())
    for before, after in zip(weights, segmenter.get_weights()):
        np.testing.assert_array_equal(before, after)
    output = ke.targets.output("b")
    ke.gradients(model, x, verbose=0, target=output)
    assert output._names is None  # bind returned a copy
