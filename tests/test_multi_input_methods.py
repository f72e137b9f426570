"""FullGrad, Score-CAM, Ablation-CAM, TTA and RISE on a multi-input model, against numpy.

One tiny image + tabular ReLU model (built once per module, seeded weights,
biases included), its image input of any size (TTA rescales it). The methods are
called directly on one batch (no engine step) except where the engine's part is
what is tested; on JAX each test's method calls are one jitted program (eager
JAX compiles every op). References: the model's forward pass in float64 numpy
from its weights, scored by hand.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable import _branches
from keras_explainable.engine.multi import Layout
from keras_explainable.methods import cams, gradient, meta, perturbation
from keras_explainable.resizing import resize

from .models import jitted, np_conv_same, set_seeded_weights, uninitialized, weights_of

N, H, W, C, F, K = 2, 6, 6, 2, 3, 4
Y = np.array([2, 0])


def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


@pytest.fixture(scope="module")
def model():
    with uninitialized():  # JAX: no initializer compiles (the weights are set below)
        image = keras.Input((None, None, C), name="image")
        features = keras.Input((F,), name="features")
        a = layers.Conv2D(K, 3, padding="same", activation="relu", name="conv")(image)
        h = layers.GlobalAveragePooling2D(name="pool")(a)
        t = layers.Dense(3, activation="relu", name="tab")(features)
        logits = layers.Dense(3, name="logits")(layers.Concatenate()([h, t]))
        model = keras.Model([image, features], logits, name="image_tabular_relu")
    set_seeded_weights(model, 3)
    if keras.backend.backend() == "jax":
        keras.backend.clear_session()  # as models.seeded: drop the "to initialize" registry
    return model


def np_parts(model, image, features):
    """The conv activations ``A`` and the tabular features ``t``, in float64 numpy."""
    activations = np.maximum(
        np_conv_same(np.float64(image), *weights_of(model.get_layer("conv"))), 0
    )
    kernel, bias = weights_of(model.get_layer("tab"))
    return activations, np.maximum(np.float64(features) @ kernel + bias, 0)


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(2)
    return [
        rng.uniform(0, 1, (N, H, W, C)).astype("float32"),
        rng.uniform(0, 1, (N, F)).astype("float32"),
    ]


@pytest.fixture(scope="module")
def parts(model, x):
    """The conv activations ``A``, the tabular features ``t`` and the head's weights."""
    kernel, bias = weights_of(model.get_layer("logits"))
    return (*np_parts(model, *x), kernel, bias)


def score_of(model, image, features, units):
    activations, tabular = np_parts(model, image, features)
    kernel, bias = weights_of(model.get_layer("logits"))
    logits = np.concatenate([activations.mean(axis=(1, 2)), tabular], 1) @ kernel + bias
    return logits[np.arange(len(logits)), units]


def test_scorecam_masks_the_branch_input(model, x, parts):
    activations = parts[0]
    scores, maps = jitted(lambda inputs: cams.scorecam(model, inputs, Y), model)(x)
    expected = np.zeros((N, H, W))
    for i in range(N):
        s, valid = np.zeros(K), np.zeros(K, bool)
        for k in range(K):
            channel = activations[i, ..., k]
            span = channel.max() - channel.min()
            valid[k] = span > 0
            mask = (channel - channel.min()) / span if span > 0 else np.zeros_like(channel)
            masked = (x[0][i : i + 1] * mask[None, ..., None]).astype("float32")
            s[k] = score_of(model, masked, x[1][i : i + 1], Y[i : i + 1])[0]
        weights = np.where(valid, np.exp(s - s[valid].max()), 0.0)
        weights /= weights.sum()
        expected[i] = activations[i] @ weights
    np.testing.assert_allclose(numpy(maps)[..., 0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy(scores)[:, 0], score_of(model, *x, Y), rtol=1e-5)


def test_ablationcam_zeroes_channels_of_the_branch(model, x, parts):
    activations, tabular, kernel, bias = parts
    _, maps = jitted(lambda inputs: cams.ablationcam(model, inputs, Y), model)(x)
    pooled = activations.mean(axis=(1, 2))
    expected = np.zeros((N, H, W))
    for i in range(N):
        logits = [np.concatenate([pooled[i], tabular[i]]) @ kernel + bias]
        for k in range(K):
            ablated = np.where(np.arange(K) == k, 0.0, pooled[i])
            logits.append(np.concatenate([ablated, tabular[i]]) @ kernel + bias)
        full, drops = logits[0][Y[i]], np.array([logits[0][Y[i]] - z[Y[i]] for z in logits[1:]])
        expected[i] = activations[i] @ (drops / full)
    np.testing.assert_allclose(numpy(maps)[..., 0], expected, rtol=1e-4, atol=1e-5)


def test_full_gradients_one_map_per_input_complete(model, x):
    """ReLU model, psi = identity: the input maps plus the non-spatial bias terms are the score."""
    identity = lambda term, axis: term  # noqa: E731
    names = []

    def run(inputs):  # one program on JAX
        decomposition = gradient.full_gradient_decomposition(model, inputs, Y)
        names.extend(layer.name for layer in decomposition.layers)
        return (
            *gradient.full_gradients(model, inputs, Y, psi=identity),
            decomposition.input_term,
            decomposition.bias_terms,
            gradient.gradients(model, inputs, Y, explained_inputs=(1,))[1],
        )

    scores, maps, input_term, bias_terms, grads = jitted(run, model)(x)
    assert names == ["conv", "tab", "logits"]
    image_map, feature_map = (numpy(m)[..., 0] for m in maps)
    terms = [numpy(t)[..., 0] for t in bias_terms]
    # the conv's bias term (on the image branch) is in the image map, at its size
    input_image = numpy(input_term[0])[..., 0].sum(axis=-1)
    np.testing.assert_allclose(image_map, input_image + terms[0].sum(-1), rtol=1e-4, atol=1e-6)
    expected = x[1] * numpy(grads[1])[..., 0]  # |d score / d x|, x > 0
    np.testing.assert_allclose(np.abs(feature_map), expected, rtol=1e-4, atol=1e-6)
    total = image_map.sum((1, 2)) + feature_map.sum(1) + terms[1].sum(1) + terms[2].sum(1)
    np.testing.assert_allclose(total, numpy(scores)[:, 0], rtol=1e-4, atol=1e-5)


def test_tta_augments_the_image_and_repeats_the_features(model, x):
    base = gradient.gradients
    flipped = [x[0][:, :, ::-1], x[1]]
    bigger = [numpy(resize(x[0], (2 * H, 2 * W), (1, 2))).astype("float32"), x[1]]
    variants = (x, flipped, bigger, [bigger[0][:, :, ::-1], x[1]])

    def run(inputs, variants):  # one program on JAX
        return (
            meta.tta(base, scales=(2.0,), hflip=True)(model, inputs, Y)[1],
            [base(model, v, Y)[1] for v in variants],
            meta.tta(cams.gradcam, scales=(), hflip=False)(model, inputs, Y)[1],
            cams.gradcam(model, inputs, Y)[1],
        )

    maps, passes, cam, plain_cam = jitted(run, model)(x, variants)
    passes = [[numpy(m) for m in p] for p in passes]
    for p in (1, 3):  # flipped passes: their image maps flipped back
        passes[p][0] = passes[p][0][:, :, ::-1]
    for p in (2, 3):  # rescaled passes: their image maps brought back to the base size
        passes[p][0] = numpy(resize(passes[p][0], (H, W), (1, 2)))
    for position in (0, 1):
        expected = np.mean([p[position] for p in passes], axis=0)
        np.testing.assert_allclose(numpy(maps[position]), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(numpy(cam), numpy(plain_cam), atol=1e-6)


def test_rise_masks_each_input_like_numpy(model, x):
    settings = dict(masks=12, probability=0.5, seed=7)
    rise = jitted(
        lambda inputs: perturbation.rise(model, inputs, Y, cell_size=3, **settings), model
    )
    scores, maps = rise(x)
    image_masks = perturbation.rise_masks((H, W), cell_size=3, **settings)
    feature_masks = perturbation.rise_masks((F,), cell_size=F, **settings)
    image_map, feature_map = np.zeros((N, H, W)), np.zeros((N, F))
    for mask_image, mask_features in zip(image_masks, feature_masks):
        masked = (x[0] * mask_image[None, ..., None]).astype("float32")
        image_map += score_of(model, masked, x[1], Y)[:, None, None] * mask_image
        masked = (x[1] * mask_features[None]).astype("float32")
        feature_map += score_of(model, x[0], masked, Y)[:, None] * mask_features
    scale = settings["masks"] * settings["probability"]
    np.testing.assert_allclose(numpy(maps[0])[..., 0], image_map / scale, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy(maps[1])[..., 0], feature_map / scale, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy(scores)[:, 0], score_of(model, *x, Y), rtol=1e-5)


def test_a_cam_is_resized_to_the_input_its_branch_reads():
    """Two images: the CAM layer's branch decides (no input has the map's rank alone)."""
    with uninitialized():  # only the graph is read: no weights needed
        left = keras.Input((8, 8, 1), name="left")
        right = keras.Input((4, 4, 1), name="right")
        a = layers.Conv2D(2, 3, name="left_conv")(left)
        b = layers.Conv2D(2, 3, padding="same", name="right_conv")(right)
        pooled = [layers.GlobalAveragePooling2D()(a), layers.GlobalAveragePooling2D()(b)]
        model = keras.Model([left, right], layers.Dense(2)(layers.Concatenate()(pooled)))
    layout = Layout(model, [np.zeros((1, 8, 8, 1)), np.zeros((1, 4, 4, 1))])
    for name, position in (("left_conv", 0), ("right_conv", 1)):
        tap = ke.inspection.expose(model, arguments=name).activation_taps[0]
        branch = _branches.branch_input_of_rank(model, tap, layout.shapes, 4)
        assert branch == position
        assert layout.resize_target(4, None, branch) == position
    assert layout.resize_target(4, None, None) is None  # two images: left at the layer's size
    assert layout.resize_target(4, (1,), 0) == 1  # inputs= wins
    keyed = {"right": np.zeros((1, 4, 4, 1)), "left": np.zeros((1, 8, 8, 1))}
    assert _branches.branch_leaf(model, tap, keyed, 4) == 0  # "right" is the dict's first key


def ranks_of(maps):
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks.reshape(maps.shape)


def probabilities(model, image, features, units):
    activations, tabular = np_parts(model, image.astype("float32"), features.astype("float32"))
    kernel, bias = weights_of(model.get_layer("logits"))
    logits = np.concatenate([activations.mean(axis=(1, 2)), tabular], 1) @ kernel + bias
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return (exp / exp.sum(-1, keepdims=True))[np.arange(len(units)), units]


def test_metrics_perturb_every_explained_input_by_its_map(model, x):
    rng = np.random.default_rng(4)
    maps = [rng.uniform(size=(N, H, W, 1)), rng.uniform(size=(N, F, 1))]
    steps = 3
    result = ke.metrics.deletion(model, x, maps, Y, steps=steps, batch_size=8)
    image_ranks, feature_ranks = ranks_of(maps[0][..., 0]), ranks_of(maps[1][..., 0])
    expected = []
    for k in range(steps + 1):
        image = np.where((image_ranks < k * H * W // steps)[..., None], 0.0, x[0])
        features = np.where(feature_ranks < k * F // steps, 0.0, x[1])
        expected.append(probabilities(model, image, features, Y))
    np.testing.assert_allclose(result.curves, np.stack(expected, 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.fractions, np.arange(steps + 1) / steps)
    # a None map leaves its input as it is; confidence_change multiplies by the map
    only = ke.metrics.confidence_change(model, x, {"features": maps[1]}, Y)
    low, span = maps[1].min((1, 2))[:, None], np.ptp(maps[1][..., 0], axis=1)[:, None]
    scaled = (maps[1][..., 0] - low) / span
    np.testing.assert_allclose(
        only.explained, probabilities(model, x[0], x[1] * scaled, Y), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="give one per input"):
        ke.metrics.deletion(model, x, maps[:1], Y)
