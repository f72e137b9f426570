"""Every use of Keras' (and numpy's) internals, in one place.

The rest of the library calls these functions instead of reaching for an
underscore attribute or a ``keras.src`` module. Each one names the internal it
relies on and what it falls back to (a public API, or an answer that makes the
caller degrade gracefully: an empty list, None) when a release renames or drops
it. ``tests/test_compat.py`` checks every internal on the installed versions and
fails naming the one that changed, so an upgrade breaks loudly there instead of
quietly somewhere else.
"""

from __future__ import annotations

import importlib
import inspect
import mmap

import numpy as np


def inbound_nodes(layer) -> list:
    """The calls (``Node`` objects) of ``layer`` recorded in Keras' graphs.

    Internal: ``Layer._inbound_nodes`` (one node per symbolic call, each with
    ``input_tensors``, ``output_tensors``, ``parent_nodes`` and ``operation``).
    Fallback: an empty list (the layer is treated as having no graph: callers
    take their graph-free path).
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    if nodes is None:
        return []
    try:
        return list(nodes)
    except TypeError:
        return []


def call_has_training_arg(operation) -> bool:
    """Whether ``operation``'s ``call`` takes a ``training`` argument.

    Internal: ``Layer._call_has_training_arg`` (what Keras itself checks before
    passing ``training=``). Fallback: the public signature of
    ``operation.call``; False for anything that is not a layer.
    """
    flag = getattr(operation, "_call_has_training_arg", None)
    if isinstance(flag, bool):
        return flag
    call = getattr(operation, "call", None)
    if call is None:
        return False
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


def keras_history(tensor) -> tuple | None:
    """``(operation, node_index, tensor_index)`` of the call that produced ``tensor``.

    Internal: ``KerasTensor._keras_history`` (set on every symbolic tensor a
    layer returns). Fallback: None (the producer is unknown; callers say so or
    use a graph-free path). There is no public equivalent in Keras 3.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    try:
        operation, node_index, tensor_index = history
    except (TypeError, ValueError):
        return None
    return operation, node_index, tensor_index


def run_through_graph(function, inputs, operation_fn):
    """Run the ``keras.Function`` ``function``, each operation called as ``operation_fn(op)``.

    Internal: ``keras.Function._run_through_graph(inputs, operation_fn=...)``,
    what ``Function.call`` and ``Functional.call`` run (the latter wraps each
    operation to pass ``training=``). Fallback: the public ``function(inputs)``,
    which calls every operation as is, so ``training`` keeps each layer's
    default (inference outside of ``fit``) instead of what ``operation_fn`` asks.
    """
    run = getattr(function, "_run_through_graph", None)
    if run is None:
        return function(inputs)
    return run(inputs, operation_fn=operation_fn)


def imagenet_utils():
    """The Keras module holding ``decode_predictions`` and ``CLASS_INDEX_PATH``, or None.

    Public: ``keras.applications.imagenet_utils`` (has ``decode_predictions``
    and ``preprocess_input`` but, in Keras 3, not ``CLASS_INDEX_PATH``).
    Internal: ``keras.src.applications.imagenet_utils``, which has both; used
    only when the public module lacks the URL. None when neither has it (the
    caller falls back to class indices).
    """
    for name in ("keras.applications.imagenet_utils", "keras.src.applications.imagenet_utils"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "decode_predictions") and hasattr(module, "CLASS_INDEX_PATH"):
            return module
    return None


def memmap_mapping(array) -> mmap.mmap | None:
    """The ``mmap.mmap`` behind ``np.memmap`` ``array`` (shared by its views), or None.

    Internal: ``np.memmap._mmap``. Fallback: walking the public ``.base``
    chain (a memmap's base is its mapping; a view's base is the array it views)
    to an ``mmap.mmap``. None for anything that is not a memory-mapped array.
    """
    if not isinstance(array, np.memmap):
        return None
    mapping = getattr(array, "_mmap", None)
    if isinstance(mapping, mmap.mmap):
        return mapping
    base = array
    for _ in range(64):  # views of views: the chain is short, but never loop forever
        base = getattr(base, "base", None)
        if base is None:
            return None
        if isinstance(base, mmap.mmap):
            return base
    return None


def attention_softmax(layer):
    """The ``Softmax`` sub-layer a ``keras.layers.MultiHeadAttention`` turns scores into
    probabilities with, or None.

    Internal: ``MultiHeadAttention._softmax`` (built with the layer), which
    ``MultiHeadAttention._compute_attention`` calls on its explicit path, the
    one it takes when called with ``return_attention_scores=True`` (without it,
    a layer with no dropout calls the fused ``ops.dot_product_attention``
    instead, and no probabilities exist). Its output is what
    ``return_attention_scores`` returns, before the attention dropout.
    Fallback: None (the attention methods then say the layer gives no
    probabilities).
    """
    softmax = getattr(layer, "_softmax", None)
    return softmax if callable(getattr(softmax, "call", None)) else None


def flash_attention(layer) -> bool:
    """Whether ``keras.layers.MultiHeadAttention`` ``layer`` runs flash attention.

    Internal: ``MultiHeadAttention._flash_attention`` (the layer's
    ``flash_attention`` argument, or ``keras.config.is_flash_attention_enabled()``
    when it was built: True, False, or None for "when the backend can"); only
    True refuses ``return_attention_scores=True``. Fallback: the public global
    setting ``keras.config.is_flash_attention_enabled()`` (False when unknown).
    """
    flag = getattr(layer, "_flash_attention", "unknown")
    if flag is None or isinstance(flag, bool):
        return flag is True
    import keras

    enabled = getattr(keras.config, "is_flash_attention_enabled", None)
    return bool(enabled()) if callable(enabled) else False


def tracked_sublayers(layer) -> list:
    """The layers ``layer`` holds as attributes (directly), in assignment order.

    Internal: ``Layer._layers``, the list Keras' attribute tracker fills when a
    layer is assigned to an attribute (or a list attribute) of another layer:
    how KerasHub's encoders hold their blocks, which are no functional graph.
    Fallback: the layer-valued attributes (and lists of layers) in the public
    ``vars(layer)``.
    """
    import keras

    tracked = getattr(layer, "_layers", None)
    if isinstance(tracked, (list, tuple)):
        return [item for item in tracked if isinstance(item, keras.layers.Layer)]
    found = []
    for value in vars(layer).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, keras.layers.Layer) and all(item is not f for f in found):
                found.append(item)
    return found
