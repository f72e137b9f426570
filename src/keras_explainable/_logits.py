"""The default logits: the classifier followed to the ``(batch, units)`` tensor it feeds.

"The last layer with a kernel" is the classifier of most models, but not always
what holds the ``(batch, units)`` scores: ``keras.applications.MobileNet`` and
``MobileNetV3*`` classify with a 1x1 ``Conv2D`` whose ``(batch, 1, 1, units)``
output a ``Reshape`` / ``Flatten`` turns into the scores. The default logits
follow the classifier's output forward through such layers, which only move
values around (flatten, reshape, dropout and other identities at inference),
until it is ``(batch, units)``. Should that never happen, the model's own
``(batch, units)`` output is used instead.

The walk reads Keras' graph of functional models (nested ones too, leaving a
nested model through its outputs). A subclassed model has no graph: its
classifier is used as is.
"""

from __future__ import annotations

import keras

from . import _compat
from ._layers import _POOLING_CLASSES, _path_of, flatten_layers, get_logits_layer
from ._taps import Tap

# Layers that, at inference, hand their input on unchanged (up to its shape).
_PASS_THROUGH = tuple(
    getattr(keras.layers, name)
    for name in (
        "Flatten",
        "Reshape",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
    )
    if hasattr(keras.layers, name)
)
_LINEAR = {"linear", None}


def _passes_through(layer) -> bool:
    if isinstance(layer, _PASS_THROUGH):
        return True
    if isinstance(layer, keras.layers.Activation):
        activation = getattr(layer, "activation", None)
        return getattr(activation, "__name__", activation) in _LINEAR
    return False


def _single_node(layer):
    nodes = _compat.inbound_nodes(layer)
    return nodes[0] if len(nodes) == 1 else None


def _containers(model) -> list:
    """``model`` and every functional model nested in it, each with its parent."""
    by_path = dict(flatten_layers(model))
    found = [(model, None)]
    for path, layer in by_path.items():
        if isinstance(layer, keras.Model):
            found.append((layer, by_path.get(path[:-1], model)))
    return found


def _next_step(containers, container, tensor):
    """``(layer, container, output tensor)`` of the one call reading ``tensor``, or None."""
    outputs = list(getattr(container, "outputs", None) or [])
    positions = [i for i, candidate in enumerate(outputs) if candidate is tensor]
    if positions:  # leaving a nested model: continue after its call in the parent
        parent = {id(c): p for c, p in containers}.get(id(container))
        node = None if parent is None else _single_node(container)
        if node is None or len(node.output_tensors) != len(outputs):
            return None
        return _next_step(containers, parent, node.output_tensors[positions[0]])
    readers = [
        (layer, node)
        for layer in getattr(container, "layers", ())
        for node in _compat.inbound_nodes(layer)
        if any(candidate is tensor for candidate in node.input_tensors)
    ]
    if len(readers) != 1:
        return None
    layer, node = readers[0]
    if not _passes_through(layer) or len(node.output_tensors) != 1:
        return None
    return layer, container, node.output_tensors[0]


def _owner(containers, layer):
    for container, _ in containers:
        if any(candidate is layer for candidate in getattr(container, "layers", ())):
            return container
    return None


def _rank(tensor) -> int | None:
    shape = getattr(tensor, "shape", None)
    return None if shape is None else len(shape)


def followed_to_units(model, layer):
    """The layer whose output holds ``layer``'s values as ``(batch, units)``, or None.

    ``layer`` itself when its output already has rank 2; a later
    flatten/reshape/identity-like layer reading it (and nothing else) otherwise.
    """
    node = _single_node(layer)
    if node is None or len(node.output_tensors) != 1:
        return None
    tensor = node.output_tensors[0]
    containers = _containers(model)
    container = _owner(containers, layer)
    for _ in range(64):  # a chain of identities is short; a cycle is impossible
        if _rank(tensor) == 2:
            return layer
        if container is None:
            return None
        step = _next_step(containers, container, tensor)
        if step is None:
            return None
        layer, container, tensor = step
    return None


def _output_layer(model):
    """The layer producing the model's single ``(batch, units)`` output, or None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or isinstance(outputs, dict) or len(outputs) != 1:
        return None
    if _rank(outputs[0]) != 2:
        return None
    history = _compat.keras_history(outputs[0])
    if history is None:
        return None
    producer = history[0]
    while isinstance(producer, keras.Model):  # the output of a nested model: its own producer
        inner = list(getattr(producer, "outputs", None) or [])
        history = _compat.keras_history(inner[0]) if len(inner) == 1 else None
        if history is None:
            return None
        producer = history[0]
    return producer


def default_logits_tap(model, given: Tap | None = None) -> Tap:
    """Where the default logits come from (see the module docstring).

    ``given``: a logits layer the user named; it is used as given, except that a
    ``(batch, 1, ..., 1, units)`` output is followed to its ``(batch, units)``
    tensor (:func:`followed_tap`).

    Raises:
        ValueError: when the model has no layer with a kernel.
    """
    if given is not None:
        return followed_tap(model, given)
    classifier = get_logits_layer(model)
    layer = followed_to_units(model, classifier)
    if layer is None and not _is_units_layer(model, classifier):
        layer = _output_layer(model)
    if layer is None:
        layer = classifier
    return Tap(layer, path=_path_of(model, layer))


def _is_units_layer(model, layer) -> bool:
    """Whether ``layer``'s output is ``(batch, units)`` (unknown graphs: assume so)."""
    node = _single_node(layer)
    if node is None or len(node.output_tensors) != 1:
        return True  # no graph (subclassed, shared layer): keep the classifier
    return _rank(node.output_tensors[0]) == 2


def pooling_before_classifier(model):
    """The last global pooling (or ``Flatten``) layer that runs before the classifier.

    A ``Flatten`` *after* the classifier (MobileNetV3's) only reshapes the
    scores: it does not mark where the spatial features end. ``None`` when the
    model has no such layer. Without a classifier, the last pooling layer.
    """
    layers = [layer for _, layer in flatten_layers(model, include_models=False)]
    try:
        classifier = get_logits_layer(model)
        end = next(i for i, layer in enumerate(layers) if layer is classifier)
    except (ValueError, StopIteration):
        end = len(layers)
    for layer in reversed(layers[:end]):
        if isinstance(layer, _POOLING_CLASSES):
            return layer
    return None


def followed_tap(model, tap: Tap) -> Tap:
    """``tap`` (an explicit logits layer), moved from a ``(batch, 1, ..., 1, units)`` output
    to the ``(batch, units)`` tensor a flatten/reshape-like layer makes of it."""
    node = _single_node(tap.layer)
    if tap.link != "output" or tap.call_index != 0 or node is None:
        return tap
    shape = tuple(getattr(node.output_tensors[0], "shape", ())) if node.output_tensors else ()
    if len(shape) < 3 or any(d != 1 for d in shape[1:-1]):
        return tap
    layer = followed_to_units(model, tap.layer)
    if layer is None or layer is tap.layer:
        return tap
    return Tap(layer, path=_path_of(model, layer))
