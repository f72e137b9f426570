"""Token ids in the engine: when a batch is token ids, and the checks they need.

A model of one input takes token ids when ``x`` holds integers of shape
``(samples, tokens)`` (uint8 images have more axes): the ids are fed as they
are (never cast to floats), the maps are ``(samples, tokens, units)`` and the
default ``spatial_axis`` is ``(-2,)`` (the token axis of the maps, and of a
``(batch, tokens, dim)`` layer for CAM methods). A multi-input model's integer
inputs are explained at their embedding when ``inputs=`` names them, or by
default when the model has no float input (:meth:`.multi.Layout.explained`).

Before the step is compiled, :func:`prepare` finds each explained token
input's embedding layer on the first batch (eagerly; the methods then read the
cache while they are traced) and returns the per-batch check of the ids
against the embedding's vocabulary.
"""

from __future__ import annotations

import numpy as np

from .. import _tokens
from .data import Columns
from .multi import model_inputs

TOKEN_AXIS = (-2,)
#: The name of the input marking real tokens (KerasHub's).
PADDING = _tokens.PADDING_MASK


def single_input_ids(model, shape, dtype) -> bool:
    """Whether a one-input model's batch ``(shape, dtype)`` is token ids.

    Raises a TypeError for floats where the model takes token ids (an integer
    input, or a ``(samples, tokens)`` input feeding an embedding layer).
    """
    dtype = np.dtype(dtype)
    integer = np.issubdtype(dtype, np.integer)
    inputs = model_inputs(model)
    declared = str(getattr(inputs[0], "dtype", "")) if len(inputs) == 1 else ""
    if integer:
        return len(shape) == 2
    if not np.issubdtype(dtype, np.floating) or len(shape) != 2:
        return False
    name = getattr(inputs[0], "name", "input") if inputs else "input"
    if "int" in declared or _tokens.embedding_candidates(model):
        raise TypeError(
            f"`x` holds {dtype} values, but the model's input {name!r} takes token ids "
            "(integers that an embedding layer looks up). Pass the ids as integers, e.g. "
            "x.astype('int32'), or the output of the model's tokenizer."
        )
    return False


def _columns(batch, layout):
    return list(batch.arrays) if isinstance(batch, Columns) else [batch]


def _like(batch):
    """The batch as the step's methods see it (a list, a dict by name, or one array)."""
    return batch.feed() if isinstance(batch, Columns) else batch


def prepare(model, batch, layout, explained, embedding=None):
    """Find the embeddings of the explained token inputs; return the per-batch id check.

    ``batch`` is the first numpy batch (a :class:`Columns` for several
    inputs); ``explained`` the engine's explained positions (``None``: the
    default). Returns ``check(batch)``, which raises a clear ValueError for ids
    outside an embedding's vocabulary.
    """
    like = _like(batch)
    positions = _tokens.token_positions(like, explained)
    if not positions:
        return lambda _: None
    found = []
    for position in positions:
        chosen = embedding
        if isinstance(embedding, dict) and layout is not None:
            chosen = embedding.get(layout.names[position], embedding.get(position))
        tap = _tokens.find_embedding(model, like, position if layout is not None else None, chosen)
        name = f"The input {layout.names[position]!r}" if layout is not None else "`x`"
        found.append((position, tap.layer, name))

    def check(current):
        columns = _columns(current, layout)
        for position, layer, name in found:
            _tokens.check_ids(columns[position], layer, name)

    check(batch)
    return check


__all__ = ["PADDING", "TOKEN_AXIS", "prepare", "single_input_ids"]
