"""The head of a model: the layers after an explained one, run on their own.

Ablation-CAM asks "what does the model say when channel k of this layer is
zero?" once per channel. Answering it with a tap reruns the whole network, the
layers before the explained one included, although they compute the same thing
every time. When the model is a functional graph (``keras.Model(inputs,
outputs)`` or a ``Sequential`` with an ``Input``) and everything after the
explained layer depends on that layer's output alone (no skip connection crosses
it), the part after it is a model of its own: Keras builds it from the graph's
symbolic tensors, sharing the user's layers and weights (nothing is copied or
changed). That part is usually a few layers (pooling and a dense layer after the
last convolution), so each ablation costs almost nothing.

Whenever that is not the case (a subclassed model, a layer called more than
once, a layer inside a nested model, a connection crossing the layer) there is
no head, and callers rerun the whole model with a tap.
"""

from __future__ import annotations

import weakref

import keras

from . import _compat
from ._taps import Tap
from .inspection import ExposedModel

_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _consumers(container, tensor) -> int:
    """How many calls of ``container``'s layers take ``tensor`` as an input."""
    return sum(
        any(candidate is tensor for candidate in node.input_tensors)
        for layer in container.layers
        for node in _compat.inbound_nodes(layer)
    )


def _graph_tensor(container, tap: Tap, links=("output",)):
    """The symbolic tensor ``tap`` sees in ``container``'s graph, or None.

    Only an unambiguous one: the layer is one of ``container``'s own layers,
    is called exactly once in it and has a single output (or input, for a tap
    on a layer's input).
    """
    if tap.link not in links or tap.call_index != 0:
        return None
    if not any(layer is tap.layer for layer in getattr(container, "layers", ())):
        return None
    nodes = _compat.inbound_nodes(tap.layer)
    if not nodes or len(nodes) != 1:
        return None
    node = nodes[0]
    tensors = node.output_tensors if tap.link == "output" else node.input_tensors
    if len(tensors) != 1:
        return None
    return tensors[0]


def _explained_output(model):
    """``(graph owner, symbolic tensor)`` of what ``first_output(model(x))`` returns."""
    if isinstance(model, ExposedModel):
        owner = model.explained_model
        return owner, _graph_tensor(owner, model.logits_tap, links=("output", "input"))
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return model, None
    if not outputs or isinstance(outputs, dict):
        return model, None
    return model, outputs[0]


def _build(model, tap: Tap):
    owner, output = _explained_output(model)
    if output is None:
        return None
    start = _graph_tensor(owner, tap, links=("output", "input"))
    if start is None:
        return None
    # A tap on a layer's input changes what that layer sees, not what the other
    # layers reading the same tensor see: the head is only equivalent when the
    # tapped layer is the tensor's one reader.
    if tap.link == "input" and _consumers(owner, start) != 1:
        return None
    try:  # keras.Function walks the existing graph: no layer is called, nothing is added
        function = keras.Function(start, output, name=f"{owner.name}_head")
    except (ValueError, TypeError, KeyError, AttributeError):  # not separable there
        return None
    return Head(function)


def _in_mode(operation, training):
    """``operation`` called with ``training=`` when it takes it (as Functional does)."""
    if not _compat.call_has_training_arg(operation):
        return operation

    def call(*args, **kwargs):
        kwargs["training"] = training
        return operation(*args, **kwargs)

    return call


class Head:
    """The layers after the explained one, called like a model: ``head(values)``."""

    def __init__(self, function):
        self.function = function
        self.input_dtype = function.inputs[0].dtype
        self.layers = list(function.operations)

    def __call__(self, values, training=False):
        # What keras.Function.call runs, with ``training`` passed on as Functional does.
        return _compat.run_through_graph(
            self.function, values, lambda operation: _in_mode(operation, training)
        )


def head_after(model, tap: Tap):
    """A model computing ``model``'s explained output from ``tap``'s output alone.

    ``None`` when no such model exists (see the module docstring); the result
    is cached per model and layer.
    """
    try:
        per_model = _HEADS.setdefault(model, {})
    except TypeError:  # not weakly referenceable: build it each time
        return _build(model, tap)
    key = (id(tap.layer), tap.call_index, tap.link)
    if key not in per_model:
        per_model[key] = _build(model, tap)
    return per_model[key]
