"""Tiny deterministic models for the tests, and numpy forward passes of them.

Each builder seeds its weights so every backend builds the same model.
The numpy references let a test compute the expected maps independently.
"""

from __future__ import annotations

import contextlib

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


def he_normal_weights(model, seed=0):
    """Seeded He-normal kernels, unit gammas and variances, zero biases (every backend alike).

    For real-size architectures with random weights: the activations keep their scale
    through dozens of layers (``set_seeded_weights``' plain normals would explode).
    """
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        shape, path = tuple(variable.shape), variable.path
        if "moving_variance" in path or "gamma" in path:
            value = np.ones(shape)
        elif len(shape) <= 1:
            value = np.zeros(shape)
        else:
            fan_in = np.prod(shape[:-2] if "depthwise" in path else shape[:-1])
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        variable.assign(value.astype(variable.dtype))
    return model


def uninitialized():
    """A context where new variables stay uninitialized, on JAX (elsewhere it does nothing).

    On JAX, Keras' random initializers compile once per weight shape (half a minute
    for a ResNet on a CPU). Real-size models built in this context
    (``keras.StatelessScope(initialize_variables=False)``) get their values from
    :func:`seeded` instead. Nothing in it may create a variable from a value (an
    optimizer: KerasHub tasks compile in their constructor; build their backbone
    inside, the task outside).
    """
    if keras.backend.backend() != "jax":
        return contextlib.nullcontext()
    return keras.StatelessScope(initialize_variables=False)


def seeded(model, seed=0):
    """``model`` with :func:`he_normal_weights`, ready to run also if built :func:`uninitialized`.

    Leaving that context registered its variables "to initialize";
    ``keras.backend.clear_session()`` drops the registry (the model keeps its values).
    """
    he_normal_weights(model, seed)
    if keras.backend.backend() == "jax":
        keras.backend.clear_session()
    return model


def build_seeded(build, seed=0):
    """``build()`` (a real-size model) :func:`uninitialized`, then :func:`seeded`."""
    with uninitialized():
        model = build()
    return seeded(model, seed)


def jitted(fn, model):
    """``fn`` (arrays in, arrays out, calling ``model``) as one XLA program on JAX, else ``fn``.

    Eager JAX compiles every op it meets (a method or a model called outside
    ``jax.jit`` costs seconds to minutes on a CPU); one jitted program of several
    method calls compiles once. ``model``'s variables become the program's
    arguments (``keras_explainable.backend.compile``). TensorFlow and PyTorch
    keep running ``fn`` eagerly.
    """
    if keras.backend.backend() != "jax":
        return fn
    from keras_explainable import backend

    return backend.compile(fn, model, jit_compile=True)


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
        [
            keras.Input((H, W, C)),
            base_cnn(),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(classes, name="logits"),
        ],
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
        [
            layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="features"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(classes, name="logits"),
        ],
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


def np_conv_same_input_gradient(grad, kernel):
    """Gradient w.r.t. the input of a 'same' stride-1 convolution, given d/d output."""
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
    return np_conv_same(grad, flipped, 0.0)


def _layer(model, name):
    import keras_explainable as ke

    return ke.inspection.get_nested_layer(model, name)


def np_gap_dense_parts(model, x):
    """Activations of 'features' and the Dense head of a gap_dense_cnn-shaped model."""
    conv1, features, logits = (_layer(model, n) for n in ("conv1", "features", "logits"))
    a1 = np.maximum(np_conv_same(x.astype(np.float64), *weights_of(conv1)), 0)
    act = np.maximum(np_conv_same(a1, *weights_of(features)), 0)
    kernel, bias = weights_of(logits)
    return act, kernel, bias


def np_gap_dense_forward(model, x):
    """Everything a gap_dense_cnn-shaped model computes, in float64 numpy."""
    conv1, features, logits = (_layer(model, n) for n in ("conv1", "features", "logits"))
    pre1 = np_conv_same(x.astype(np.float64), *weights_of(conv1))
    a1 = np.maximum(pre1, 0)
    pre2 = np_conv_same(a1, *weights_of(features))
    act = np.maximum(pre2, 0)
    kernel, bias = weights_of(logits)
    scores = act.mean(axis=(1, 2)) @ kernel + bias
    return {
        "pre1": pre1,
        "a1": a1,
        "pre2": pre2,
        "act": act,
        "kernel": kernel,
        "scores": scores,
        "k1": weights_of(conv1)[0],
        "k2": weights_of(features)[0],
    }


def np_gap_dense_backprop(model, x, units):
    """Hand-written backprop of a gap_dense_cnn-shaped model.

    Returns d score_u / d (conv1 output, features output, input) for units (B, U),
    each shaped (..., U).
    """
    f = np_gap_dense_forward(model, x)
    b, h, w, k = f["act"].shape
    result = {"act": [], "a1": [], "x": []}
    for u in range(units.shape[1]):
        g_act = np.broadcast_to(
            f["kernel"][:, units[:, u]].T[:, None, None, :] / (h * w), f["act"].shape
        )
        g_pre2 = g_act * (f["pre2"] > 0)
        g_a1 = np_conv_same_input_gradient(g_pre2, f["k2"])
        g_pre1 = g_a1 * (f["pre1"] > 0)
        g_x = np_conv_same_input_gradient(g_pre1, f["k1"])
        result["act"].append(g_act)
        result["a1"].append(g_a1)
        result["x"].append(g_x)
    return f, {key: np.stack(value, axis=-1) for key, value in result.items()}


def np_gradcam(activations, gradients):
    """Grad-CAM from activations (B,h,w,K) and gradients (B,h,w,K,U)."""
    weights = gradients.mean(axis=(1, 2))  # (B, K, U)
    return np.einsum("bhwk,bku->bhwu", activations, weights)


def np_flatten_dense_forward(model, x):
    """flatten_dense_cnn in float64 numpy: returns (features activation, scores)."""
    conv1, features, logits = (_layer(model, n) for n in ("conv1", "features", "logits"))
    a1 = np.tanh(np_conv_same(x.astype(np.float64), *weights_of(conv1)))
    b, h, w, c = a1.shape
    pooled = a1.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    act = np.tanh(np_conv_same(pooled, *weights_of(features)))
    kernel, bias = weights_of(logits)
    scores = act.reshape(b, -1) @ kernel + bias
    return act, scores


def np_gradcam_gap_dense(act, kernel, units):
    """Grad-CAM for activations -> GAP -> Dense: d score_u / dA_ij^k = W[k,u] / (h*w)."""
    b, h, w, k = act.shape
    weights = kernel[:, units] / (h * w)  # (K, B, U) after take
    weights = np.transpose(weights, (1, 0, 2))  # (B, K, U)
    return np.einsum("bhwk,bku->bhwu", act, weights)
