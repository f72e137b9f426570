"""Attention rollout and transformer attribution against a numpy ViT, and their errors.

The references recompute every block's attention probabilities in numpy (float64)
from the weights of a tiny ViT built from ``keras.layers.MultiHeadAttention``;
transformer attribution's ``d score / d A`` comes from central finite differences
of that numpy forward pass. One model per module keeps the compiles few.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import _attention, _taps
from keras_explainable.methods import attention
from tests import models, vit

RAW = {"postprocessing": None, "resizing": False, "verbose": 0}


def _np(tensor):
    return keras.ops.convert_to_numpy(keras.ops.stop_gradient(tensor))


@pytest.fixture(scope="module")
def model():
    return vit.tiny_vit()  # 12 x 12 inputs, 4 x 4 patches: a class token + 3 x 3 patches


@pytest.fixture(scope="module")
def data():
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    y = np.array([[0, 2], [1, 0]])
    return x, y


def _state(model):
    layers = model._flatten_layers(include_self=True)
    attributes = {layer.name: sorted(layer.__dict__) for layer in layers}
    weights = [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]
    return attributes, weights


def test_rollout_and_transformer_attribution_equal_numpy(model, data):
    x, y = data
    before = _state(model)
    plain = keras.ops.convert_to_numpy(model(x))
    _, probabilities = vit.forward(model, x)

    scores, maps = ke.attention_rollout(model, x, y, **RAW)
    expected = vit.rollout(probabilities)[:, 0, 1:].reshape(2, 3, 3)
    assert maps.shape == (2, 3, 3, 2)
    np.testing.assert_allclose(maps, np.repeat(expected[..., None], 2, -1), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(scores, np.take_along_axis(plain, y, 1), rtol=1e-5, atol=1e-6)

    _, maps = ke.attention_rollout(model, x, y, head_fusion="max", discard_ratio=0.3, **RAW)
    expected = vit.rollout(probabilities, "max", 0.3)[:, 0, 1:].reshape(2, 3, 3)
    np.testing.assert_allclose(maps[..., 1], expected, atol=1e-5, rtol=1e-4)

    scores, maps = ke.transformer_attribution(model, x, y, **RAW)
    gradients = vit.attention_gradients(model, x, y)
    relevance = vit.transformer_attribution(probabilities, gradients)
    expected = relevance[:, :, 0, 1:].reshape(2, 2, 3, 3).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(maps, expected, atol=1e-5, rtol=1e-4)
    assert np.ptp(expected[..., 0] - expected[..., 1]) > 1e-3  # class-specific maps

    # the model is as it was: weights, attributes, no tap left, plain calls unchanged
    after = _state(model)
    assert after[0] == before[0]
    for old, new in zip(before[1], after[1]):
        np.testing.assert_array_equal(old, new)
    assert _taps.installed_layers() == 0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), plain)


def test_without_a_class_token_the_mean_row_is_the_map():
    model = vit.tiny_vit(class_token=False, blocks=1, seed=1)  # 9 tokens, all patches
    x = np.random.default_rng(2).uniform(0, 1, (1, 12, 12, 3)).astype("float32")
    rollout = models.jitted(lambda i: attention.attention_rollout(model, i, np.array([[1]])), model)
    _, maps = rollout(x)  # eager on TF/torch, one program on JAX
    _, probabilities = vit.forward(model, x, blocks=1)
    expected = vit.rollout(probabilities).mean(1).reshape(1, 3, 3, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(maps), expected, atol=1e-5, rtol=1e-4)


def test_a_caller_asking_for_the_scores_still_gets_them():
    """A tapped layer called with return_attention_scores=True keeps returning both."""
    layer = keras.layers.MultiHeadAttention(2, 2)
    x = np.random.default_rng(3).normal(size=(1, 4, 4)).astype("float32")
    expected_output, expected_scores = layer(x, x, return_attention_scores=True)
    taps, positions = attention_taps_of(layer)
    seen = [None] * len(taps)

    def record(position, value):
        seen[position] = value
        return value

    with _taps.tapped(taps, record):
        output, scores = layer(x, x, return_attention_scores=True)
        plain_call = layer(x, x)
    np.testing.assert_allclose(_np(scores), _np(expected_scores), rtol=1e-6)
    np.testing.assert_allclose(_np(output), _np(expected_output), rtol=1e-6)
    assert not isinstance(plain_call, tuple)
    np.testing.assert_allclose(_np(seen[positions[0]]), _np(expected_scores), rtol=1e-6)


def attention_taps_of(layer):
    """The attention taps of one bare layer (the public finder walks models)."""
    from keras_explainable import _attention, _compat

    softmax = _compat.attention_softmax(layer)
    taps = (
        _taps.Tap(layer, 0, call_kwargs=(("return_attention_scores", True),), keep=0),
        _taps.Tap(softmax, 0),
    )
    assert _attention.ATTENTION_CLASSES[0] is keras.layers.MultiHeadAttention
    return taps, (1,)


def test_threads_see_the_plain_model(model, data):
    """Explaining in one thread while another calls the model: each sees its own."""
    x, y = data
    plain = keras.ops.convert_to_numpy(model(x))
    expected = ke.transformer_attribution(model, x, y, **RAW)[1]
    failures = []

    def explain():
        for _ in range(3):
            maps = ke.transformer_attribution(model, x, y, **RAW)[1]
            if not np.allclose(maps, expected, rtol=1e-4, atol=1e-6):
                failures.append("transformer attribution changed")

    def predict():
        for _ in range(10):
            out = keras.ops.convert_to_numpy(model(x))
            if not np.allclose(out, plain, rtol=1e-5, atol=1e-6):
                failures.append("model(x) saw a tap")

    threads = [threading.Thread(target=explain), threading.Thread(target=predict)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert _taps.installed_layers() == 0


def test_bad_input_is_a_clear_error(model, data):
    x, y = data
    with pytest.raises(ValueError, match="MultiHeadAttention.*'gap_dense_cnn' has none"):
        attention.attention_rollout(models.gap_dense_cnn(), models.inputs(1), np.array([0]))
    with pytest.raises(ValueError, match="head_fusion is one of 'mean', 'max', 'min'"):
        attention.attention_rollout(model, x, y, head_fusion="sum")
    with pytest.raises(ValueError, match=r"discard_ratio .* in \[0, 1\)"):
        attention.attention_rollout(model, x, y, discard_ratio=1.0)
    with pytest.raises(ValueError, match=r"10 tokens, fewer than the 16 patches of a 4x4 grid"):
        attention.attention_rollout(model, x, y, token_grid=(4, 4))

    inputs = keras.Input((4, 4))
    flash = keras.layers.MultiHeadAttention(2, 2, flash_attention=True, name="flash")
    flashy = keras.Model(inputs, flash(inputs, inputs))
    with pytest.raises(ValueError, match="'flash' runs flash attention.*flash_attention=False"):
        attention.attention_rollout(flashy, np.zeros((1, 4, 4), "float32"))

    class OwnAttention(keras.layers.MultiHeadAttention):  # never calls its softmax
        def _compute_attention(self, query, key, value, *args, **kwargs):
            return keras.ops.einsum("btnh,bsnh->btnh", query, value), None

    tokens = keras.Input((5, 4))
    own = OwnAttention(2, 2, name="own")
    pooled = keras.layers.GlobalAveragePooling1D()(own(tokens, tokens))
    custom = keras.Model(tokens, keras.layers.Dense(2)(pooled))
    explain = models.jitted(lambda i: attention.transformer_attribution(custom, i, [0]), custom)
    with pytest.raises(ValueError, match="'own' ran without its softmax.*no attention prob"):
        explain(np.zeros((1, 5, 4), "float32"))  # JAX: raised from the trace, nothing compiles
    assert _taps.installed_layers() == 0


def test_keras_hub_vit_and_dinov2_with_registers():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = models.build_seeded(
        lambda: keras_hub.models.ViTBackbone(
            image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
            mlp_dim=32,
        )
    )  # fmt: skip
    vit_model = keras_hub.models.ViTImageClassifier(backbone, num_classes=5, activation=None)
    dinov2 = models.build_seeded(
        lambda: keras_hub.models.DINOV2Backbone(
            patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
            num_register_tokens=4, use_swiglu_ffn=False, image_shape=(32, 32, 3),
        )
    )  # fmt: skip
    for variable in dinov2.weights:  # seeded at 0 (vectors), the layer scales would mute blocks
        if "layer_scale" in variable.path:
            variable.assign(np.ones(variable.shape, variable.dtype))
    images = keras.Input((32, 32, 3))
    tokens = dinov2(images)  # a class token, 4 registers, 4 x 4 patches
    head = keras.layers.Dense(3, name="head")
    dinov2_model = keras.Model(images, head(tokens[:, 0]))
    models.he_normal_weights(head)
    x = np.random.default_rng(4).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    methods = (attention.attention_rollout, attention.transformer_attribution)
    for model in (vit_model, dinov2_model):
        assert len(_attention.attention_layers(model)) == 2
        # both methods in one program on JAX (the engine's part: the tiny ViT's tests above)
        both = models.jitted(lambda i, m=model: [method(m, i, [1]) for method in methods], model)
        for method, (scores, raw) in zip(methods, both(x)):
            scores, raw = (keras.ops.convert_to_numpy(v) for v in (scores, raw))
            assert scores.shape == (1, 1) and np.isfinite(scores).all(), method.__name__
            assert raw.shape == (1, 4, 4, 1) and np.isfinite(raw).all(), method.__name__
            assert np.ptp(raw) > 0, method.__name__  # prefix tokens dropped, a real map
    assert _taps.installed_layers() == 0
