"""Which inputs of a multi-input model a layer reads: the layer's *branch*.

A CAM method explains one layer; on a model of several inputs
(``keras.Model([image, features], logits)``) that layer lives on a branch, and
its map belongs to the input(s) that branch starts from: Score-CAM masks that
input, FullGrad adds a layer's bias-gradients to that input's map, and the
engine resizes a CAM to it. The branch is found by walking Keras' graph back
from the layer's call to the model's inputs (through nested functional models,
entering each by its call in the parent). A model without a graph (subclassed)
has no known branch: callers then fall back to the inputs' shapes.
"""

from __future__ import annotations

import keras

from . import _compat
from ._layers import flatten_layers, model_inputs


def _node_of(layer, call_index):
    nodes = _compat.inbound_nodes(layer)
    index = call_index or 0
    return nodes[index] if index < len(nodes) else None


def _nested_entries(model) -> dict:
    """``id(input tensor of a nested model) -> the tensors feeding it in its parent``."""
    entries = {}
    for _, layer in flatten_layers(model):
        if not isinstance(layer, keras.Model):
            continue
        inner = model_inputs(layer)
        for node in _compat.inbound_nodes(layer):
            fed = list(node.input_tensors)
            if len(fed) == len(inner):
                for tensor, outer in zip(inner, fed):
                    entries.setdefault(id(tensor), []).append(outer)
    return entries


def branch_inputs(model, layer, call_index=0, link="output") -> tuple[int, ...] | None:
    """The positions (in ``model.inputs``) of the inputs ``layer``'s call depends on.

    ``link="input"`` asks about the tensor the layer receives (a pooling
    layer's input, as the default CAM exposure reads it): the same inputs.
    ``None`` when Keras' graph does not say (a subclassed model, a layer called
    outside the model's graph).
    """
    model = getattr(model, "explained_model", model)
    inputs = model_inputs(model)
    if not inputs:
        return None
    positions = {id(tensor): i for i, tensor in enumerate(inputs)}
    node = _node_of(layer, call_index)
    if node is None:
        return None
    del link  # a layer's output depends on exactly the inputs its inputs depend on
    entries = None
    found, seen = set(), set()
    pending = list(node.input_tensors)
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in positions:
            found.add(positions[id(tensor)])
            continue
        history = _compat.keras_history(tensor)
        if history is None:
            return None
        producer, node_index, _ = history
        parents = _compat.inbound_nodes(producer)
        fed = list(parents[node_index].input_tensors) if node_index < len(parents) else []
        if fed:
            pending.extend(fed)
            continue
        # an input of a nested model: continue from what its call in the parent received
        if entries is None:
            entries = _nested_entries(model)
        if id(tensor) not in entries:
            return None
        pending.extend(entries[id(tensor)])
    return tuple(sorted(found))


def branch_input_of_rank(model, tap, shapes, rank) -> int | None:
    """The one input of ``rank`` axes that the tap's branch reads, or None.

    ``shapes``: the shapes of the model's inputs (batch first), in order.
    """
    try:
        reads = branch_inputs(model, tap.layer, tap.call_index, tap.link)
    except (AttributeError, IndexError, TypeError, ValueError):
        reads = None
    if not reads:
        return None
    same = [p for p in reads if p < len(shapes) and len(shapes[p]) == rank]
    return same[0] if len(same) == 1 else None


def branch_leaf(model, tap, inputs, rank) -> int | None:
    """The leaf of the structured ``inputs`` (a list, tuple or dict) that the tap's branch
    reads among those of ``rank`` axes; failing a known branch, the only such leaf."""
    declared = model_inputs(model)
    position = branch_input_of_rank(model, tap, [tuple(t.shape) for t in declared], rank)
    if position is not None and isinstance(inputs, dict):
        name = getattr(declared[position], "name", None)
        position = list(inputs).index(name) if name in inputs else None
    if position is not None:
        return position
    values = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    same = [i for i, value in enumerate(values) if len(value.shape) == rank]
    return same[0] if len(same) == 1 else None


def branch_leaves(model, layer, inputs) -> tuple[int, ...]:
    """The leaves of the structured ``inputs`` that ``layer``'s (first) call reads
    (``()`` when the graph does not say)."""
    try:
        reads = branch_inputs(model, layer) or ()
    except (AttributeError, IndexError, TypeError, ValueError):
        reads = ()
    if not isinstance(inputs, dict):
        return tuple(reads)
    declared = model_inputs(model)
    names = [getattr(declared[p], "name", None) for p in reads]
    return tuple(i for i, key in enumerate(inputs) if key in names)
