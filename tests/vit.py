"""A tiny ViT built from keras.layers, and its forward pass in numpy (float64).

The numpy forward recomputes every block's attention probabilities from the
weights and can run with some of them replaced, which gives the references of
the attention methods: rollout from the recomputed probabilities, transformer
attribution with ``d score / d A`` by central finite differences.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from tests import models


class ClassToken(layers.Layer):
    """Puts a learned class token in front of the tokens."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, tokens):
        batch = keras.ops.shape(tokens)[0]
        token = keras.ops.broadcast_to(self.token, (batch, 1, tokens.shape[-1]))
        return keras.ops.concatenate([keras.ops.cast(token, tokens.dtype), tokens], axis=1)


class PositionEmbedding(layers.Layer):
    """Adds a learned embedding per token position."""

    def build(self, input_shape):
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros")

    def call(self, tokens):
        return tokens + keras.ops.cast(self.embedding, tokens.dtype)


def tiny_vit(size=12, patch=4, dim=8, heads=2, blocks=2, classes=3, class_token=True, seed=0):
    """A ViT on ``size x size x 3`` images: patches, [class token], blocks, norm, head.

    Weights are seeded normals (the same model on every backend).
    """
    with models.uninitialized():  # JAX: no initializer compiles (the weights are set below)
        model = _build(size, patch, dim, heads, blocks, classes, class_token)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        scale = 1.0 if "gamma" in variable.path else 0.5
        value = rng.normal(1.0 if "gamma" in variable.path else 0.0, scale, variable.shape)
        variable.assign(value.astype("float32"))
    if keras.backend.backend() == "jax":
        keras.backend.clear_session()  # as models.seeded: drop the "to initialize" registry
    return model


def _build(size, patch, dim, heads, blocks, classes, class_token):
    grid = size // patch
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    x = layers.Reshape((grid * grid, dim), name="tokens")(x)
    if class_token:
        x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(blocks):
        h = layers.LayerNormalization(name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(heads, dim // heads, name=f"block{block}_attention")(h, h)
        x = layers.Add(name=f"block{block}_add1")([x, h])
        h = layers.LayerNormalization(name=f"block{block}_norm2")(x)
        h = layers.Dense(2 * dim, activation="relu", name=f"block{block}_mlp1")(h)
        h = layers.Dense(dim, name=f"block{block}_mlp2")(h)
        x = layers.Add(name=f"block{block}_add2")([x, h])
    x = layers.LayerNormalization(name="final_norm")(x)
    x = x[:, 0] if class_token else layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_vit")


class Weights:
    """The model's weights as float64 numpy arrays, read once: ``weights[name]``."""

    def __init__(self, model):
        self.names = {layer.name for layer in model.layers}
        self.arrays = {
            layer.name: [
                np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in layer.weights
            ]
            for layer in model.layers
        }
        self.epsilon = {
            layer.name: layer.epsilon
            for layer in model.layers
            if isinstance(layer, layers.LayerNormalization)
        }

    def __getitem__(self, name):
        return self.arrays[name]


def _norm(weights, name, x):
    gamma, beta = weights[name]
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + weights.epsilon[name]) * gamma + beta


def forward(model, x, replace=None, blocks=2):
    """``(logits, [A per block])`` in float64; ``replace[block]`` replaces that block's A.

    ``model`` is a Keras model or its :class:`Weights`.
    """
    weights = model if isinstance(model, Weights) else Weights(model)
    replace = replace or {}
    x = np.asarray(x, np.float64)
    kernel, bias = weights["patches"]
    patch = kernel.shape[0]
    b, size = x.shape[0], x.shape[1]
    grid = size // patch
    pieces = x.reshape(b, grid, patch, grid, patch, -1).transpose(0, 1, 3, 2, 4, 5)
    tokens = pieces.reshape(b, grid * grid, -1) @ kernel.reshape(-1, kernel.shape[-1]) + bias
    if "class_token" in weights.names:
        (token,) = weights["class_token"]
        tokens = np.concatenate([np.broadcast_to(token, (b, 1, token.shape[-1])), tokens], 1)
    (position,) = weights["positions"]
    tokens = tokens + position
    probabilities = []
    for block in range(blocks):
        h = _norm(weights, f"block{block}_norm1", tokens)
        wq, bq, wk, bk, wv, bv, wo, bo = weights[f"block{block}_attention"]
        q = np.einsum("btd,dnh->btnh", h, wq) + bq
        k = np.einsum("btd,dnh->btnh", h, wk) + bk
        v = np.einsum("btd,dnh->btnh", h, wv) + bv
        logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(wq.shape[-1])
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        a = replace.get(block, a)
        probabilities.append(a)
        context = np.einsum("bnts,bsnh->btnh", a, v)
        tokens = tokens + np.einsum("btnh,nhd->btd", context, wo) + bo
        h = _norm(weights, f"block{block}_norm2", tokens)
        w1, b1 = weights[f"block{block}_mlp1"]
        w2, b2 = weights[f"block{block}_mlp2"]
        tokens = tokens + np.maximum(h @ w1 + b1, 0.0) @ w2 + b2
    tokens = _norm(weights, "final_norm", tokens)
    pooled = tokens[:, 0] if "class_token" in weights.names else tokens.mean(1)
    w, bias = weights["logits"]
    return pooled @ w + bias, probabilities


def attention_gradients(model, x, units, blocks=2, eps=1e-5):
    """``d logit[unit] / d A_block`` per sample, by central differences: a list of
    ``(batch, heads, T, T, units)`` arrays, one per block.

    Every entry of ``A`` is moved by ``+-eps`` in its own copy of the batch, and all
    the copies run through the numpy forward pass at once.
    """
    weights = Weights(model)
    x = np.asarray(x, np.float64)
    batch = len(x)
    _, probabilities = forward(weights, x, blocks=blocks)
    grads = []
    for block, a in enumerate(probabilities):
        entries = int(np.prod(a.shape[1:]))
        moves = np.eye(entries).reshape((entries, 1) + a.shape[1:]) * eps  # (E, 1, N, T, T)
        moved = np.concatenate([a[None] + moves, a[None] - moves])  # (2E, batch, N, T, T)
        copies = np.broadcast_to(x, (2 * entries,) + x.shape).reshape((-1,) + x.shape[1:])
        logits = forward(weights, copies, {block: moved.reshape((-1,) + a.shape[1:])}, blocks)[0]
        logits = logits.reshape(2, entries, batch, -1)
        difference = (logits[0] - logits[1]) / (2 * eps)  # (E, batch, classes)
        chosen = np.take_along_axis(difference, np.asarray(units)[None], axis=-1)  # (E, b, U)
        grads.append(chosen.transpose(1, 0, 2).reshape(a.shape + (chosen.shape[-1],)))
    return grads


def rollout(probabilities, fusion="mean", discard_ratio=0.0):
    """Attention rollout in numpy: ``(batch, T, T)``."""
    result = None
    for a in probabilities:
        fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](a, axis=1)
        tokens = fused.shape[-1]
        count = int(tokens * tokens * discard_ratio)
        if count:
            flat = fused.reshape(len(fused), -1).copy()
            lowest = np.argsort(flat, axis=-1)[:, :count]
            np.put_along_axis(flat, lowest, 0.0, axis=-1)
            fused = flat.reshape(fused.shape)
        fused = fused + np.eye(tokens)
        fused = fused / fused.sum(-1, keepdims=True)
        result = fused if result is None else fused @ result
    return result


def transformer_attribution(probabilities, gradients):
    """Chefer et al.'s rule in numpy: ``(batch, units, T, T)``."""
    relevance = None
    for a, g in zip(probabilities, gradients):
        weighted = np.maximum(g * a[..., None], 0.0).mean(1).transpose(0, 3, 1, 2)
        eye = np.eye(a.shape[-1])
        relevance = eye + weighted if relevance is None else relevance + weighted @ relevance
    return relevance
