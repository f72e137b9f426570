"""CAM methods on token layers: patch grids of vision transformers, token axes of sequences.

References: a token-grid Grad-CAM / HiResCAM / Ablation-CAM of the tiny ViT of
``tests/vit.py`` against numpy on the reshaped tokens, with ``d score / d
tokens`` from the framework's own autograd through the part of the model after
the explained layer (``keras.Model(tokens, logits)``); a token layer that is a
reshaped conv map against Grad-CAM on the map; a sequence model against the
closed form of Grad-CAM before ``GlobalAveragePooling1D -> Dense``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import _taps
from keras_explainable._layer_naming import _expose, describe_layer
from keras_explainable._token_grid import TokenLayout, check_options, token_layout
from tests import vit
from tests.models import build_seeded, jitted

CAMS = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
        "ablationcam")  # fmt: skip


def state(model):
    """Everything explaining must leave as it was: weights, attributes, the layers' calls."""
    layers = model._flatten_layers(include_self=True)
    attributes = {id(la): (sorted(la.__dict__), la.__dict__.get("call")) for la in layers}
    weights = [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]
    return attributes, weights


def assert_unchanged(model, before):
    attributes, weights = state(model)
    assert attributes == before[0]
    for now, then in zip(weights, before[1]):
        np.testing.assert_array_equal(now, then)
    assert _taps.installed_layers() == 0


def test_token_layout_guess_and_overrides():
    assert token_layout(17, (32, 32), (8, 8)) == TokenLayout(1, (4, 4))  # ViT: class token
    assert token_layout(18, (32, 32), (8, 8)) == (2, (4, 4))  # DeiT: + distillation token
    assert token_layout(21, (32, 32), (8, 8)) == (5, (4, 4))  # DINOv2: + 4 registers
    assert token_layout(25, (32, 48), (8, 8)) == (1, (4, 6))  # not square
    assert token_layout(16, (32, 32), (4, 4)) == (0, (4, 4))  # Swin after one patch merge
    assert token_layout(197, (224, 224)) == (1, (14, 14))  # no patch conv: the input size
    assert token_layout(9, (32, 32), (16, 16)) == (5, (2, 2))  # the model's stride first
    assert token_layout(9, (32, 32)) == (0, (3, 3))  # ... without it, the fewest prefix tokens
    assert token_layout(17, (32, 32), token_grid=(2, 8)) == (1, (2, 8))
    assert token_layout(17, (32, 32), prefix_tokens=1) == (1, (4, 4))
    with pytest.raises(ValueError, match=r"'blocks' outputs 17 tokens.*not 0 prefix.*4x5"):
        token_layout(17, (32, 32), token_grid=(4, 5), prefix_tokens=0, name="blocks")
    with pytest.raises(ValueError, match=r"after 3 prefix tokens, 14 patches fit no grid"):
        token_layout(17, (32, 32), (8, 8), prefix_tokens=3)
    with pytest.raises(ValueError, match=r"fit no patch grid.*token_grid=\(gh, gw\)"):
        token_layout(3, (64, 64))
    with pytest.raises(ValueError, match="token_grid=.* has 1 axes but the input has 2"):
        token_layout(17, (32, 32), token_grid=(16,))
    for grid, prefix in (((4, 0), None), ("4x4", None), (None, -1), (None, 1.5)):
        with pytest.raises(ValueError, match="token_grid is|prefix_tokens is"):
            check_options(grid, prefix)


# --------------------------------------------------------------------------- a tiny ViT


@pytest.fixture(scope="module")
def model():
    return vit.tiny_vit()  # 12 x 12 inputs, 4 x 4 patches: a class token + 3 x 3 patches


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype("float32")


def native_gradient(head, tokens, units):
    """``d head(tokens)[b, units[b]] / d tokens`` by the backend's own autograd."""
    backend, rows = keras.backend.backend(), np.arange(len(tokens))
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.constant(tokens)
        with tf.GradientTape() as tape:
            tape.watch(value)
            score = tf.reduce_sum(tf.gather(head(value), units, batch_dims=1))
        return tape.gradient(score, value).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.jit(jax.grad(lambda t: head(t)[rows, units].sum()))(tokens))
    import torch

    value = torch.tensor(tokens, requires_grad=True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(head(value)[rows, units].sum(), value)
    return gradient.cpu().numpy()


def test_vit_token_grid_cams_equal_numpy(model, x):
    before = state(model)
    units = np.array([2, 0])
    exposed = ke.inspection.expose(model)
    (tap,) = exposed.activation_taps  # the class token is pooled: the last block's input
    assert (tap.layer.name, tap.link) == ("block0_add2", "output")
    assert describe_layer(model, tap) == "block0_add2"  # what explain_prediction reports

    tokens_model = keras.Model(model.inputs[0], model.get_layer("block0_add2").output)
    head = keras.Model(model.get_layer("block0_add2").output, model.outputs[0])

    def run(inputs):  # one program on JAX (eagerly, JAX compiled every op)
        cams = ke.methods.cams
        hires = cams.hirescam(exposed, inputs, units)[1]
        ablation = cams.ablationcam(exposed, inputs, units)[1]
        outputs = (hires, ablation, tokens_model(inputs), model(inputs))
        return (*cams.gradcam(exposed, inputs, units), *outputs)

    scores, maps, hires, ablation, tokens, logits = map(
        keras.ops.convert_to_numpy, jitted(run, model)(x)
    )
    tokens = tokens.astype("float32")  # (2, 10, 8)
    gradient = native_gradient(head, tokens, units)
    a = tokens[:, 1:].reshape(2, 3, 3, 8)  # the class token dropped, the rest on the grid
    g = gradient[:, 1:].reshape(2, 3, 3, 8)

    expected = np.einsum("bhwk,bk->bhw", a, g.mean(axis=(1, 2)))
    assert tuple(maps.shape) == (2, 3, 3, 1)
    np.testing.assert_allclose(maps[..., 0], expected, atol=1e-5)
    np.testing.assert_allclose(scores[:, 0], logits[[0, 1], units], rtol=1e-5)
    np.testing.assert_allclose(hires[..., 0], (a * g).sum(-1), atol=1e-5)

    # Ablation-CAM: channel k zeroed in every token (the class token too), then the head
    ablated = np.repeat(tokens[:, None], 8, 1) * (1 - np.eye(8, dtype="float32"))[None, :, None, :]
    dropped = keras.ops.convert_to_numpy(jitted(head, model)(ablated.reshape(-1, 10, 8)))
    dropped = dropped.reshape(2, 8, -1)
    y = logits[[0, 1], units][:, None]
    weights = (y - dropped[[0, 1], :, units]) / y
    expected = np.einsum("bhwk,bk->bhw", a, weights)
    np.testing.assert_allclose(ablation[..., 0], expected, atol=1e-4, rtol=1e-4)
    assert_unchanged(model, before)


def test_token_options_and_their_errors(model, x):
    def gradcam(exposed):  # jitted on JAX: the errors come from the trace, nothing compiles
        return jitted(lambda inputs: ke.methods.cams.gradcam(exposed, inputs, [0])[1], model)

    exposed = ke.inspection.expose(model, "block0_add2", token_grid=(3, 3))
    assert (exposed.token_grid, exposed.prefix_tokens) == ((3, 3), None)
    maps = gradcam(exposed)(x[:1])
    assert tuple(maps.shape) == (1, 3, 3, 1)
    wrong = ke.inspection.expose(model, "block0_add2", token_grid=(4, 4))
    with pytest.raises(ValueError, match=r"'block0_add2' outputs 10 tokens.*4x4.*token_grid"):
        gradcam(wrong)(x[:1])
    with pytest.raises(ValueError, match="prefix_tokens is the number of tokens"):
        ke.inspection.expose(model, "block0_add2", prefix_tokens=-1)
    with pytest.raises(ValueError, match=r"outputs 10 tokens: after 2 prefix tokens, 8 patches"):
        gradcam(ke.inspection.expose(model, prefix_tokens=2))(x[:1])
    named = _expose(model, "block0_add2", None, prefix_tokens=1)  # explain_prediction's, CLI's
    assert named.prefix_tokens == 1
    assert named is _expose(model, "block0_add2", None, prefix_tokens=1)  # cached
    again = _expose(named, None, None, token_grid=(3, 3))  # an exposed model: its own layer
    assert again.activation_taps == named.activation_taps and again.token_grid == (3, 3)
    with pytest.raises(ValueError, match="takes no `token_grid` / `prefix_tokens`"):
        ke.explain_prediction(model, x[0], method="gradients", token_grid=(3, 3))
    assert _taps.installed_layers() == 0


def test_reshaped_conv_tokens_equal_the_conv_map():
    """Swin-style (batch, h*w, c) tokens: Grad-CAM on them is Grad-CAM on the map."""

    def build():
        inputs = keras.Input((8, 12, 3))
        features = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)
        tokens = keras.layers.Reshape((-1, 4), name="tokens")(features)
        mixed = keras.layers.Dense(4, activation="tanh", name="mix")(tokens)
        product = keras.layers.Multiply()([mixed, tokens])
        pooled = keras.layers.GlobalAveragePooling1D(name="pool")(product)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled))

    model = build_seeded(build, 1)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 12, 3)).astype("float32")
    cams, on = ke.methods.cams, ke.inspection.expose
    on_tokens, on_map = jitted(  # one program on JAX
        lambda inputs: [cams.gradcam(on(model, n), inputs, [1, 2])[1] for n in ("tokens", "conv")],
        model,
    )(x)
    assert tuple(on_tokens.shape) == tuple(on_map.shape) == (2, 4, 6, 1)  # no prefix: 4 x 6
    np.testing.assert_allclose(*map(keras.ops.convert_to_numpy, (on_tokens, on_map)), atol=1e-5)
    _, maps = ke.gradcam(model, x, [1, 2], verbose=0)  # the engine: the default layer, resized
    assert maps.shape == (2, 8, 12, 1) and np.isfinite(maps).all()


def test_sequence_tokens_keep_their_axis():
    """Token ids -> Embedding -> Conv1D -> GAP -> Dense: maps (batch, tokens, units)."""

    def build():
        inputs = keras.Input((7,), dtype="int32")
        embedded = keras.layers.Embedding(20, 6, name="embed")(inputs)
        features = keras.layers.Conv1D(5, 3, padding="same", name="conv")(embedded)
        pooled = keras.layers.GlobalAveragePooling1D(name="pool")(features)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled))

    model = build_seeded(build, 2)
    features = keras.Model(model.inputs[0], model.get_layer("conv").output)
    ids = np.random.default_rng(2).integers(0, 20, (2, 7)).astype("int32")
    units = np.array([[0, 2], [1, 0]])
    run = jitted(lambda i: (ke.methods.cams.gradcam(model, i, units)[1], features(i)), model)
    maps, a = map(keras.ops.convert_to_numpy, run(ids))  # a: (2, 7, 5)
    kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)  # (5, 3)
    w = np.stack([kernel[:, u].T for u in units]) / 7  # Grad-CAM before GAP -> Dense
    assert tuple(maps.shape) == (2, 7, 2)
    np.testing.assert_allclose(maps, np.einsum("btk,buk->btu", a, w), atol=1e-5)
    exposed = ke.inspection.expose(model, "conv", token_grid=(7,))
    with pytest.raises(ValueError, match="input is a sequence.*Drop them"):
        jitted(lambda i: ke.methods.cams.gradcam(exposed, i, units), model)(ids)


def test_non_square_vit_grid():
    def build():
        inputs = keras.Input((8, 12, 3))
        tokens = keras.layers.Conv2D(4, 4, strides=4, name="patches")(inputs)
        tokens = vit.ClassToken(name="class_token")(keras.layers.Reshape((-1, 4))(tokens))
        mixed = keras.layers.MultiHeadAttention(1, 4, name="attention")(tokens, tokens)
        mixed = keras.layers.Add(name="block")([tokens, mixed])
        pooled = keras.layers.LayerNormalization(name="norm")(mixed)[:, 0]
        return keras.Model(inputs, keras.layers.Dense(2, name="logits")(pooled))

    model = build_seeded(build, 3)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 8, 12, 3)).astype("float32")
    maps = jitted(lambda inputs: ke.methods.cams.gradcam(model, inputs, [1])[1], model)(x)
    assert tuple(maps.shape) == (1, 2, 3, 1)  # 2 x 3 patches, the class token dropped
