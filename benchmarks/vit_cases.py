"""``benchmark.py --methods vit``: the transformer methods on a vision transformer.

The model is a ViT of realistic shape, random weights (nothing is downloaded):
``224 x 224 x 3`` images -> 16 x 16 patches (a 14 x 14 grid) -> a class token
and learned position embeddings -> ``BLOCKS`` pre-norm blocks of
``keras.layers.MultiHeadAttention`` (width 192, 3 heads) and an MLP of width
768 -> the final norm -> ``Dense(1000)`` on the class token: ViT-Ti/16
(Touvron et al. 2021), the smallest published ViT, 12 blocks deep
(``benchmark.py --vit-blocks N`` for other depths: the share of a block's
backward pass in Grad-CAM's cost grows as the model gets shallower). Cases,
all on the same batch and interleaved with ``model.predict``:

- ``gradcam (tokens)``: ``ke.gradcam(model, x, y)`` with its default layer on a
  transformer (the last block's input: its output sends no gradient to the
  patch tokens, only the class token is read; a ``(batch, 197, 192)`` token
  tensor mapped onto the 14 x 14 grid, the class token dropped), so one
  forward pass and a backward pass through the last block and the head;
  target <= 1.1x predict;
- ``attention_rollout``: one forward pass recording every block's attention
  probabilities, multiplied through the blocks; target <= 1.1x predict;
- ``transformer_attribution``: one forward and one backward pass to every
  block's attention probabilities; target <= 3x predict.

Diagnostics (``benchmark.py`` without ``--no-diagnostics``): ``forward step``
(one forward pass compiled like our steps) and ``forward + attention taps``
(the same with the attention layers' probabilities recorded, i.e. rollout's
forward pass without the rollout itself), to tell the tap's cost from the rest.
"""

from __future__ import annotations

import numpy as np

import keras_explainable as ke

SIZE = 224
PATCH = 16
WIDTH = 192
HEADS = 3
BLOCKS = 12
CLASSES = 1000
TARGETS = {"gradcam (tokens)": 1.1, "attention_rollout": 1.1, "transformer_attribution": 3.0}


def _layers():
    """The class-token and position-embedding layers of vit_localization.py's ViT.

    Imported here, not at the top: that module imports Keras, which must wait until the
    benchmark has chosen the backend.
    """
    from vit_localization import ClassToken, PositionEmbedding

    return ClassToken, PositionEmbedding


def build_model(seed: int, size: int = SIZE, blocks: int = BLOCKS):
    """The benchmarked ViT (random weights) and its input side."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    ClassToken, PositionEmbedding = _layers()
    grid = size // PATCH
    inputs = keras.Input((size, size, 3), name="pixels")
    x = layers.Conv2D(WIDTH, PATCH, strides=PATCH, name="patches")(inputs)
    x = layers.Reshape((grid * grid, WIDTH), name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(blocks):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name=f"block{block}_attention")(h, h)
        x = layers.Add(name=f"block{block}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        h = layers.Dense(4 * WIDTH, activation="gelu", name=f"block{block}_mlp1")(h)
        h = layers.Dense(WIDTH, name=f"block{block}_mlp2")(h)
        x = layers.Add(name=f"block{block}_add2")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    outputs = layers.Dense(CLASSES, name="logits")(x[:, 0])
    return keras.Model(inputs, outputs, name="vit"), size


def cases(model, x, y, batch, jit_compile=None):
    """``{name: fn}``: predict and the transformer methods through the public API."""
    options = {"batch_size": batch, "verbose": 0}
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    return {
        "predict": lambda: model.predict(x, batch_size=batch, verbose=0),
        "gradcam (tokens)": lambda: ke.gradcam(model, x, y, **options),
        "attention_rollout": lambda: ke.attention_rollout(model, x, y, **options),
        "transformer_attribution": lambda: ke.transformer_attribution(model, x, y, **options),
    }


def diagnostic_cases(model, x, jit_compile=None):
    """The compiled forward pass alone, and with the attention layers' taps."""
    import keras
    from keras import ops

    from keras_explainable import _attention

    if jit_compile is None:
        jit_compile = keras.backend.backend() == "jax"  # the engine's default
    taps, positions = _attention.attention_taps(model)
    options = {"jit_compile": jit_compile}
    plain = ke.backend.compile(lambda t: ke.backend.forward(model, t)[0], model, **options)

    def tapped(t):
        outputs, values = ke.backend.forward(model, t, taps)
        return outputs, [values[p] for p in positions]

    recorded = ke.backend.compile(tapped, model, **options)
    xt = ops.convert_to_tensor(x)

    def numpy(value):
        if isinstance(value, (list, tuple)):
            return [numpy(v) for v in value]
        return ops.convert_to_numpy(value)

    return {
        "forward step": lambda: numpy(plain(xt)),
        "forward + attention taps": lambda: numpy(recorded(xt)),
    }


def inputs(batch: int, seed: int, size: int = SIZE):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype("float32")
    return x, rng.integers(0, CLASSES, batch)
