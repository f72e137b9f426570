"""Token attributions (issue 15 A): token ids explained at their embedding.

References: the backend's own autograd on the layers after the embedding
(Gradients = L2 norm, Gradient x Input = dot product), Integrated Gradients'
completeness against two forward passes, occlusion against re-scoring each
masked sequence by hand; padding is exactly 0; the bad inputs' errors. Tiny
models built once per module (JAX compiles are the cost).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable import _tokens
from keras_explainable.methods import gradient, meta, perturbation

from .conftest import BACKEND
from .models import build_seeded, jitted, seeded, uninitialized, weights_of

VOCAB = ["[PAD]", "[UNK]", "the", "movie", "was", "great", "bad", "not", "fun"]
T, U = 6, 3
X = np.array([[2, 3, 4, 5, 0, 0], [7, 8, 2, 6, 3, 1]], "int32")
Y = np.array([1, 2])
_np = keras.ops.convert_to_numpy  # torch outputs may require grad: not np.asarray


def _rest_gradient(rest, embeddings, units):
    """``d sum_b rest(e)[b, units[b]] / d e`` with the backend's own autograd (jitted on JAX)."""
    rows = np.arange(len(units))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        e = tf.constant(embeddings)
        with tf.GradientTape() as tape:
            tape.watch(e)
            score = tf.reduce_sum(tf.gather_nd(rest(e), np.stack([rows, units], 1)))
        return tape.gradient(score, e).numpy()
    if BACKEND == "jax":
        import jax

        return _np(jax.jit(jax.grad(lambda e: rest(e)[rows, units].sum()))(embeddings))
    import torch

    e = torch.tensor(embeddings, requires_grad=True)
    (grad,) = torch.autograd.grad(rest(e)[rows, units].sum(), e)
    return grad.numpy()


def _build(kind):
    ids = keras.Input((T,), dtype="int32")
    e = layers.Embedding(len(VOCAB), 4, name="emb")(ids)
    if kind == "conv":
        h = layers.Conv1D(5, 3, padding="same", activation="tanh", name="conv")(e)
        h = layers.GlobalAveragePooling1D()(h)
    else:
        h = layers.LSTM(5)(e)
    return keras.Model(ids, layers.Dense(U, name="head")(h))


def _parts(model):
    embedding = model.get_layer("emb")
    rest = keras.Sequential(model.layers[2:])
    return embedding, rest


def _np_rest(model, e):
    """The conv model after its embedding, in float64 numpy: (B, T, 4) -> (B, U)."""
    (kernel, bias), (dense, dense_bias) = (weights_of(model.get_layer(n)) for n in ("conv", "head"))
    padded = np.pad(np.asarray(e, np.float64), ((0, 0), (1, 1), (0, 0)))
    pre = sum(padded[:, i : i + e.shape[1]] @ kernel[i] for i in range(3)) + bias
    return np.tanh(pre).mean(1) @ dense + dense_bias


def _embed(model, ids):
    return weights_of(model.get_layer("emb"))[0][ids]


def _score(model, x):
    return _np_rest(model, _embed(model, x))[np.arange(len(x)), Y]


ONE = np.array([[2, 3, 4, 1, 0, 0]], "int32")  # "the movie was <b>fun" (explain_prediction's)


@pytest.fixture(scope="module")
def conv():
    return build_seeded(lambda: _build("conv"), 3)


@pytest.fixture(scope="module")
def conv_maps(conv):
    """Every method's maps on the conv model, from one program (one compile on JAX)."""

    def run(ids, one):
        units = Y[:, None]
        noisy = meta.smooth(gradient.gradients, repetitions=3, noise=0.5, seed=1)
        return {
            "gradients": gradient.gradients(conv, ids, units),
            "gradients_x_inputs": gradient.gradients_x_inputs(conv, ids, units),
            "named": gradient.gradients_x_inputs(conv, ids, units, embedding="emb"),
            "ig_pad": gradient.integrated_gradients(
                conv, ids, units, n_steps=64, baseline="pad", pad_id=0
            ),
            "ig_zeros": gradient.integrated_gradients(conv, ids, units, n_steps=64),
            "occlusion": perturbation.occlusion(conv, ids, units, window=1, baseline=1),
            "occlusion_pad": perturbation.occlusion(conv, ids, units, window=2, stride=2, pad_id=0),
            "smoothgrad": noisy(conv, ids, units, pad_id=0),
            "one": gradient.gradients_x_inputs(conv, one, np.array([[2]])),
        }

    _tokens.find_embedding(conv, X)  # found by one eager probe (cached), as ke.explain does
    results = jitted(run, conv)(X, ONE)
    return {k: tuple(_np(v) for v in pair) for k, pair in results.items()}


@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_gradients_and_gradient_x_input_equal_autograd_at_the_embedding(conv, conv_maps, kind):
    if kind == "conv":
        model, norms, dots = conv, conv_maps["gradients"][1], conv_maps["gradients_x_inputs"][1]
    else:  # the LSTM's scan: one jitted program on JAX (eagerly, it compiled op by op)
        model = build_seeded(lambda: _build("lstm"), 3)
        units = Y[:, None]
        _tokens.find_embedding(model, X)  # one eager probe (cached), as ke.explain does

        def both(ids):
            return (gradient.gradients(model, ids, units)[1],
                    gradient.gradients_x_inputs(model, ids, units)[1])  # fmt: skip

        norms, dots = map(_np, jitted(both, model)(X))
    _, rest = _parts(model)
    e = _embed(model, X).astype("float32")
    grad = _rest_gradient(rest, e, Y)
    np.testing.assert_allclose(norms[..., 0], np.linalg.norm(grad, axis=-1), atol=1e-6)
    np.testing.assert_allclose(dots[..., 0], (grad * e).sum(-1), atol=1e-6)


def test_integrated_gradients_completeness_and_padding(conv, conv_maps):
    x_pad = np.where(X != 0, 0, X)  # the pad baseline at the real tokens
    maps = conv_maps["ig_pad"][1]
    assert maps.shape == (2, T, 1)
    difference = _score(conv, X) - _score(conv, x_pad)
    np.testing.assert_allclose(maps[..., 0].sum(1), difference, rtol=0.01)
    assert np.all(maps[0, 4:] == 0.0)  # padding (pad_id) is exactly 0
    # zeros baseline: f(x) - f(zero embeddings), the rest of the network on zeros
    zero = _np_rest(conv, np.zeros((2, T, 4)))[np.arange(2), Y]
    np.testing.assert_allclose(conv_maps["ig_zeros"][1][..., 0].sum(1), _score(conv, X) - zero,
                               rtol=0.01)  # fmt: skip


def test_occlusion_equals_rescoring_each_masked_sequence(conv, conv_maps):
    clean = _score(conv, X)
    expected = np.stack(
        [clean - _score(conv, np.where(np.arange(T) == t, 1, X)) for t in range(T)], 1
    )
    np.testing.assert_allclose(conv_maps["occlusion"][1][..., 0], expected, atol=1e-5)
    hidden = [clean - _score(conv, np.where((np.arange(T) // 2 == w) & (X != 0), 0, X))
              for w in range(T // 2)]  # fmt: skip
    expected = np.repeat(np.stack(hidden, 1), 2, axis=1) * (X != 0)
    np.testing.assert_allclose(conv_maps["occlusion_pad"][1][..., 0], expected, atol=1e-5)


def test_smoothgrad_on_tokens(conv, conv_maps):
    scores, maps = conv_maps["smoothgrad"]
    np.testing.assert_allclose(scores[:, 0], _score(conv, X), atol=1e-6)
    assert not np.allclose(maps, conv_maps["gradients"][1])  # the noise is applied
    assert np.all(maps[0, 4:] == 0.0)


def test_embedding_named_and_model_untouched(conv, conv_maps):
    before = X.copy()
    np.testing.assert_array_equal(conv_maps["named"][1], conv_maps["gradients_x_inputs"][1])
    np.testing.assert_array_equal(X, before)
    assert all("call" not in vars(layer) for layer in conv.layers)  # no tap left behind
    with pytest.raises(ValueError, match="'embd'.*Did you mean 'emb'"):
        gradient.gradients(conv, X, Y[:, None], embedding="embd")


def _encode(text):
    index = {w: i for i, w in enumerate(VOCAB)}
    return [index.get(w, 1) for w in text.lower().split()]


def test_explain_prediction_on_a_sentence(conv, conv_maps):
    explanation = ke.explain_prediction(
        conv, "the movie was <b>fun", preprocessor=_encode, id_to_token=VOCAB.__getitem__,
        method="gradients_x_inputs", targets=2,
    )  # fmt: skip
    assert explanation.tokens[:4] == ("the", "movie", "was", "[UNK]")
    assert explanation.token_mask == (True,) * 4 + (False,) * 2
    weights = explanation.weights[0]
    np.testing.assert_allclose(weights[:4], conv_maps["one"][1][0, :4, 0], atol=1e-6)
    assert np.all(weights[4:] == 0.0)
    page = explanation._repr_html_()
    assert page.count("<span") == 4 and "rgba(" in page and explanation._repr_png_() is None
    assert "[UNK]" in page and "<b>fun" not in page  # the tokens, escaped
    html = ke.text.highlight(["em", "##bed", "ding"], [1.0, -3.0, 2.0], merge_words=True)
    assert html.count("<span") == 2 and ">embed<" in html  # -2 against, 2 for
    assert "rgba(220, 40, 40, 1.000)" in html and "rgba(0, 160, 60, 1.000)" in html


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: ke.gradients(m, X.astype("float32"), Y, verbose=0), TypeError,
         "float32 values.*takes token ids.*astype"),
        (lambda m: ke.gradients(m, X + 7, Y, verbose=0), ValueError,
         "token id 15, outside the vocabulary of the embedding 'emb' \\(ids 0 to 8\\)"),
        (lambda m: ke.explain_prediction(m, "  ", preprocessor=_encode), ValueError, "empty"),
        (lambda m: ke.explain_prediction(m, "the movie", preprocessor=lambda t: [[0.5, 1.5]]),
         TypeError, "float64 values; token ids are integers"),
        (lambda m: ke.explain_prediction(m, "the movie", preprocessor=lambda t: {"ids": [2]}),
         TypeError, "without 'token_ids'"),
        (lambda m: ke.explain_prediction(m, "the movie", preprocessor=_encode, method="scorecam"),
         ValueError, "does not explain token ids"),
    ],
)  # fmt: skip
def test_bad_inputs(conv, call, error, match):
    with pytest.raises(error, match=match):
        call(conv)


def test_no_embedding_layer_says_what_was_looked_for():
    ids = keras.Input((T,), dtype="int32")
    h = layers.Dense(2)(layers.Lambda(lambda v: keras.ops.one_hot(v, 9))(ids))
    model = keras.Model(ids, layers.Flatten()(h))
    with pytest.raises(ValueError, match="No embedding layer.*keras.layers.Embedding.*embedding="):
        gradient.gradients(model, X, Y[:, None])


# --------------------------------------------------------------------- KerasHub BERT


@pytest.fixture(scope="module")
def bert():
    keras_hub = pytest.importorskip("keras_hub")
    with uninitialized():  # the task compiles (an optimizer) in its constructor: outside
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
            max_sequence_length=16,
        )  # fmt: skip
    model = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None, activation=None
    )
    return seeded(model, 5)


def _bert_inputs():
    mask = np.array([[1] * 5 + [0] * 3, [1] * 7 + [0]], "int32")
    ids = np.array([[2, 15, 27, 9, 3, 0, 0, 0], [2, 8, 8, 41, 66, 7, 3, 0]], "int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}


def test_bert_dict_inputs_completeness_padding_and_occlusion(bert):
    x = _bert_inputs()
    y = np.array([1, 0])
    real = x["padding_mask"] == 1
    # through ke.explain: the dict goes to the model as a dict, one map for token_ids
    _, maps = ke.gradients_x_inputs(bert, x, y, postprocessing=None, verbose=0)
    assert maps["padding_mask"] is None and maps["segment_ids"] is None

    baseline = dict(x, token_ids=np.where(real, 0, x["token_ids"]))
    hidden = [
        dict(x, token_ids=np.where((np.arange(8) == t) & real, 4, x["token_ids"])) for t in (1, 4)
    ]  # two positions re-scored by hand (a real token in both rows)
    rescored = {k: np.concatenate([d[k] for d in (x, baseline, *hidden)]) for k in x}

    def methods(inputs, rescored):  # eager on TF/torch; one jitted program on JAX
        units = y[:, None]
        return (
            gradient.gradients_x_inputs(bert, inputs, units)[1]["token_ids"],
            gradient.integrated_gradients(bert, inputs, units, n_steps=64, baseline="pad")[1],
            perturbation.occlusion(bert, inputs, units, window=1, baseline=4)[1],
            bert(rescored),
        )

    # the embedding layer was found by ke.explain above (one eager probe, cached)
    direct, ig, occluded, logits = jitted(methods, bert)(x, rescored)
    assert ig["padding_mask"] is None and occluded["segment_ids"] is None
    np.testing.assert_allclose(maps["token_ids"], _np(direct), atol=1e-6)
    assert np.all(maps["token_ids"][..., 0][~real] == 0.0)
    attributions = _np(ig["token_ids"])[..., 0]
    assert np.all(attributions[~real] == 0.0)
    clean, at_baseline, *at_hidden = _np(logits).reshape(4, 2, 2)[:, [0, 1], y]
    np.testing.assert_allclose(attributions.sum(1), clean - at_baseline, rtol=0.01)
    for t, score in zip((1, 4), at_hidden):
        np.testing.assert_allclose(_np(occluded["token_ids"])[:, t, 0], clean - score, atol=1e-5)
    assert np.all(_np(occluded["token_ids"])[..., 0][~real] == 0.0)
