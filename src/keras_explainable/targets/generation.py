"""The log-probabilities of a continuation under a causal language model.

A causal language model maps token ids ``(batch, length)`` to next-token logits
``(batch, length, vocabulary)``: the logits at position ``i`` predict the token
at ``i + 1``. :func:`continuation` scores the last ``U`` tokens of each sequence
given everything before them, teacher-forced, from one forward pass: ``y`` holds
those ``U`` token ids, and the unit ``j`` is

    log p(y[b, j] | x[b, : length - U + j])

so every position of a generation is one unit of the same step, and the
backends differentiate all of them in one vectorised backward pass.
"""

from __future__ import annotations

from keras import ops

from .._units import first_output
from ._base import Target


def _logits_of(outputs):
    logits = first_output(outputs)
    if len(logits.shape) != 3:
        raise ValueError(
            f"continuation() explains a causal language model whose (first) output is "
            f"next-token logits (batch, length, vocabulary); this model returns shape "
            f"{tuple(logits.shape)}. Pass a model that maps token ids to logits at every "
            "position (a KerasHub CausalLM, or a Keras model ending in Dense(vocabulary) "
            "applied at every step)."
        )
    return logits


class Continuation(Target):
    """The last ``U`` tokens' log-probabilities given their prefixes (:func:`continuation`)."""

    needs_units = True

    def __call__(self, outputs, units):
        logits = _logits_of(outputs)
        count, length = units.shape[1], logits.shape[1]
        if count is not None and length is not None and count >= length:
            raise ValueError(
                f"continuation() scores the last {count} token(s) of sequences of {length}: "
                "at least one token must precede them (the first position has no prediction)."
            )
        # the logits at positions length-U-1 ... length-2 predict the last U tokens
        predicting = ops.cast(logits[:, length - count - 1 : length - 1, :], "float32")
        log_probs = ops.log_softmax(predicting, axis=-1)
        picked = ops.take_along_axis(log_probs, ops.cast(units, "int32")[..., None], axis=-1)
        return picked[..., 0]

    def units_of(self, outputs) -> int | None:
        return int(_logits_of(outputs).shape[-1])

    # it holds nothing: every instance is the same target, so the engine's compiled
    # steps (keyed by their parameters) are shared by every call that uses one
    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return "ke.targets.continuation()"


def continuation() -> Target:
    """The log-probability of each continuation token of a causal language model.

    ``y`` holds the ``U`` token ids that end each sequence of ``x`` (``(batch,
    U)``); the scores are ``log p(y[:, j] | the tokens before it)``, read from
    the logits of one teacher-forced forward pass over ``x`` (the model must
    return next-token logits ``(batch, length, vocabulary)``). Any token method
    explains all ``U`` positions at once: the map of unit ``j`` says how much
    each token of ``x`` drove the ``j``-th continuation token (zero, for a
    causal model, at that token and after it).
    :func:`keras_explainable.text.generation_attribution` builds on it.

    Example:
        >>> sequence = np.concatenate([prompt_ids, generated_ids], axis=1)
        >>> scores, maps = ke.explain(ke.methods.gradient.gradients_x_inputs, lm, sequence,
        ...                           generated_ids, target=ke.targets.continuation())
    """
    return Continuation()
