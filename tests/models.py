"""Tiny deterministic models for the tests, and numpy forward passes of them.

Each builder seeds its weights so every backend builds the same model.
The numpy references let a test compute the expected maps independently.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

H = W = 12
C = 3
CLASSES = 5


def set_seeded_weights(model, seed=0, scale=0.5):
    """Overwrite every weight with seeded values (identical on every backend)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, scale, shape)
        variable.assign(value.astype(variable.dtype))
    return model


def inputs(n=4, seed=1, h=H, w=W, c=C):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype("float32")


def gap_dense_cnn(classes=CLASSES):
    """Input -> conv(relu) -> conv(relu, 'features') -> GAP -> Dense (logits)."""
    x = keras.Input((H, W, C))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(classes, name="logits")(h)
    return set_seeded_weights(keras.Model(x, out, name="gap_dense_cnn"))


def flatten_dense_cnn(classes=CLASSES):
    """Input -> conv(tanh) -> maxpool -> conv(tanh, 'features') -> Flatten -> Dense."""
    x = keras.Input((H, W, C))
    h = layers.Conv2D(4, 3, padding="same", activation="tanh", name="conv1")(x)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Conv2D(5, 3, padding="same", activation="tanh", name="features")(h)
    h = layers.Flatten(name="flatten")(h)
    out = layers.Dense(classes, name="logits")(h)
    return set_seeded_weights(keras.Model(x, out, name="flatten_dense_cnn"))


def residual_cnn(classes=CLASSES):
    """A residual block: 'inner' (conv) is crossed by a skip connection."""
    x = keras.Input((H, W, C))
    stem = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
    inner = layers.Conv2D(4, 3, padding="same", activation="tanh", name="inner")(stem)
    branch = layers.Conv2D(4, 3, padding="same", name="branch")(inner)
    h = layers.Add(name="add")([stem, branch])
    h = layers.Activation("relu", name="block_out")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(classes, name="logits")(h)
    return set_seeded_weights(keras.Model(x, out, name="residual_cnn"))


def base_cnn():
    x = keras.Input((H, W, C))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(h)
    return keras.Model(x, h, name="base")


def nested_sequential(classes=CLASSES):
    """keras.Sequential([base, GAP, Dense]) — a base model used as a layer."""
    model = keras.Sequential(
        [keras.Input((H, W, C)), base_cnn(), layers.GlobalAveragePooling2D(name="gap"),
         layers.Dense(classes, name="logits")],
        name="nested_sequential",
    )
    return set_seeded_weights(model)


def nested_functional(classes=CLASSES):
    """The functional equivalent of ``nested_sequential``."""
    base = base_cnn()
    x = keras.Input((H, W, C))
    h = base(x)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(classes, name="logits")(h)
    return set_seeded_weights(keras.Model(x, out, name="nested_functional"))


def sequential_without_input(classes=CLASSES):
    """A Sequential model with no Input, built by calling it once."""
    model = keras.Sequential(
        [layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
         layers.Conv2D(8, 3, padding="same", activation="relu", name="features"),
         layers.GlobalAveragePooling2D(name="gap"),
         layers.Dense(classes, name="logits")],
        name="sequential_without_input",
    )
    model(np.zeros((1, H, W, C), "float32"))
    return set_seeded_weights(model)


class Subclassed(keras.Model):
    def __init__(self, classes=CLASSES):
        super().__init__(name="subclassed")
        self.conv1 = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")
        self.features = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")
        self.gap = layers.GlobalAveragePooling2D(name="gap")
        self.logits = layers.Dense(classes, name="logits")

    def call(self, x, training=False):
        return self.logits(self.gap(self.features(self.conv1(x))))


def subclassed(classes=CLASSES):
    model = Subclassed(classes)
    model(np.zeros((1, H, W, C), "float32"))
    return set_seeded_weights(model)


# ------------------------------------------------------------------- numpy references


def np_conv_same(x, kernel, bias):
    """'same' 2-D convolution (stride 1, odd kernel) in numpy: (B,H,W,Ci) -> (B,H,W,Co)."""
    kh, kw, _, _ = kernel.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, i : i + x.shape[1], j : j + x.shape[2], :]
            out += np.einsum("bhwc,co->bhwo", patch, kernel[i, j])
    return out + bias


def weights_of(layer):
    return [np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float64) for w in layer.weights]


def np_gap_dense_parts(model, x):
    """Activations of 'features' and the Dense head of a gap_dense_cnn-shaped model."""
    get = model.get_layer if hasattr(model, "get_layer") else None
    conv1, features, logits = get("conv1"), get("features"), get("logits")
    a1 = np.maximum(np_conv_same(x.astype(np.float64), *weights_of(conv1)), 0)
    act = np.maximum(np_conv_same(a1, *weights_of(features)), 0)
    kernel, bias = weights_of(logits)
    return act, kernel, bias


def np_gradcam_gap_dense(act, kernel, units):
    """Grad-CAM for activations -> GAP -> Dense: d score_u / dA_ij^k = W[k,u] / (h*w)."""
    b, h, w, k = act.shape
    weights = kernel[:, units] / (h * w)  # (K, B, U) after take
    weights = np.transpose(weights, (1, 0, 2))  # (B, K, U)
    return np.einsum("bhwk,bku->bhwu", act, weights)
