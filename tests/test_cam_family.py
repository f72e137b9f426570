"""The CAM family (Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM, Score-CAM,
Ablation-CAM) against independent float64 numpy computations on tiny seeded models.

Each numpy model below is a hand-written forward pass of a Keras model from
``tests/models.py`` (or built here), split at the explained activation into
``features(x) -> (A, extras)`` and ``head(A, extras) -> logits``; the heads are
simple enough for the gradient ``d logit / d A`` to be written down.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke
from tests import models
from tests.reference import bilinear_resize

C = ke.methods.cams
UNITS = {
    "U=1": np.array([[2], [0], [4], [1]]),
    "U=3": np.array([[2, 0, 1], [0, 0, 3], [4, 1, 2], [1, 3, 3]]),
}


def _np(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), dtype=np.float64)


def _layer(model, name):
    return ke.inspection.get_nested_layer(model, name)


def _relu(x):
    return np.maximum(x, 0)


# --------------------------------------------------------------------------- numpy models


def relu_flatten_cnn(classes=models.CLASSES):
    """Input -> conv(relu) -> maxpool -> conv(relu, 'features') -> Flatten -> Dense.

    Non-negative activations and a spatially varying gradient.
    """
    x = keras.Input((models.H, models.W, models.C))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(h)
    h = layers.Flatten(name="flatten")(h)
    out = layers.Dense(classes, name="logits")(h)
    return models.set_seeded_weights(keras.Model(x, out, name="relu_flatten_cnn"), seed=3)


def _pool(a):
    b, h, w, c = a.shape
    return a.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class NumpyModel:
    """A float64 forward pass split at the explained activation."""

    def __init__(self, model, kind):
        self.kind = kind
        self.weights = {
            layer.name: models.weights_of(layer)
            for _, layer in ke.inspection.flatten_layers(model, include_models=False)
            if layer.weights
        }

    def conv(self, name, x):
        return models.np_conv_same(x, *self.weights[name])

    def features(self, x):
        x = x.astype(np.float64)
        if self.kind == "gap":  # gap_dense_cnn
            return _relu(self.conv("features", _relu(self.conv("conv1", x)))), None
        if self.kind == "flatten":  # flatten_dense_cnn
            return np.tanh(self.conv("features", _pool(np.tanh(self.conv("conv1", x))))), None
        if self.kind == "relu_flatten":
            return _relu(self.conv("features", _pool(_relu(self.conv("conv1", x))))), None
        if self.kind == "residual":  # residual_cnn explained at 'inner'
            stem = _relu(self.conv("stem", x))
            return np.tanh(self.conv("inner", stem)), stem
        raise AssertionError(self.kind)

    def head(self, act, extras=None):
        kernel, bias = self.weights["logits"]
        if self.kind == "gap":
            return act.mean(axis=(1, 2)) @ kernel + bias
        if self.kind in ("flatten", "relu_flatten"):
            return act.reshape(len(act), -1) @ kernel + bias
        if self.kind == "residual":
            h = _relu(extras + self.conv("branch", act))
            return h.mean(axis=(1, 2)) @ kernel + bias
        raise AssertionError(self.kind)

    def logits(self, x):
        return self.head(*self.features(x))

    def gradients(self, act, units):
        """d logit_u / d act, (B, h, w, K, U), for the linear heads."""
        kernel = self.weights["logits"][0]
        b, h, w, k = act.shape
        if self.kind == "gap":
            per_unit = np.broadcast_to((kernel / (h * w))[None, None], (h, w, k, kernel.shape[1]))
        else:
            per_unit = kernel.reshape(h, w, k, -1)
        return np.stack([per_unit[..., units[i]] for i in range(b)])


# --------------------------------------------------------------------------- numpy methods


def _weighted(act, weights):
    return np.einsum("bhwk,bku->bhwu", act, weights)


def np_gradcam(act, g):
    return _weighted(act, g.mean(axis=(1, 2)))


def np_gradcampp(act, g):
    total = act.sum(axis=(1, 2))[:, None, None, :, None]
    denominator = 2 * g**2 + total * g**3
    alpha = np.where(denominator != 0, g**2 / np.where(denominator != 0, denominator, 1), 0)
    return _weighted(act, (alpha * _relu(g)).sum(axis=(1, 2)))


def np_xgradcam(act, g):
    total = act.sum(axis=(1, 2), keepdims=True)
    share = np.where(total != 0, act / np.where(total != 0, total, 1), 0)
    return _weighted(act, (share[..., None] * g).sum(axis=(1, 2)))


def np_layercam(act, g):
    return (_relu(g) * act[..., None]).sum(axis=3)


def np_hirescam(act, g):
    return (g * act[..., None]).sum(axis=3)


def np_eigencam(act, units, center=False):
    b, h, w, k = act.shape
    maps = []
    for sample in act:
        matrix = sample.reshape(h * w, k)
        mean = matrix.mean(axis=0)
        if center:
            matrix = matrix - mean
        direction = np.linalg.svd(matrix, full_matrices=False)[2][0]
        if direction @ mean < 0:  # oriented along the activations' mean
            direction = -direction
        maps.append((matrix @ direction).reshape(h, w))
    return np.repeat(np.stack(maps)[..., None], units.shape[1], axis=-1)


def _softmax(values, axis):
    values = values - values.max(axis=axis, keepdims=True)
    e = np.exp(values)
    return e / e.sum(axis=axis, keepdims=True)


def np_scorecam(net, x, units, softmax="channels", top_n=None):
    act, _ = net.features(x)
    b, h, w, k = act.shape
    if top_n is not None:
        order = np.argsort(-act.var(axis=(1, 2)), axis=-1, kind="stable")[:, :top_n]
        act = np.take_along_axis(act, order[:, None, None, :], axis=-1)
        k = top_n
    up = bilinear_resize(act, x.shape[1:3])
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    valid = act.max(axis=(1, 2)) > act.min(axis=(1, 2))  # (B, K)
    masks = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    masked = x[:, None].astype(np.float64) * np.moveaxis(masks, -1, 1)[..., None]
    logits = net.logits(masked.reshape((b * k,) + x.shape[1:])).reshape(b, k, -1)
    if softmax == "classes":
        logits = _softmax(logits, axis=-1)
    scores = np.take_along_axis(logits, np.broadcast_to(units[:, None], (b, k, units.shape[1])), -1)
    if softmax == "channels":
        shifted = np.where(valid[..., None], scores, -np.inf)
        weights = _softmax(shifted, axis=1)
    else:
        if softmax is None:
            baseline = np.take_along_axis(net.logits(np.zeros_like(x)), units, -1)
            scores = scores - baseline[:, None]
        weights = np.where(valid[..., None], scores, 0)
    return _weighted(act, weights)


def np_ablationcam(net, x, units):
    act, extras = net.features(x)
    y = np.take_along_axis(net.head(act, extras), units, -1)
    drops = []
    for k in range(act.shape[-1]):
        ablated = act.copy()
        ablated[..., k] = 0
        drops.append(y - np.take_along_axis(net.head(ablated, extras), units, -1))
    drops = np.stack(drops, axis=1)  # (B, K, U)
    return _weighted(act, drops / y[:, None])


# --------------------------------------------------------------------------- cases

BUILDERS = {
    "gap": (models.gap_dense_cnn, None),
    "flatten": (models.flatten_dense_cnn, None),
    "relu_flatten": (relu_flatten_cnn, None),
    "residual": (models.residual_cnn, "inner"),
}


def _setup(kind):
    builder, argument = BUILDERS[kind]
    model = builder()
    if argument is not None:
        model = ke.inspection.expose(model, arguments=argument)
    net = NumpyModel(model.explained_model if argument else model, kind)
    return model, net


def _gradient_case(reference):
    def expected(net, x, units):
        act, _ = net.features(x)
        return reference(act, net.gradients(act, units))

    return expected


CASES = {
    "gradcampp-relu_flatten": (C.gradcampp, "relu_flatten", {}, _gradient_case(np_gradcampp)),
    "gradcampp-gap": (C.gradcampp, "gap", {}, _gradient_case(np_gradcampp)),
    "xgradcam-relu_flatten": (C.xgradcam, "relu_flatten", {}, _gradient_case(np_xgradcam)),
    "layercam-flatten": (C.layercam, "flatten", {}, _gradient_case(np_layercam)),
    "hirescam-flatten": (C.hirescam, "flatten", {}, _gradient_case(np_hirescam)),
    "eigencam-gap": (
        C.eigencam, "gap", {}, lambda net, x, u: np_eigencam(net.features(x)[0], u)
    ),
    "eigencam-flatten-centred": (
        C.eigencam, "flatten", {"center": True},
        lambda net, x, u: np_eigencam(net.features(x)[0], u, center=True),
    ),
    "scorecam-flatten": (C.scorecam, "flatten", {"chunk_size": 2}, np_scorecam),
    "scorecam-gap-classes": (
        C.scorecam, "gap", {"softmax": "classes", "chunk_size": 3},
        lambda net, x, u: np_scorecam(net, x, u, softmax="classes"),
    ),
    "scorecam-relu_flatten-baseline": (
        C.scorecam, "relu_flatten", {"softmax": None, "chunk_size": 4},
        lambda net, x, u: np_scorecam(net, x, u, softmax=None),
    ),
    "fasterscorecam-gap": (
        C.scorecam, "gap", {"top_n": 3, "chunk_size": 2},
        lambda net, x, u: np_scorecam(net, x, u, top_n=3),
    ),
    "ablationcam-gap": (C.ablationcam, "gap", {"chunk_size": 3}, np_ablationcam),
    "ablationcam-residual": (C.ablationcam, "residual", {}, np_ablationcam),
}  # fmt: skip


def _assert_maps(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("units", list(UNITS.values()), ids=list(UNITS))
@pytest.mark.parametrize("case", list(CASES))
def test_method_equals_numpy_reference(case, units):
    method, kind, params, reference = CASES[case]
    model, net = _setup(kind)
    x = models.inputs(4)
    expected = reference(net, x, units)
    expected_scores = np.take_along_axis(net.logits(x), units, -1)
    assert np.isfinite(expected).all() and np.abs(expected).max() > 1e-3

    scores, maps = method(model, x, units, **params)
    assert tuple(maps.shape) == expected.shape
    np.testing.assert_allclose(_np(scores), expected_scores, rtol=1e-5, atol=1e-5)
    _assert_maps(_np(maps), expected)

    scores, maps = ke.explain(
        method, model, x, units, batch_size=3, verbose=0, postprocessing=None, resizing=False,
        **params,
    )  # fmt: skip
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    _assert_maps(maps, expected)


@pytest.mark.parametrize(
    "method", [C.gradcampp, C.xgradcam, C.layercam, C.hirescam, C.eigencam, C.scorecam,
               C.ablationcam],
)  # fmt: skip
def test_every_unit_and_one_unit_per_sample(method):
    """``indices=None`` explains every class; a 1-D ``indices`` one unit per sample."""
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    every_scores, every = method(model, x)
    assert tuple(every.shape) == (2, models.H, models.W, models.CLASSES)
    one = np.array([3, 1])
    scores, maps = method(model, x, one)
    assert tuple(maps.shape) == (2, models.H, models.W, 1)
    picked = np.take_along_axis(_np(every), one[:, None, None, None], axis=-1)
    _assert_maps(_np(maps), picked)
    np.testing.assert_allclose(_np(scores)[:, 0], _np(every_scores)[[0, 1], one], rtol=1e-5)


@pytest.mark.parametrize("units", list(UNITS.values()), ids=list(UNITS))
def test_gap_dense_identities(units):
    """GAP -> Dense: d score_u / dA = W[k, u] / (h w) everywhere, so HiResCAM and
    XGrad-CAM equal Grad-CAM, and CAM = HiResCAM * (h w)."""
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    gradcam = _np(C.gradcam(model, x, units)[1])
    hirescam = _np(C.hirescam(model, x, units)[1])
    xgradcam = _np(C.xgradcam(model, x, units)[1])
    cam = _np(C.cam(model, x, units)[1])
    h, w = gradcam.shape[1:3]
    _assert_maps(hirescam, gradcam)
    _assert_maps(xgradcam, gradcam)
    _assert_maps(hirescam * h * w, cam)


def _large_logits_model():
    """relu_flatten_cnn with the classifier scaled until its logits reach ~500."""
    model = relu_flatten_cnn()
    x = models.inputs(4)
    logits = model.get_layer("logits")
    kernel, bias = (_np(w) for w in logits.weights)
    peak = np.abs(NumpyModel(model, "relu_flatten").logits(x) - bias).max()
    logits.kernel.assign((kernel * 500.0 / peak).astype("float32"))
    logits.bias.assign(np.zeros_like(bias, dtype="float32"))
    return model, x


def test_gradcampp_is_finite_and_exact_for_logits_of_500():
    model, x = _large_logits_model()
    net = NumpyModel(model, "relu_flatten")
    units = UNITS["U=3"]
    assert np.abs(net.logits(x)).max() > 499.0
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.exp(np.float32(500.0)))  # what the exp form would compute
    act, _ = net.features(x)
    expected = np_gradcampp(act, net.gradients(act, units))
    scores, maps = C.gradcampp(model, x, units)
    assert np.isfinite(_np(maps)).all() and np.isfinite(_np(scores)).all()
    _assert_maps(_np(maps), expected)
    _, maps = ke.explain(C.gradcampp, model, x, units, verbose=0, postprocessing=None,
                         resizing=False)  # fmt: skip
    _assert_maps(maps, expected)


@pytest.mark.parametrize("kind", ["flatten", "gap"])
def test_scorecam_does_not_depend_on_the_chunk_size(kind):
    model, _ = _setup(kind)
    x = models.inputs(3)
    units = UNITS["U=3"][:3]
    _, reference = C.scorecam(model, x, units, chunk_size=1)
    for chunk_size in (3, 4, 100):  # 3 and 5 channels pad, 100 > K
        _, maps = C.scorecam(model, x, units, chunk_size=chunk_size)
        _assert_maps(_np(maps), _np(reference))
    _, maps = ke.explain(C.scorecam, model, x, units, verbose=0, postprocessing=None,
                         resizing=False, chunk_size=3)  # fmt: skip
    _assert_maps(maps, _np(reference))


@pytest.mark.parametrize("softmax", ["channels", "classes", None])
def test_faster_scorecam_with_every_channel_is_scorecam(softmax):
    model, _ = _setup("gap")
    x = models.inputs(3)
    units = UNITS["U=3"][:3]
    channels = _layer(model, "features").filters
    _, full = C.scorecam(model, x, units, softmax=softmax)
    _, faster = C.scorecam(model, x, units, softmax=softmax, top_n=channels)
    _assert_maps(_np(faster), _np(full))


@pytest.mark.parametrize("softmax", ["channels", "classes", None])
def test_scorecam_leaves_constant_channels_out(softmax):
    """A dead ReLU channel (constant 0) has no mask: weight 0, outside the softmax."""
    model = models.gap_dense_cnn()
    features = _layer(model, "features")
    bias = _np(features.bias)
    bias[[0, 5]] = -100.0
    features.bias.assign(bias.astype("float32"))
    net = NumpyModel(model, "gap")
    x = models.inputs(3)
    units = UNITS["U=3"][:3]
    act, _ = net.features(x)
    assert (act[..., [0, 5]] == 0).all() and (act.max(axis=(1, 2)) > 0).sum() == 3 * 6
    expected = np_scorecam(net, x, units, softmax=softmax)
    _, maps = C.scorecam(model, x, units, softmax=softmax, chunk_size=3)
    _assert_maps(_np(maps), expected)


def test_ablationcam_chunk_size_and_skip_connection():
    """Chunks don't change the result; the skip connection keeps the original value."""
    model, net = _setup("residual")
    x = models.inputs(3)
    units = UNITS["U=3"][:3]
    expected = np_ablationcam(net, x, units)
    for chunk_size in (1, 3, 4):
        _, maps = C.ablationcam(model, x, units, chunk_size=chunk_size)
        _assert_maps(_np(maps), expected)


def test_eigencam_sign_is_deterministic_and_positive_for_relu_activations():
    model = models.gap_dense_cnn()
    x = models.inputs(4)
    _, maps = C.eigencam(model, x, np.array([0, 1, 2, 3]))
    maps = _np(maps)
    assert (maps >= -1e-6).all() and (maps.sum(axis=(1, 2)) > 0).all()
    _, negated = C.eigencam(model, x, np.array([4, 4, 4, 4]))
    _assert_maps(_np(negated), maps)  # the same map for every unit


def test_eigencam_on_signed_tokens_is_oriented_along_their_mean():
    """Residual-stream-like tokens whose mean has a large negative channel (issue 14).

    Every token is about ``b = (-5, 1, 1, 1)``: the principal direction is ``±b``,
    and orienting it by ``sum_k v_k >= 0`` gives ``v = -b/|b|``, an all-negative map
    (blank once ``positive_normalize``d). Oriented along the mean it is positive.
    """
    x_in = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 2, strides=2, name="patches")(x_in)  # a 4x4 grid of patch tokens
    h = layers.Reshape((16, 4))(h)
    dense = layers.Dense(4, name="tokens")
    tokens = dense(h)
    out = layers.Dense(3)(layers.GlobalAveragePooling1D()(tokens))
    model = keras.Model(x_in, out)
    kernel = np.random.default_rng(3).normal(0, 0.3, (4, 4)).astype("float32")
    dense.set_weights([kernel, np.array([-5.0, 1.0, 1.0, 1.0], "float32")])
    x = models.inputs(2, h=8, w=8)
    activations = _np(keras.Model(x_in, tokens)(x)).reshape(2, 4, 4, 4)
    units = np.array([[0], [2]])
    expected = np_eigencam(activations, units)
    old_rule = []  # the former orientation, sum_k v_k >= 0: the test's point
    for sample in activations.reshape(2, 16, 4):
        v = np.linalg.svd(sample, full_matrices=False)[2][0]
        old_rule.append(sample @ (v if v.sum() >= 0 else -v))
    assert (np.array(old_rule) < 0).all()
    assert (expected > 0).all()
    exposed = ke.inspection.expose(model, "tokens")
    _, maps = C.eigencam(exposed, x, units)
    _assert_maps(_np(maps), expected)
    _, shown = ke.eigencam(exposed, x, units)  # positive_normalize + resize: not blank
    shown = _np(shown)
    assert shown.shape == (2, 8, 8, 1) and (shown.max(axis=(1, 2, 3)) > 0.5).all()
    assert (shown.std(axis=(1, 2, 3)) > 0.05).all()


def test_the_model_is_left_untouched():
    model = models.residual_cnn()
    before = [_np(w).copy() for w in model.weights]
    exposed = ke.inspection.expose(model, arguments="inner")
    C.ablationcam(exposed, models.inputs(2), np.array([1, 2]))
    C.scorecam(exposed, models.inputs(2), np.array([1, 2]))
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, _np(new))
    assert all("call" not in layer.__dict__ for layer in model.layers)  # no tap left behind


@pytest.mark.parametrize(
    "method, params, message",
    [
        (C.scorecam, {"chunk_size": 0}, "chunk_size"),
        (C.scorecam, {"chunk_size": 2.5}, "chunk_size"),
        (C.scorecam, {"top_n": 0}, "top_n"),
        (C.scorecam, {"top_n": 99}, "top_n=99 exceeds"),
        (C.scorecam, {"softmax": "units"}, "softmax"),
        (C.ablationcam, {"chunk_size": -1}, "chunk_size"),
    ],
)
def test_bad_parameters_are_explained(method, params, message):
    with pytest.raises(ValueError, match=message):
        method(models.gap_dense_cnn(), models.inputs(1), np.array([0]), **params)


# ------------------------------------------------------------- Ablation-CAM's head


def _dropout_head_cnn():
    """BatchNormalization and Dropout after the explained layer: the head must run them
    in inference mode, as the model does."""
    x = keras.Input((models.H, models.W, models.C))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Dropout(0.9, name="dropout")(h)
    return models.set_seeded_weights(keras.Model(x, layers.Dense(5, name="logits")(h)))


HEAD_CASES = {  # model, explained layer, whether only the layers after it can run
    "gap": (models.gap_dense_cnn, None, True),
    "batchnorm and dropout after it": (_dropout_head_cnn, "features", True),
    "nested_sequential": (models.nested_sequential, None, True),  # the base model is the layer
    "sequential_without_input": (models.sequential_without_input, None, True),
    "skip connection crossing it": (models.residual_cnn, "inner", False),
    "after the skip connection": (models.residual_cnn, "block_out", True),
    "inside a nested model": (models.nested_functional, ("base", "features"), False),
    "subclassed": (models.subclassed, None, False),
}


@pytest.mark.parametrize("case", HEAD_CASES)
def test_ablationcam_runs_only_the_head_when_it_can(case, monkeypatch):
    """The head (layers after the explained one) replaces the full rerun only where it
    computes the same thing; both paths give the same maps."""
    from keras_explainable import _head
    from keras_explainable.methods import _cam_perturbation

    builder, argument, separable = HEAD_CASES[case]
    model = builder()
    explained = model if argument is None else ke.inspection.expose(model, arguments=argument)
    x = models.inputs(3)
    units = np.array([1, 4, 2])
    nodes_before = {id(layer): len(layer._inbound_nodes) for layer in model.layers}

    built = []
    real_head_after = _head.head_after

    def spy(model_, tap):
        head = real_head_after(model_, tap)
        built.append(head)
        return head

    monkeypatch.setattr(_cam_perturbation, "head_after", spy)
    _, maps = C.ablationcam(explained, x, units, chunk_size=3)
    assert (built[0] is not None) == separable, built
    if separable:  # the head holds none of the layers before the explained one
        names = {layer.name for layer in built[0].layers}
        assert {"gap", "logits"} <= names and not names & {"stem", "conv1", "base", "inner"}

    monkeypatch.setattr(_cam_perturbation, "head_after", lambda model_, tap: None)
    _, rerun = C.ablationcam(explained, x, units, chunk_size=3)
    _assert_maps(_np(maps), _np(rerun))
    # nothing about the user's model changed: no new graph nodes, no layer swapped
    assert {id(layer): len(layer._inbound_nodes) for layer in model.layers} == nodes_before


def test_ablationcam_head_is_not_used_when_the_tapped_input_has_other_readers():
    """A tap on the pooling layer's input only changes what the pooling sees; when the
    same tensor also feeds another branch, the head (which would change both) is not used."""
    from keras_explainable import _head

    x = keras.Input((models.H, models.W, models.C))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(x)
    pooled = layers.GlobalAveragePooling2D(name="gap")(h)
    other = layers.GlobalMaxPooling2D(name="gmp")(h)
    out = layers.Dense(5, name="logits")(layers.Concatenate()([pooled, other]))
    model = models.set_seeded_weights(keras.Model(x, out))
    inputs = models.inputs(2)
    gap_input = ke.inspection.expose(model, arguments={"name": "gap", "link": "input"})
    features = ke.inspection.expose(model, arguments="features")
    assert _head.head_after(gap_input, gap_input.activation_taps[0]) is None
    assert _head.head_after(features, features.activation_taps[0]) is not None
    _, maps = C.ablationcam(gap_input, inputs, np.array([0, 3]))
    _, whole = C.ablationcam(features, inputs, np.array([0, 3]))
    assert not np.allclose(_np(maps), _np(whole))  # ablating only the pooled branch differs
