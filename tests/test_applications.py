"""The default exposure of every ``keras.applications`` architecture, and the classifier heads.

``ke.inspection.expose(model)`` (what every CAM method uses by default) must
find, for each architecture, a ``(batch, units)`` logits tensor and a spatial
activation. MobileNet and MobileNetV3 classify with a 1x1 ``Conv2D`` whose
``(batch, 1, 1, units)`` output a ``Reshape`` / ``Flatten`` turns into the
scores; the default logits follow the classifier through such layers.

Cost. The structural check builds each architecture without initializing its
weights (``keras.StatelessScope(initialize_variables=False)``: JAX would compile
one random initializer per weight shape, half a minute per model) and reads the
symbolic shapes of the exposed tensors, which is what an eager forward would
report. Which layers the exposure picks is read from the Keras graph, the same
on every backend: all 40 architectures are swept on TensorFlow and PyTorch, the
smallest member of each family on JAX (its suite is CI's longest). Grad-CAM /
gradients run with real (seeded) weights on three architectures, one per kind
of classifier head, on every backend.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke

from .conftest import BACKEND
from .models import build_seeded

CLASSES = 3
ARCHITECTURES = sorted(
    name
    for name in dir(keras.applications)
    if name[:1].isupper() and callable(getattr(keras.applications, name))
)
# The smallest member of each family: its head is the family's head (the other
# members differ in depth and width only). Every member is swept on TensorFlow and
# PyTorch; on JAX, whose suite is the longest (CI's critical lane, see .ci/run),
# the representatives only.
REPRESENTATIVES = (
    "ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionResNetV2",
    "InceptionV3", "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
    "NASNetMobile", "ResNet50", "ResNet50V2", "VGG16", "Xception",
)  # fmt: skip
SWEPT = [n for n in ARCHITECTURES if n in REPRESENTATIVES] if BACKEND == "jax" else ARCHITECTURES
POOLING = (
    layers.GlobalAveragePooling2D,
    layers.GlobalMaxPooling2D,
    layers.Flatten,
)


def _size(name: str) -> int:
    """The smallest input Keras accepts that still leaves a 2x2 (or larger) feature map."""
    if name.startswith("Inception"):
        return 107  # 75 px (the smallest allowed) leaves 1x1
    if name == "Xception":
        return 71
    if name.startswith(("ConvNeXt", "DenseNet", "NASNet", "VGG")) or name == "MobileNet":
        return 64
    return 33  # ResNet*, EfficientNet*, MobileNetV2/V3


def _application(name, size, **kwargs):
    builder = getattr(keras.applications, name)
    arguments = dict(weights=None, classes=CLASSES, input_shape=(size, size, 3))
    arguments.update(kwargs)
    try:
        return builder(**arguments)
    except ValueError as error:
        if "not available with the torch backend" in str(error):
            pytest.skip(f"keras.applications.{name}: {error}")
        raise


def _unbuilt_weights(name, size, **kwargs):
    """The architecture with its variables left uninitialized (graph and shapes only)."""
    with keras.StatelessScope(initialize_variables=False):
        return _application(name, size, **kwargs)


@pytest.mark.parametrize("name", SWEPT)
def test_every_application_exposes_units_logits_and_a_spatial_activation(name):
    size = _size(name)
    model = _unbuilt_weights(name, size, classifier_activation=None)
    exposed = ke.inspection.expose(model)
    logits = exposed.logits_tap
    assert logits.link == "output"
    assert tuple(logits.layer.output.shape) == (None, CLASSES), logits.name
    (activation,) = exposed.activation_taps
    assert isinstance(activation.layer, POOLING) and activation.link == "input", activation.name
    shape = activation.layer.input.shape
    assert len(shape) == 4 and shape[1] >= 2 and shape[2] >= 2, (activation.name, shape)


def test_architectures_are_all_listed():
    # every family of keras.applications is in the sweep, whatever the Keras version adds
    families = ("ConvNeXt", "DenseNet", "EfficientNet", "Inception", "MobileNet", "NASNet")
    families += ("ResNet", "VGG", "Xception")
    assert all(any(n.startswith(f) for n in ARCHITECTURES) for f in families), ARCHITECTURES
    assert len(ARCHITECTURES) >= 40
    assert set(REPRESENTATIVES) <= set(ARCHITECTURES)


# One architecture per classifier head: 1x1 conv + Flatten (MobileNetV3, the
# issue's), 1x1 conv + Reshape (MobileNet), Flatten -> Dense x3 (VGG).
HEADS = {"MobileNetV3Small": "flatten", "MobileNet": "reshape_2", "VGG16": "predictions"}


def _batch(name, size):
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, size, size, 3)).astype("float32")
    return 127.5 * (x + 1.0) if name.startswith("MobileNetV3") else x  # V3 rescales itself


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradcam_on_real_architectures_gives_finite_maps(name):
    size = _size(name)
    model = build_seeded(lambda: _application(name, size, classifier_activation=None))
    x, y = _batch(name, size), np.array([0, 2])
    assert ke.inspection.expose(model).logits_tap.layer.name == HEADS[name]
    scores, maps = ke.gradcam(model, x, y, batch_size=2, verbose=0)  # the call
    assert scores.shape == (2, 1) and maps.shape == (2, size, size, 1)
    assert np.isfinite(maps).all() and np.isfinite(scores).all()
    assert maps.std() > 0  # not a constant map
    if name == "MobileNetV3Small":
        # Grad-CAM's scores (the exposed Flatten) are the model's own scores, which
        # the gradients explain (from the model's output)
        grad_scores, grads = ke.gradients(model, x, y, batch_size=2, verbose=0)
        assert grads.shape == (2, size, size, 1) and np.isfinite(grads).all()
        np.testing.assert_allclose(grad_scores, scores, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- tiny heads


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, tuple(variable.shape)).astype(variable.dtype))
    return model


def _features(x):
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    return layers.Conv2D(6, 3, padding="same", activation="tanh", name="features")(h)


def conv_flatten_head(activation=None):
    """features -> GAP(keepdims) -> dropout -> 1x1 conv 'logits' -> Flatten [-> softmax]."""
    x = keras.Input((8, 8, 3))
    h = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(_features(x))
    h = layers.Dropout(0.5, name="dropout")(h)
    h = layers.Conv2D(CLASSES, 1, name="logits")(h)
    out = layers.Flatten(name="flatten")(h)
    if activation is not None:
        out = layers.Activation(activation, name="predictions")(out)
    return _seeded(keras.Model(x, out, name="conv_flatten_head"))


def dense_twin(model):
    """The same network with a Dense classifier after a plain GAP (shares no layer)."""
    x = keras.Input((8, 8, 3))
    h = layers.GlobalAveragePooling2D(name="gap")(_features(x))
    twin = keras.Model(x, layers.Dense(CLASSES, name="logits")(h))
    for name in ("conv", "features"):
        twin.get_layer(name).set_weights(model.get_layer(name).get_weights())
    kernel, bias = model.get_layer("logits").get_weights()
    twin.get_layer("logits").set_weights([kernel.reshape(kernel.shape[-2:]), bias])
    return twin


def test_a_1x1_conv_classifier_is_followed_through_dropout_and_flatten():
    model = conv_flatten_head(activation="softmax")
    exposed = ke.inspection.expose(model)
    assert exposed.logits_tap.layer.name == "flatten"  # before the softmax
    assert exposed.activation_taps[0].layer.name == "gap"  # not the Flatten of the scores
    assert tuple(exposed.logits_tap.layer.output.shape) == (None, CLASSES)
    assert tuple(exposed.activation_taps[0].layer.input.shape) == (None, 8, 8, 6)


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_a_1x1_conv_classifier_explains_like_its_dense_twin(method):
    model = conv_flatten_head()
    twin = dense_twin(model)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 3)).astype("float32")
    y = np.array([0, 2, 1])
    explain = getattr(ke, method)
    scores, maps = explain(ke.inspection.expose(model), x, y, verbose=0)
    twin_scores, twin_maps = explain(ke.inspection.expose(twin), x, y, verbose=0)
    np.testing.assert_allclose(scores, twin_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps, twin_maps, atol=1e-5)


def test_the_classifier_is_followed_out_of_a_nested_model():
    x = keras.Input((8, 8, 3))
    h = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(_features(x))
    inner = keras.Model(x, layers.Conv2D(CLASSES, 1, name="logits")(h), name="inner")
    outer_input = keras.Input((8, 8, 3))
    flat = layers.Reshape((CLASSES,), name="scores")(inner(outer_input))
    model = _seeded(keras.Model(outer_input, layers.Identity(name="same")(flat)))
    exposed = ke.inspection.expose(model)
    assert exposed.logits_tap.path == ("scores",)
    assert exposed.activation_taps[0].path == ("inner", "gap")
    xb = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    logits, _ = exposed(xb)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(model(xb)), atol=1e-6
    )


def test_a_classifier_pooled_afterwards_falls_back_to_the_models_output():
    # SqueezeNet-style: a 1x1 conv with one channel per class, then global pooling
    x = keras.Input((8, 8, 3))
    h = layers.Conv2D(CLASSES, 1, activation="relu", name="classes")(_features(x))
    model = _seeded(keras.Model(x, layers.GlobalAveragePooling2D(name="scores")(h)))
    exposed = ke.inspection.expose(model)
    assert exposed.logits_tap.layer.name == "scores"
    assert exposed.activation_taps[0].layer.name == "classes"
    scores, maps = ke.gradcam(exposed, np.ones((1, 8, 8, 3), "float32"), np.array([1]))
    assert scores.shape == (1, 1) and maps.shape == (1, 8, 8, 1)


def test_an_explicit_1x1_conv_logits_layer_is_followed_to_its_units():
    # outputs= names the classifier; its (batch, 1, 1, units) output is followed through
    # the Flatten to the (batch, units) tensor, like the default logits
    model = conv_flatten_head()
    exposed = ke.inspection.expose(model, outputs="logits")
    assert exposed.logits_tap.layer.name == "flatten"
    assert ke.inspection.get_logits_layer(model).name == "logits"  # the classifier itself
