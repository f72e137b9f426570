"""ke.text.generation_attribution and ke.targets.continuation against numpy.

One tiny causal LM per module (token ids -> Embedding -> causal Conv1D -> tanh
-> Dense logits at every position), its forward pass and the gradient of a
token's log-probability written out in numpy: Gradient x Input, occlusion (the
explicit re-scoring of every occluded sequence) and greedy decoding are checked
against it, Integrated Gradients by completeness, and each generated position
against the same token attributed alone.
"""

import keras
import numpy as np
import pytest

import keras_explainable as ke

from . import models

VOCABULARY, DIM, FILTERS = 13, 4, 5
PROMPT = np.array([3, 7, 1, 9, 4])
TARGET = np.array([2, 11, 5])


def _counting_layer():
    class Counting(keras.layers.Layer):
        """Passes its input through and counts its calls (runs, or traces when compiled)."""

        calls = 0

        def call(self, x):
            type(self).calls += 1
            return x

    return Counting(name="counting")


@pytest.fixture(scope="module")
def lm():
    with models.uninitialized():  # JAX: no initializer compiles, the weights are set below
        ids = keras.Input((None,), dtype="int32", name="token_ids")
        x = keras.layers.Embedding(VOCABULARY, DIM, name="embedding")(ids)
        x = _counting_layer()(x)
        x = keras.layers.Conv1D(FILTERS, 2, padding="causal", activation="tanh", name="mix")(x)
        logits = keras.layers.Dense(VOCABULARY, name="logits")(x)
        model = keras.Model(ids, logits, name="tiny_lm")
    models.set_seeded_weights(model, seed=0, scale=0.8)
    if keras.backend.backend() == "jax":
        keras.backend.clear_session()  # see models.seeded
    return model


def np_parts(model, ids, embedded=None):
    """Embeddings, pre-activations, hidden states and logits of one sequence (float64)."""
    table, kernel, bias, weights, offset = (np.float64(w) for w in model.get_weights())
    e = table[ids] if embedded is None else embedded
    shifted = np.vstack([np.zeros((1, DIM)), e[:-1]])  # causal padding: position i sees i-1, i
    pre = shifted @ kernel[0] + e @ kernel[1] + bias
    hidden = np.tanh(pre)
    return e, pre, hidden, hidden @ weights + offset


def np_log_prob(model, ids, position, token, embedded=None):
    """log p(token | ids[: position]) read at the logits of position - 1."""
    logits = np_parts(model, ids, embedded)[3][position - 1]
    return logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()


def np_gradient_x_input(model, ids, position, token):
    """Gradient x Input of log p(ids[position] = token) at every token's embedding."""
    kernel, weights = np.float64(model.get_weights()[1]), np.float64(model.get_weights()[3])
    e, _, hidden, logits = np_parts(model, ids)
    row = logits[position - 1]
    softmax = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
    d_hidden = weights[:, token] - weights @ softmax
    d_pre = d_hidden * (1 - hidden[position - 1] ** 2)
    d_e = np.zeros_like(e)
    d_e[position - 1] += kernel[1] @ d_pre
    if position >= 2:
        d_e[position - 2] += kernel[0] @ d_pre
    return (e * d_e).sum(-1)


@pytest.fixture(scope="module")
def explained(lm):
    """Gradient x Input of a given 3-token continuation (shared by two tests)."""
    return ke.text.generation_attribution(
        lm, PROMPT, target_text=TARGET, id_to_token=lambda i: f"w{i}<"
    )


def test_gradient_x_input_equals_numpy_for_every_generated_token(lm, explained):
    result = explained
    sequence = np.concatenate([PROMPT, TARGET])
    assert result.attributions.shape == (3, 8)
    np.testing.assert_array_equal(result.context_ids, sequence)
    for j, token in enumerate(TARGET):
        position = len(PROMPT) + j
        expected = np_gradient_x_input(lm, sequence, position, token)
        np.testing.assert_allclose(result.attributions[j], expected, atol=1e-5)
        log_prob = np_log_prob(lm, sequence, position, token)
        assert result.log_probs[j] == pytest.approx(log_prob, abs=1e-5)
    # a causal model: nothing at or after the generated token
    assert np.all(result.attributions[~result.context_mask] == 0)


def test_greedy_generation_follows_the_argmax_and_each_row_equals_the_token_alone(lm):
    result = ke.text.generation_attribution(lm, PROMPT, max_new_tokens=3)
    sequence = list(PROMPT)
    for _ in range(3):  # greedy decoding in numpy
        sequence.append(int(np.argmax(np_parts(lm, np.array(sequence))[3][-1])))
    np.testing.assert_array_equal(result.context_ids, sequence)
    assert result.generated_ids.tolist() == sequence[len(PROMPT) :]
    # row j = the j-th generated token explained alone, after its own prefix only
    j = 1
    prefix = np.asarray(sequence[: len(PROMPT) + j])
    alone = ke.text.generation_attribution(lm, prefix, target_text=[sequence[len(PROMPT) + j]])
    np.testing.assert_allclose(
        result.attributions[j, : len(prefix) + 1], alone.attributions[0], atol=1e-5
    )


def test_occlusion_equals_rescoring_every_occluded_sequence(lm):
    target = TARGET
    result = ke.text.generation_attribution(
        lm, PROMPT, target_text=target, method="occlusion", baseline=12
    )
    sequence = np.concatenate([PROMPT, target])
    expected = np.zeros((len(target), len(sequence)))
    for j, token in enumerate(target):
        position = len(PROMPT) + j
        clean = np_log_prob(lm, sequence, position, token)
        for s in range(len(sequence)):
            occluded = sequence.copy()
            occluded[s] = 12
            expected[j, s] = clean - np_log_prob(lm, occluded, position, token)
    np.testing.assert_allclose(result.attributions, expected, atol=1e-5)


def test_integrated_gradients_complete_within_one_percent_at_64_steps(lm):
    target = TARGET
    result = ke.text.generation_attribution(
        lm, PROMPT, target_text=target, method="integrated_gradients", n_steps=64
    )
    sequence = np.concatenate([PROMPT, target])
    zeros = np.zeros((len(sequence), DIM))  # the default baseline: zero embeddings
    for j, token in enumerate(target):
        position = len(PROMPT) + j
        difference = np_log_prob(lm, sequence, position, token) - np_log_prob(
            lm, sequence, position, token, embedded=zeros
        )
        assert result.attributions[j].sum() == pytest.approx(difference, rel=0.01)


def test_html_renders_every_token_and_the_heat_table(explained):
    page = explained.to_html()
    assert page.count("<tr>") == 1 + 3  # the header and one row per generated token
    assert "w3&lt;" in page and "w3<" not in page  # token strings escaped
    assert explained.tokens[:2] == ("w3<", "w7<")
    assert explained.generated_tokens == ("w2<", "w11<", "w5<")
    # one highlighted context per generated token
    assert page.count("keras-explainable-text") == 3
    assert "&#x27;w11&lt;&#x27;" in page


def test_bad_input_is_a_clear_error(lm):
    with pytest.raises(ValueError, match="empty"):
        ke.text.generation_attribution(lm, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="out of the vocabulary"):
        ke.text.generation_attribution(lm, [3, VOCABULARY + 4], max_new_tokens=2)
    with pytest.raises(ValueError, match="out of the vocabulary"):
        ke.text.generation_attribution(lm, [3, 4], target_text=[-1])
    with pytest.raises(ValueError, match="either max_new_tokens"):
        ke.text.generation_attribution(lm, [3, 4])
    with pytest.raises(ValueError, match="max_new_tokens"):
        ke.text.generation_attribution(lm, [3, 4], max_new_tokens=0)
    with pytest.raises(TypeError, match="no tokenizer"):
        ke.text.generation_attribution(lm, "a prompt", max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):  # a string, tokenized
        ke.text.generation_attribution(lm, " ", max_new_tokens=2, tokenizer=str.split)
    with pytest.raises(ValueError, match="attributes with"):
        ke.text.generation_attribution(lm, [3, 4], max_new_tokens=1, method="gradcam")
    classifier = keras.Sequential(
        [keras.Input((None,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 3),
         keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(VOCABULARY)]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"\(batch, length, vocabulary\)"):
        ke.text.generation_attribution(classifier, [3, 4], max_new_tokens=1)


def test_every_generated_position_is_explained_by_one_forward_pass(lm):
    counting = type(lm.get_layer("counting"))

    def calls(count):  # lengths no other test uses: nothing cached for them yet
        before = counting.calls
        ke.text.generation_attribution(lm, PROMPT[:2], target_text=np.arange(1, count + 1))
        return counting.calls - before

    # 1 or 9 positions: the same forward passes (or traces); the backward pass is vectorised
    assert calls(1) == calls(9)


def test_kerashub_gpt2_generation_from_a_small_config():
    """GPT2CausalLM (random weights, dict inputs, its token embedding called twice: ids ->
    vectors, then reversed into the logits): row j equals token j explained alone."""
    keras_hub = pytest.importorskip("keras_hub")
    with models.uninitialized():  # the task compiles (an optimizer) in its constructor: outside
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=24, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            max_sequence_length=16,
        )  # fmt: skip
    lm = models.seeded(keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None), 4)
    prompt, continuation = np.array([5, 17, 2, 9]), np.array([11, 3, 20])
    result = ke.text.generation_attribution(lm, prompt, target_text=continuation)
    sequence = result.context_ids
    logits = keras.ops.convert_to_numpy(
        lm({"token_ids": sequence[None], "padding_mask": np.ones((1, 7), "int32")})
    )[0].astype(np.float64)
    peak = logits.max(-1, keepdims=True)
    log_softmax = logits - peak - np.log(np.exp(logits - peak).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        result.log_probs, log_softmax[np.arange(3, 6), continuation], atol=1e-4
    )
    assert np.all(np.isfinite(result.attributions))
    assert np.all(result.attributions[~result.context_mask] == 0)
    assert np.any(result.prompt_attributions != 0)
    alone = ke.text.generation_attribution(lm, sequence[:5], target_text=sequence[5:6])
    np.testing.assert_allclose(result.attributions[1, :6], alone.attributions[0], atol=1e-5)
