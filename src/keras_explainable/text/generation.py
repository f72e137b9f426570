"""Generation attribution: which prompt tokens drove each token a causal LM generated.

:func:`generation_attribution` generates greedily (or takes a given
continuation), then explains the log-probability of every generated token by
every token before it, with one explaining step over the whole sequence:
``ke.targets.continuation()`` makes each generated position a unit, so the
backends differentiate all of them in one vectorised backward pass (occlusion:
one batched sweep), compiled once by the engine like every method.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np

from .. import engine, targets
from .._layers import model_inputs
from ..engine import multi
from ..engine.step import get_scores_step, run_padded
from ..methods import registry
from ._html import colour, highlight
from ._preprocess import TextEncoder

__all__ = ["GenerationAttribution", "generation_attribution"]

#: the methods a generation can be attributed with (registry names)
METHODS = ("gradients_x_inputs", "integrated_gradients", "occlusion")


@dataclasses.dataclass(frozen=True)
class GenerationAttribution:
    """What :func:`generation_attribution` returns.

    Attributes:
        attributions: ``(generated, context)`` float32: row ``j`` says how much
            each token of the sequence (prompt then generation) drove the
            log-probability of generated token ``j``. Columns at or after the
            token itself (``context_mask`` false) are 0 for a causal model.
        context_ids: the ``prompt + generated`` token ids.
        prompt_length: how many of them are the prompt.
        tokens: the context's token strings.
        log_probs: ``(generated,)`` the log-probability of each generated token.
        method: the registry name of the method used.
    """

    attributions: np.ndarray
    context_ids: np.ndarray
    prompt_length: int
    tokens: tuple[str, ...]
    log_probs: np.ndarray
    method: str

    @property
    def generated_ids(self) -> np.ndarray:
        return self.context_ids[self.prompt_length :]

    @property
    def generated_tokens(self) -> tuple[str, ...]:
        return self.tokens[self.prompt_length :]

    @property
    def prompt_tokens(self) -> tuple[str, ...]:
        return self.tokens[: self.prompt_length]

    @property
    def context_mask(self) -> np.ndarray:
        """``(generated, context)`` bool: the tokens each generated token could see."""
        rows = np.arange(len(self.generated_ids))[:, None]
        return np.arange(len(self.context_ids))[None, :] < self.prompt_length + rows

    @property
    def prompt_attributions(self) -> np.ndarray:
        """``(generated, prompt)``: the attributions to the prompt tokens only."""
        return self.attributions[:, : self.prompt_length]

    def to_html(self, merge_words: bool = False) -> str:
        """The heat table (a row per generated token, a column per context token), then
        each generated token's context as highlighted text (green for, red against).

        Args:
            merge_words: in the highlighted texts, join word pieces into words
                (their weights summed; see :func:`keras_explainable.text.merge_pieces`).
        """
        texts = [
            highlight(
                self.tokens[: self.prompt_length + j],
                self.attributions[j, : self.prompt_length + j],
                merge_words=merge_words,
                title=f"-> {token!r} (log p = {self.log_probs[j]:.3f})",
            )
            for j, token in enumerate(self.generated_tokens)
        ]
        return (
            f"<div class='keras-explainable-generation'>{_heat_table(self)}{''.join(texts)}</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()


def generation_attribution(
    causal_lm,
    prompt,
    max_new_tokens: int | None = None,
    target_text=None,
    method: str = "gradient_x_input",
    tokenizer=None,
    id_to_token=None,
    jit_compile=None,
    **method_params,
) -> GenerationAttribution:
    """Attribute each generated token's log-probability to the tokens before it.

    The continuation is generated greedily (``max_new_tokens``) or given
    (``target_text``); then one teacher-forced forward pass over ``prompt +
    continuation`` scores ``log p(token_j | everything before it)`` for every
    generated position ``j`` (:func:`keras_explainable.targets.continuation`),
    and the method explains all positions in one step: one vectorised backward
    pass for the gradient methods (Integrated Gradients: one per path chunk),
    one batched sweep for occlusion.

    Args:
        causal_lm: a Keras model mapping token ids ``(batch, length)`` (or a
            dict ``{"token_ids", "padding_mask"}``, as KerasHub ``CausalLM``
            models take) to next-token logits ``(batch, length, vocabulary)``.
            It must be causal (position ``i`` sees tokens ``<= i``).
        prompt: the prompt: a string (tokenized with ``tokenizer``) or its
            token ids (a 1-D sequence of ints).
        max_new_tokens: how many tokens to generate greedily.
        target_text: instead, the continuation to explain: a string (tokenized
            on its own with ``tokenizer``) or token ids.
        method: ``"gradient_x_input"``, ``"integrated_gradients"`` or
            ``"occlusion"`` (any registry spelling of them).
        tokenizer: for string prompts: a KerasHub tokenizer or a callable
            ``text -> ids`` (see :class:`TextEncoder`); default the model's
            ``preprocessor.tokenizer`` when it has one.
        id_to_token: ``id -> str`` for the token strings; default the
            tokenizer's ``id_to_token``, else the ids.
        jit_compile: the engine's jit policy (``None``: XLA on JAX only).
        **method_params: the method's own parameters: ``n_steps``,
            ``baseline`` (``None``: zero embeddings, ``"pad"``, a token id) and
            ``chunk_size`` for Integrated Gradients; ``baseline`` (the token id
            that hides a token, default 0), ``window`` for occlusion.

    Returns:
        a :class:`GenerationAttribution`.

    Example:
        >>> result = ke.text.generation_attribution(lm, [5, 9, 2], max_new_tokens=4)
        >>> result.attributions.shape  # (generated, prompt + generated)
        (4, 7)
    """
    spec = registry.get(method)
    if spec.name not in METHODS:
        raise ValueError(
            f"generation_attribution attributes with {', '.join(METHODS)}; got "
            f"{method!r} ({spec.name})."
        )
    encoder = _encoder(causal_lm, tokenizer, id_to_token, prompt, target_text)
    prompt_ids = _token_ids(prompt, "prompt", encoder)
    layout = _Inputs(causal_lm)
    if (max_new_tokens is None) == (target_text is None):
        raise ValueError(
            "Pass either max_new_tokens=N (generate N tokens greedily) or target_text= (the "
            "continuation to explain, as token ids), not both and not neither."
        )
    layout.check_ids(prompt_ids, "prompt")
    if target_text is not None:
        continuation = _token_ids(target_text, "target_text", encoder)
        layout.check_ids(continuation, "target_text")
        sequence = np.concatenate([prompt_ids, continuation])
    else:
        count = _positive_int(max_new_tokens, "max_new_tokens")
        step = get_scores_step(causal_lm, activation=None, jit_compile=jit_compile)
        sequence = _greedy(step, layout, prompt_ids, count)
    generated = sequence[len(prompt_ids) :]
    # one step: every generated position is a unit of the continuation target
    log_probs, maps = engine.explain(
        spec.load(),
        causal_lm,
        layout.batch(sequence),
        generated[None],
        target=targets.continuation(),
        postprocessing=None,
        resizing=False,
        verbose=0,
        jit_compile=jit_compile,
        **method_params,
    )
    maps = layout.token_map(maps)  # (1, length, generated)
    names = encoder.token_strings(sequence)
    return GenerationAttribution(
        np.asarray(maps[0].T, np.float32),
        sequence,
        len(prompt_ids),
        names,
        np.asarray(log_probs[0], np.float32),
        spec.name,
    )


# --------------------------------------------------------------------------- inputs


class _Inputs:
    """How ``causal_lm`` takes a sequence: one id tensor, or KerasHub's dict."""

    def __init__(self, model):
        self.model = model
        inputs = model_inputs(model)
        self.names = [getattr(t, "name", None) for t in inputs]
        self.structured = len(inputs) > 1
        if self.structured and "token_ids" not in self.names:
            raise ValueError(
                f"'{model.name}' takes {len(inputs)} inputs {self.names}; generation_attribution "
                "explains a model of one token-id input or KerasHub's {'token_ids', "
                "'padding_mask'}."
            )
        ids_input = inputs[self.names.index("token_ids")] if self.structured else None
        if not self.structured and inputs:
            ids_input = inputs[0]
        self.length = None if ids_input is None else ids_input.shape[-1]
        self.vocabulary_size = _output_vocabulary(model)

    def batch(self, sequence, length=None):
        """``sequence`` as the model's inputs, right-padded with 0 to ``length``."""
        length = len(sequence) if length is None else length
        if self.length is not None and self.length != length:
            raise ValueError(
                f"'{self.model.name}' takes sequences of exactly {self.length} tokens; this one "
                f"has {length} (prompt + continuation). Generation needs a model that takes "
                "any length (an Input of shape (None,))."
            )
        ids = np.zeros((1, length), np.int32)
        ids[0, : len(sequence)] = sequence
        if not self.structured:
            return ids
        mask = np.zeros((1, length), np.int32)
        mask[0, : len(sequence)] = 1
        values = {"token_ids": ids, "padding_mask": mask}
        return {name: values.get(name, np.zeros_like(ids)) for name in self.names}

    def logits(self, step, sequence, length):
        """The ``(length, vocabulary)`` logits of ``sequence`` padded to ``length``."""
        inputs = self.batch(sequence, length)
        if self.structured:  # the engine's own adapter: a list, or a dict for a keyed model
            inputs = multi.Layout(self.model, inputs).flatten(inputs)
        logits = run_padded(step, inputs, None, 1)
        if logits.ndim != 3 or logits.shape[:2] != (1, length):
            raise ValueError(
                f"'{self.model.name}' returned shape {logits.shape} for token ids (1, {length}); "
                "generation_attribution explains a causal language model returning next-token "
                "logits (batch, length, vocabulary)."
            )
        return logits[0].astype(np.float64)

    def check_ids(self, ids, what, size=None):
        """A clear error for ids outside ``[0, vocabulary)`` (before the model sees them)."""
        size = self.vocabulary_size if size is None else size
        bad = ids[(ids < 0) | (ids >= (size or np.iinfo(np.int64).max))]
        if len(bad):
            valid = "ids >= 0" if size is None else f"ids 0 to {size - 1}"
            raise ValueError(
                f"`{what}` holds token id(s) {sorted(set(bad.tolist()))[:5]} out of the "
                f"vocabulary of '{self.model.name}' ({valid}): tokenize with the model's own "
                "tokenizer."
            )

    def token_map(self, maps):
        if isinstance(maps, dict):
            return maps["token_ids"]
        if isinstance(maps, (list, tuple)):
            return maps[self.names.index("token_ids")]
        return maps


def _greedy(step, layout, prompt_ids, count):
    """Greedy decoding, every pass padded to the final length (one compile)."""
    length = len(prompt_ids) + count
    sequence = list(prompt_ids)
    for _ in range(count):
        logits = layout.logits(step, sequence, length)
        sequence.append(int(np.argmax(logits[len(sequence) - 1])))
    sequence = np.asarray(sequence, np.int32)
    logits = layout.logits(step, sequence, length)
    # a causal model predicts the same tokens when it sees the whole sequence
    start = len(prompt_ids) - 1
    if not np.array_equal(np.argmax(logits[start:-1], -1), sequence[start + 1 :]):
        raise ValueError(
            f"'{layout.model.name}' is not causal: its logits at a position change with the "
            "tokens after it, so generating and explaining disagree. generation_attribution "
            "explains causal language models (position i sees only tokens <= i)."
        )
    return sequence


def _encoder(model, tokenizer, id_to_token, *texts) -> TextEncoder:
    """The :class:`TextEncoder` of the strings (and token strings) of this call."""
    if tokenizer is None:
        tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is None:
        if any(isinstance(text, str) for text in texts):
            raise TypeError(
                "The prompt (or target_text) is a string, but there is no tokenizer: pass "
                "tokenizer= (a KerasHub tokenizer, or a function text -> ids with "
                "id_to_token=), or pass token ids."
            )
        return TextEncoder(lambda text: text, id_to_token)
    return TextEncoder(tokenizer, id_to_token)


def _token_ids(value, what, encoder) -> np.ndarray:
    if isinstance(value, str):
        value = encoder(value).ids  # a clear error for an empty string
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.size == 0:
        raise ValueError(f"`{what}` is empty; give at least one token.")
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{what}` must be a string or a 1-D sequence of integer token ids; got an array "
            f"of shape {array.shape} and dtype {array.dtype}."
        )
    return array.astype(np.int32)


def _positive_int(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` is a positive int; got {value!r}.")
    return int(value)


def _output_vocabulary(model) -> int | None:
    """The size of the logits' last axis, when the model's symbolic outputs say it."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs[0].shape) != 3:
        return None
    size = outputs[0].shape[-1]
    return None if size is None else int(size)


# --------------------------------------------------------------------------- HTML


def _heat_table(result: GenerationAttribution) -> str:
    values = np.where(result.context_mask, result.attributions, 0.0)
    scale = float(np.abs(values).max())
    head = "".join(f"<th style='padding:2px 4px'>{html.escape(t)}</th>" for t in result.tokens)
    rows = []
    for j, token in enumerate(result.generated_tokens):
        cells = []
        for k, value in enumerate(values[j]):
            if not result.context_mask[j, k]:
                cells.append("<td style='background:#eee'></td>")
                continue
            cells.append(
                f"<td title='{value:+.4f}' style='background:{colour(value, scale)};"
                f"padding:2px 4px;text-align:right'>{value:+.2f}</td>"
            )
        rows.append(
            f"<tr><th style='padding:2px 4px'>{html.escape(token)}"
            f"<br><small>{result.log_probs[j]:.2f}</small></th>{''.join(cells)}</tr>"
        )
    return (
        f"<table style='border-collapse:collapse;font-family:monospace;font-size:12px'>"
        f"<caption>{html.escape(result.method)}: generated token (log-probability) by "
        f"context token</caption><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )
