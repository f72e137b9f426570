"""The default CAM layer of a dense-prediction model (a segmenter, a detector).

A segmenter ends in a per-pixel classifier (a 1x1 convolution making
``(batch, h, w, classes)``); a RetinaNet-style detector runs one class head and
one box head over every level of a feature pyramid and reshapes and
concatenates their maps into ``(batch, anchors, classes)``. A classifier's
default (the input of its last global pooling) is wrong for both: DeepLabV3's
pyramid pooling has a global pooling branch, and a detector has no pooling at
all. Here the default is found from the outputs backwards, in Keras' graph:

1. each output is followed back through layers that only move or rescale
   values (reshape, concatenate, activations, up-sampling) to the *head* that
   computed it; the model is dense when the head's output still has spatial
   axes (``h, w > 1``) for its first output;
2. the tensors the heads read, followed back through resampling layers (a
   decoder's last up-sampling), are the features the heads see;
3. the default is the latest single tensor that *dominates* them all: every
   path from the image input(s) to any head input passes through it. For
   DeepLabV3 that is the decoder's last features before the classifier; for
   RetinaNet, whose heads read the pyramid levels P3-P5 (one layer's outputs)
   and P3 alone also reads the backbone's stride-8 stage, it is that stage:
   the one feature every detection depends on entirely.

A subclassed model (no graph) or a classifier gives ``None``: the caller keeps
its own rule.
"""

from __future__ import annotations

import keras

from . import _compat
from ._layers import _path_of, flatten_layers, model_inputs
from ._logits import _PASS_THROUGH
from ._taps import Tap

_RESAMPLING = tuple(
    getattr(keras.layers, name)
    for name in ("UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing")
    if hasattr(keras.layers, name)
)
_IDENTITIES = tuple(
    c for c in _PASS_THROUGH if c not in (keras.layers.Flatten, keras.layers.Reshape)
)
# layers between a head and the outputs that only move, join or squash its values
_MOVING = (
    *_PASS_THROUGH,
    *_RESAMPLING,
    keras.layers.Concatenate,
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.Permute,
)
_LIMIT = 20000  # tensors walked at most (a large backbone has a few thousand)


def _spatial(tensor, ranks) -> bool:
    shape = tuple(getattr(tensor, "shape", ()))
    return len(shape) >= 3 and len(shape) in ranks and all(d is None or d > 1 for d in shape[1:-1])


class _Graph:
    """Keras' graph of a functional model, tensor by tensor, through nested models."""

    def __init__(self, model):
        self.model = model
        self.inputs = {id(t): t for t in model_inputs(model)}
        self._entries = None

    def _nested_entries(self) -> dict:
        if self._entries is None:
            self._entries = {}
            for _, layer in flatten_layers(self.model):
                if isinstance(layer, keras.Model):
                    inner = model_inputs(layer)
                    for node in _compat.inbound_nodes(layer):
                        fed = list(node.input_tensors)
                        if len(fed) == len(inner):
                            for tensor, outer in zip(inner, fed):
                                self._entries.setdefault(id(tensor), []).append(outer)
        return self._entries

    def producer(self, tensor):
        """``(layer, node_index, node)`` of the call making ``tensor``, or None."""
        history = _compat.keras_history(tensor)
        if history is None:
            return None
        layer, index, _ = history
        nodes = _compat.inbound_nodes(layer)
        return (layer, index, nodes[index]) if index < len(nodes) else None

    def resolve(self, tensor):
        """``tensor``, or inside a nested model: the inner output a nested call returns."""
        for _ in range(64):
            history = _compat.keras_history(tensor)
            if history is None or not isinstance(history[0], keras.Model):
                return tensor
            outputs = list(getattr(history[0], "outputs", None) or [])
            if history[2] >= len(outputs):
                return tensor
            tensor = outputs[history[2]]
        return tensor

    def parents(self, tensor) -> list | None:
        """The tensors ``tensor`` is computed from; ``[]`` for a model input; None: unknown."""
        tensor = self.resolve(tensor)
        if id(tensor) in self.inputs:
            return []
        found = self.producer(tensor)
        if found is None:
            return None
        fed = [t for t in found[2].input_tensors if hasattr(t, "shape")]
        if fed:
            return [self.resolve(t) for t in fed]
        entries = self._nested_entries().get(id(tensor))  # a nested model's input
        return None if entries is None else [self.resolve(t) for t in entries]


def _head_inputs(graph, outputs, ranks) -> list | None:
    """The tensors the heads of ``outputs`` read (None: the first output is no dense map)."""
    found, first = [], True
    for output in outputs:
        pending, heads = [graph.resolve(output)], []
        while pending and len(heads) < 1000:
            tensor = graph.resolve(pending.pop())
            made = graph.producer(tensor)
            if made is None or id(tensor) in graph.inputs:
                return None
            layer, _, node = made
            if isinstance(layer, _MOVING) and not isinstance(layer, keras.Model):
                pending.extend(node.input_tensors)
            else:
                heads.append((tensor, node))
        dense = bool(heads) and all(_spatial(t, ranks) for t, _ in heads)
        if first and not dense:
            return None
        first = False
        if dense:
            found.extend(t for _, node in heads for t in node.input_tensors)
    return [_before_resampling(graph, t) for t in found]


def _before_resampling(graph, tensor):
    for _ in range(64):
        tensor = graph.resolve(tensor)
        made = graph.producer(tensor)
        if made is None or not isinstance(made[0], (*_RESAMPLING, *_IDENTITIES)):
            return tensor
        if len(made[2].input_tensors) != 1:
            return tensor
        tensor = made[2].input_tensors[0]
    return tensor


def _ancestors(graph, starts):
    """``(order, parents)``: every tensor the ``starts`` depend on, inputs before users."""
    parents, order, state = {}, [], {}
    stack = [(t, False) for t in starts]
    while stack:
        tensor, done = stack.pop()
        key = id(tensor)
        if done:
            if state.get(key) != "done":
                state[key] = "done"
                order.append(tensor)
            continue
        if key in state:
            continue
        state[key] = "open"
        found = graph.parents(tensor)
        if found is None or len(state) > _LIMIT:
            return None
        parents[key] = found
        stack.append((tensor, True))
        stack.extend((p, False) for p in found if id(p) not in state)
    return order, parents


def _reaches_input(graph, parents, starts, removed, sources) -> bool:
    seen, pending = {id(removed)}, [t for t in starts if t is not removed]
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in sources:
            return True
        pending.extend(parents.get(id(tensor), ()))
    return False


def _eligible(graph, tensor, ranks):
    made = graph.producer(tensor)
    if made is None or id(tensor) in graph.inputs or not _spatial(tensor, ranks):
        return None
    layer, index, node = made
    if isinstance(layer, (keras.Model, keras.layers.InputLayer)) or len(node.output_tensors) != 1:
        return None
    nodes = _compat.inbound_nodes(layer)
    return Tap(layer, index if len(nodes) > 1 else 0, _path_of(graph.model, layer))


def dense_prediction_tap(model) -> Tap | None:
    """The default CAM layer of a segmenter or detector (module docstring), or None."""
    try:
        outputs = list(model.outputs or [])
        inputs = model_inputs(model)
    except (AttributeError, ValueError, TypeError):
        return None
    images = [t for t in inputs if "float" in str(getattr(t, "dtype", "float32"))]
    ranks = {len(t.shape) for t in images if len(t.shape) >= 3}
    if not outputs or not ranks:
        return None
    graph = _Graph(model)
    try:
        starts = _head_inputs(graph, outputs, ranks)
        walked = _ancestors(graph, starts) if starts else None
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if walked is None:
        return None
    order, parents = walked
    sources = {id(t) for t in images if len(t.shape) in ranks}
    if not _reaches_input(graph, parents, starts, None, sources):
        return None  # the heads read no image
    for tensor in reversed(order):
        tap = _eligible(graph, tensor, ranks)
        if tap is not None and not _reaches_input(graph, parents, starts, tensor, sources):
            return tap
    return None
