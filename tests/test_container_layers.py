"""Layers holding layers (KerasHub encoders, custom blocks): every weight and every bias counted.

``flatten_layers`` opens layers that hold layers as attributes (issue 14), so
the layers inside are listed instead of the container. Checked here, on tiny
custom containers: the cascading randomization's stages randomize every weight
of the model once (a container's own class token / position embedding included,
after its sub-layers), and FullGrad's bias terms include the biases inside
containers and inside Keras' ``MultiHeadAttention`` (exact decomposition on a
piecewise-linear model whose convolutions sit in a container).
"""

import keras
import numpy as np
from keras import layers, ops

import keras_explainable as ke
from keras_explainable import _layers
from keras_explainable.metrics import randomization
from tests import models


class Embed(layers.Layer):
    """Patch tokens (a Conv2D it holds), its own class token and position embedding."""

    def __init__(self, dim=4, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.patches = layers.Conv2D(dim, 2, strides=2, name="patches")

    def build(self, shape):
        count = (shape[1] // 2) * (shape[2] // 2) + 1
        self.class_token = self.add_weight(shape=(1, 1, self.dim), name="class_token")
        self.positions = self.add_weight(shape=(count, self.dim), name="positions")

    def call(self, x):
        tokens = self.patches(x)
        tokens = ops.reshape(tokens, (ops.shape(tokens)[0], -1, self.dim))
        token = ops.broadcast_to(self.class_token, (ops.shape(tokens)[0], 1, self.dim))
        return ops.concatenate([token, tokens], axis=1) + self.positions


class Block(layers.Layer):
    """A transformer block holding its norm, attention and MLP."""

    def __init__(self, dim=4, **kwargs):
        super().__init__(**kwargs)
        self.norm = layers.LayerNormalization(name="norm")
        self.attention = layers.MultiHeadAttention(2, dim // 2, name="attention")
        self.mlp = layers.Dense(dim, activation="relu", name="mlp")

    def call(self, x):
        h = self.norm(x)
        x = x + self.attention(h, h)
        return x + self.mlp(x)


class ConvBlock(layers.Layer):
    """Two convolutions held as attributes (piecewise linear)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = layers.Conv2D(4, 3, padding="same", activation="relu", name="first")
        self.second = layers.Conv2D(4, 3, padding="same", name="second")

    def call(self, x):
        return self.second(self.first(x))


def _vit():
    x_in = keras.Input((4, 4, 3))
    h = Block(name="block")(Embed(name="embed")(x_in))
    return keras.Model(x_in, layers.Dense(3, name="logits")(h[:, 0]))


def _conv():
    x_in = keras.Input((6, 6, 3))
    h = layers.GlobalAveragePooling2D()(ConvBlock(name="convs")(x_in))
    return keras.Model(x_in, layers.Dense(3, name="logits")(h))


def test_cascading_randomization_covers_every_weight_once():
    model = models.build_seeded(_vit)
    stages = ke.metrics.randomization_layers(model)
    assert [path for path, _ in stages] == [
        "logits", "block/mlp", "block/attention", "block/norm", "embed/patches", "embed",
    ]  # fmt: skip
    owned = [v for _, layer in stages for v in _layers.own_weights(layer)]
    assert sorted(map(id, owned)) == sorted(map(id, model.weights))  # all of them, each once
    embed = stages[-1][1]
    assert {v.name for v in _layers.own_weights(embed)} == {"class_token", "positions"}
    before = [np.array(ops.convert_to_numpy(v)) for v in model.weights]
    rng = np.random.default_rng(0)
    for _, layer in stages:
        randomization._reinitialize(layer, rng, "random_normal", whole=False)
    after = [np.array(ops.convert_to_numpy(v)) for v in model.weights]
    unchanged = [v.path for v, a, b in zip(model.weights, before, after) if np.array_equal(a, b)]
    assert not unchanged


def test_fullgrad_biases_inside_containers_and_attention():
    model = models.build_seeded(_vit)
    paths = [path for path, _, _ in _layers.biased_layers(model)]
    assert paths == [
        ("embed", "patches"), ("block", "norm"), ("block", "attention", "query"),
        ("block", "attention", "key"), ("block", "attention", "value"),
        ("block", "attention", "attention_output"), ("block", "mlp"), ("logits",),
    ]  # fmt: skip
    assert ke.inspection.layers_with_biases(model, return_biases=False) == [
        layer for _, layer, _ in _layers.biased_layers(model)
    ]
    x = models.inputs(2, h=4, w=4, seed=2)
    d = ke.methods.gradient.full_gradient_decomposition(model, x, np.array([[0], [2]]))
    assert len(d.bias_terms) == len(paths)  # every tap, inside the attention layer too
    for term, (_, _, bias) in zip(d.bias_terms, _layers.biased_layers(model)):
        term = np.asarray(ops.convert_to_numpy(term))
        assert np.isfinite(term).all() and term.shape[-2] == bias.shape[-1]


def test_fullgrad_is_complete_through_a_container():
    model = models.build_seeded(_conv)
    x = models.inputs(2, h=6, w=6, seed=4)
    d = ke.methods.gradient.full_gradient_decomposition(model, x, np.array([[1], [2]]))
    assert [layer.name for layer in d.layers] == ["first", "second", "logits"]
    total = np.asarray(ops.convert_to_numpy(d.input_term)).sum(axis=(1, 2, 3))
    for term in d.bias_terms:
        term = np.asarray(ops.convert_to_numpy(term))
        total = total + term.reshape(len(term), -1, term.shape[-1]).sum(axis=1)
    np.testing.assert_allclose(total, ops.convert_to_numpy(d.scores), rtol=1e-4, atol=1e-4)
