"""Token ids: which embedding layer they flow into, which of them are padding.

Integer inputs of a text model (token ids) cannot be differentiated; they are
explained *at their embedding*: the output ``(batch, tokens, dim)`` of the
embedding layer the ids flow into is tapped (see :mod:`._taps`), and the
methods reduce what they compute there over ``dim`` into token maps
``(batch, tokens, units)``.

:func:`find_embedding` finds that layer once per model and input, by an eager
probe: the model runs on a one-row batch whose ids are all 1 (every other input
0) while every :class:`keras.layers.Embedding` (KerasHub's
``ReversibleEmbedding`` is one; inside ``TokenAndPositionEmbedding`` it is its
``token_embedding``) records what it receives; the first one that received the
probed ids is the input's embedding. The answer is cached per model, so the
compiled steps (traced later) only read the cache.

Framework-free: Keras ops and numpy only.
"""

from __future__ import annotations

import difflib
import threading
import weakref

import keras
import numpy as np
from keras import ops

from . import _inputs
from ._taps import Tap, tapped

#: The name of the KerasHub input that marks real tokens (1) and padding (0).
PADDING_MASK = "padding_mask"
#: The name of the KerasHub input holding token ids.
TOKEN_IDS = "token_ids"

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def is_ids(tensor) -> bool:
    """Whether ``tensor`` holds integers (token ids), not floats or booleans."""
    dtype = str(getattr(tensor, "dtype", ""))
    return "int" in dtype and "float" not in dtype


def unwrap(model):
    """The user's model behind the methods' wrappers (``_OneInput``, ``Embedded``)."""
    while getattr(type(model), "wraps_model", False):
        model = model.wrapped_model
    return model


# --------------------------------------------------------------------------- layers


def _children(layer) -> list:
    """The layers a layer holds: a model's ``layers`` and layer-valued attributes."""
    found = []
    if isinstance(layer, keras.Model):
        try:
            found.extend(layer.layers)
        except (AttributeError, ValueError):
            pass
    for value in vars(layer).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found.extend(v for v in items if isinstance(v, keras.layers.Layer))
    return found


def all_layers(model) -> list[tuple[tuple[str, ...], keras.layers.Layer]]:
    """Every layer inside ``model`` (nested models and layer attributes), with its path."""
    seen, found = {id(model)}, []

    def visit(layer, prefix):
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = prefix + (child.name,)
            found.append((path, child))
            visit(child, path)

    visit(model, ())
    return found


def _named_layer(model, embedding):
    """The layer ``embedding`` names: a Layer, a name, a path ``"a/b"`` or ``("a", "b")``."""
    if isinstance(embedding, Tap):
        return embedding.layer
    if isinstance(embedding, keras.layers.Layer):
        return embedding
    if isinstance(embedding, str):
        names = tuple(embedding.split("/"))
    elif isinstance(embedding, (list, tuple)) and all(isinstance(n, str) for n in embedding):
        names = tuple(embedding)
    else:
        raise TypeError(
            "`embedding` names the embedding layer: a keras layer, its name, or a path of "
            f"names into nested layers ('backbone/token_embedding'); got {embedding!r}."
        )
    layers = all_layers(model)
    for path, layer in layers:
        if path[-len(names) :] == names:
            return layer
    close = difflib.get_close_matches(names[-1], [p[-1] for p, _ in layers], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"`embedding` names {embedding!r}, which is not a layer of the model.{hint}")


def embedding_candidates(model) -> list[tuple[tuple[str, ...], keras.layers.Layer]]:
    """Every ``keras.layers.Embedding`` inside ``model`` (KerasHub's included), with its path."""
    return [(p, la) for p, la in all_layers(model) if isinstance(la, keras.layers.Embedding)]


def _probe_batch(inputs, position):
    """One row like ``inputs``: the leaf at ``position`` all 1, every other leaf 0."""
    items = _inputs.leaves(inputs) if _inputs.is_structure(inputs) else [inputs]
    rows = []
    for index, item in enumerate(items):
        shape = (1,) + tuple(int(s) for s in item.shape[1:])
        dtype = keras.backend.standardize_dtype(item.dtype)
        rows.append(np.full(shape, 1 if index == position else 0, dtype=dtype))
    return _inputs.pack(inputs, rows) if _inputs.is_structure(inputs) else rows[0]


def _received(model, candidates, probe) -> list:
    """What each candidate received on its first call while ``model`` ran on ``probe``."""
    from . import backend  # noqa: PLC0415  (the backend imports a framework)

    taps = [Tap(layer, call_index=None, path=path, link="input") for path, layer in candidates]
    seen = [None] * len(taps)

    def record(position, value):
        if seen[position] is None:
            seen[position] = value
        return value

    with tapped(taps, record):
        backend.forward(model, probe)
    values = []
    for value in seen:
        try:
            values.append(None if value is None else ops.convert_to_numpy(value))
        except Exception:  # noqa: BLE001  (a symbolic tensor: the probe ran in a trace)
            raise RuntimeError(
                "The embedding layer of a token input is found by running the model once "
                "eagerly; it was asked for while a step was being traced. Call the method "
                "once outside of tf.function / jax.jit, or explain through ke.explain."
            ) from None
    return values


def _describe(model, position) -> str:
    return "the model's input" if position is None else f"the input at position {position}"


def find_embedding(model, inputs, position=None, embedding=None) -> Tap:
    """The tap on the embedding layer that the token ids at ``position`` flow into.

    Args:
        model: the model (never modified: the probe only observes it).
        inputs: a batch like the ones to explain (one tensor, or a list /
            tuple / dict of them); only shapes and dtypes are read.
        position: the leaf of a structured ``inputs`` holding the ids; ``None``
            for a model of one input.
        embedding: the layer to use instead of searching: a keras layer, its
            name, or a path ``"backbone/token_embedding"``. Any layer returning
            ``(batch, tokens, dim)`` works (e.g. KerasHub's
            ``TokenAndPositionEmbedding``, position embeddings included).

    Returns:
        a :class:`Tap` on the layer's first call.

    Raises:
        ValueError: when no embedding layer receives the ids (the message says
            what was looked for and how to name a layer with ``embedding=``).
    """
    model = unwrap(model)
    if embedding is not None:
        layer = _named_layer(model, embedding)
        path = next((p for p, la in all_layers(model) if la is layer), (layer.name,))
        return Tap(layer, call_index=0, path=path)
    names = tuple(inputs) if isinstance(inputs, dict) else _inputs.is_structure(inputs)
    # shapes, not dtypes: JAX runs int64 ids as int32
    shapes = tuple(
        (tuple(int(d) for d in leaf.shape[1:]), is_ids(leaf)) for leaf in _leaves(inputs)
    )
    key = (position, names, shapes)
    with _LOCK:
        cached = _CACHE.get(model, {}).get(key)
    if cached is not None:
        return cached
    candidates = embedding_candidates(model)
    found = None
    if candidates:
        probe = _probe_batch(inputs, 0 if position is None else position)
        for (path, layer), value in zip(candidates, _received(model, candidates, probe)):
            if value is not None and value.size and np.all(value == 1):
                found = Tap(layer, call_index=0, path=path)
                break
    if found is None:
        looked = ", ".join("/".join(p) for p, _ in candidates) or "none in the model"
        raise ValueError(
            f"No embedding layer receives the token ids of {_describe(model, position)}: "
            "looked for keras.layers.Embedding layers (KerasHub's ReversibleEmbedding and the "
            f"token embedding of TokenAndPositionEmbedding included) the ids flow into "
            f"unchanged (found: {looked}). Name the layer whose (batch, tokens, dim) output "
            "to explain with embedding='<layer name>' (a name, a path 'backbone/layer', or "
            "the layer; ke.inspection.flatten_layers(model) lists them)."
        )
    with _LOCK:
        _CACHE.setdefault(model, {})[key] = found
    return found


def _leaves(inputs) -> list:
    return _inputs.leaves(inputs) if _inputs.is_structure(inputs) else [inputs]


# --------------------------------------------------------------------------- which inputs


def token_positions(inputs, explained=None) -> tuple[int, ...]:
    """The integer leaves to explain at their embedding.

    ``explained`` (positions) picks them; ``None``: for one input, the input
    itself when it holds ids; for a structure with float leaves, none (the
    float inputs are explained, as before); else the leaf named ``token_ids``
    (KerasHub), or every integer leaf but ``padding_mask``.
    """
    if not _inputs.is_structure(inputs):
        return (0,) if is_ids(inputs) else ()
    items = _inputs.leaves(inputs)
    names = [str(k) for k in _inputs.keys(inputs)]
    if explained is not None:
        return tuple(p for p in explained if is_ids(items[p]))
    if any(_inputs.is_float(item) for item in items):
        return ()
    if TOKEN_IDS in names and is_ids(items[names.index(TOKEN_IDS)]):
        return (names.index(TOKEN_IDS),)
    return tuple(
        i for i, (n, item) in enumerate(zip(names, items)) if is_ids(item) and n != PADDING_MASK
    )


def has_tokens(inputs, explained=None) -> bool:
    """Whether a method call explains token ids (at their embedding)."""
    return bool(token_positions(inputs, explained))


def real_tokens(inputs, position, tap: Tap | None = None, pad_id=None, padding_mask=None):
    """``(batch, tokens)`` booleans, False at padding; ``None`` when nothing is padding.

    Padding is where the padding-mask input is 0 (``padding_mask``: its
    position or name; by default an input named ``padding_mask``, KerasHub's),
    else where the ids equal ``pad_id``, else (an embedding with
    ``mask_zero=True``) where they are 0.
    """
    ids = _leaves(inputs)[0 if position is None else position]
    if _inputs.is_structure(inputs):
        names = [str(k) for k in _inputs.keys(inputs)]
        where = padding_mask if padding_mask is not None else PADDING_MASK
        index = (
            where if isinstance(where, int) else (names.index(where) if where in names else None)
        )
        if index is not None:
            mask = _inputs.leaves(inputs)[index]
            if tuple(mask.shape) == tuple(ids.shape):
                return ops.not_equal(ops.convert_to_tensor(mask), 0)
    if pad_id is None and tap is not None and getattr(tap.layer, "mask_zero", False):
        pad_id = 0
    if pad_id is None:
        return None
    return ops.not_equal(ops.convert_to_tensor(ids), int(pad_id))


def check_ids(ids: np.ndarray, layer, name: str = "`x`") -> None:
    """Token ids must be whole numbers within the embedding's vocabulary."""
    ids = np.asarray(ids)
    size = getattr(layer, "input_dim", getattr(layer, "vocabulary_size", None))
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (isinstance(size, int) and high >= size):
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} holds the token id {bad}, outside the vocabulary of the embedding "
            f"'{layer.name}' (ids 0 to {size - 1 if isinstance(size, int) else '?'}). Encode "
            "the text with the model's own tokenizer / vocabulary."
        )


__all__ = [
    "PADDING_MASK",
    "TOKEN_IDS",
    "all_layers",
    "check_ids",
    "embedding_candidates",
    "find_embedding",
    "has_tokens",
    "is_ids",
    "real_tokens",
    "token_positions",
    "unwrap",
]
