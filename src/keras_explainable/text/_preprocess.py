"""Text -> the model's token inputs, and token ids -> their strings.

:class:`TextEncoder` adapts what users have to one call, ``encoder(text) ->
Encoded``:

- a KerasHub preprocessor (``BertTextClassifierPreprocessor``, ...): called on
  the string, it returns the model's dict (``token_ids``, ``padding_mask``,
  ...); the strings come from its ``tokenizer.id_to_token``;
- a KerasHub tokenizer (``WordPieceTokenizer``, ``BytePairTokenizer``, ...):
  ``tokenizer(text)`` gives the ids of a one-input model;
- any callable ``text -> ids`` (a list / 1-D array, or a dict of them for a
  multi-input model) with ``id_to_token`` (``id -> str``); without it the
  tokens are shown as their ids.

Everything it returns is numpy with a batch axis of 1; nothing here imports a
framework.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One encoded text.

    Attributes:
        inputs: what the model takes: an int array ``(1, tokens)`` or a dict of them.
        ids: the token ids ``(tokens,)`` that are explained.
        real: ``(tokens,)`` booleans, False at padding.
        tokens: the token strings.
    """

    inputs: object
    ids: np.ndarray
    real: np.ndarray
    tokens: tuple[str, ...]


def _as_ids(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001  (a tensor that numpy cannot read)
        raise TypeError(f"{what} returned a {type(value).__name__}, not token ids.") from error
    if array.dtype == object or array.size == 0 or array.ndim not in (1, 2):
        raise TypeError(
            f"{what} must return token ids: a list or 1-D array of ints (or a dict of them "
            f"keyed by the model's input names); got {type(value).__name__} of shape "
            f"{getattr(array, 'shape', '?')}."
        )
    if array.ndim == 2:
        if array.shape[0] != 1:
            raise TypeError(f"{what} returned a batch of {array.shape[0]} rows for one text.")
        array = array[0]
    if array.dtype == np.bool_:
        return array.astype("int32")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{what} returned {array.dtype} values; token ids are integers (the tokenizer's "
            "vocabulary indices)."
        )
    return array


class TextEncoder:
    """``encoder(text) -> Encoded`` for a KerasHub preprocessor / tokenizer or a callable.

    Args:
        preprocessor: a KerasHub preprocessor or tokenizer, or a callable
            ``text -> ids`` (or a dict of id arrays).
        id_to_token: ``id -> str``; default: the KerasHub tokenizer's
            ``id_to_token``, else the id itself.
        pad_id: the padding id (marks padding when there is no padding mask).

    Raises:
        TypeError: for a preprocessor that is not callable.
    """

    def __init__(self, preprocessor, id_to_token: Callable | None = None, pad_id=None):
        if not callable(preprocessor):
            raise TypeError(
                "`preprocessor` turns text into token ids: a KerasHub preprocessor or "
                f"tokenizer, or a function text -> ids; got a {type(preprocessor).__name__}."
            )
        self.preprocessor = preprocessor
        tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
        if id_to_token is None:
            id_to_token = getattr(tokenizer, "id_to_token", None)
        if id_to_token is not None and not callable(id_to_token):
            raise TypeError(f"`id_to_token` is a function id -> str; got {id_to_token!r}.")
        self.id_to_token = id_to_token
        self.pad_id = pad_id

    def token_strings(self, ids) -> tuple[str, ...]:
        if self.id_to_token is None:
            return tuple(str(int(i)) for i in ids)
        return tuple(str(self.id_to_token(int(i))) for i in ids)

    def __call__(self, text) -> Encoded:
        if not isinstance(text, str):
            raise TypeError(f"The text to explain is a str; got a {type(text).__name__}.")
        if not text.strip():
            raise ValueError("The text to explain is empty; give at least one word.")
        what = f"The preprocessor {type(self.preprocessor).__name__}"
        output = self.preprocessor(text)
        if isinstance(output, tuple) and output and isinstance(output[0], Mapping):
            output = output[0]  # KerasHub's (x, y, sample_weight)
        if isinstance(output, Mapping):
            if TOKEN_IDS not in output:
                raise TypeError(
                    f"{what} returned a dict without {TOKEN_IDS!r} (keys: {list(output)}); a "
                    "text model's dict holds the token ids under 'token_ids'."
                )
            arrays = {k: _as_ids(v, f"{what} (key {k!r})") for k, v in output.items()}
            ids = arrays[TOKEN_IDS]
            if PADDING_MASK in arrays:
                real = arrays[PADDING_MASK].astype(bool)
            else:
                real = self._real(ids)
            inputs = {k: v[None] for k, v in arrays.items()}
        else:
            ids = _as_ids(output, what)
            real = self._real(ids)
            inputs = ids[None]
        return Encoded(inputs, ids, real, self.token_strings(ids))

    def _real(self, ids):
        if self.pad_id is None:
            return np.ones(ids.shape, bool)
        return ids != self.pad_id


def fit_length(encoded: Encoded, length: int | None, pad_id) -> Encoded:
    """A one-input encoding padded (with ``pad_id``, default 0) or cut to ``length`` tokens."""
    if length is None or isinstance(encoded.inputs, dict) or len(encoded.ids) == length:
        return encoded
    pad = 0 if pad_id is None else int(pad_id)
    count = min(len(encoded.ids), length)
    ids = np.full(length, pad, encoded.ids.dtype)
    ids[:count] = encoded.ids[:count]
    real = np.zeros(length, bool)
    real[:count] = encoded.real[:count]
    tokens = encoded.tokens[:count] + ("",) * (length - count)
    return Encoded(ids[None], ids, real, tokens)


__all__ = ["Encoded", "TextEncoder", "fit_length"]
