"""Finding layers in models (nested models unrolled) and their bias terms.

Re-exported by :mod:`keras_explainable.inspection`, where users find them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._compat import tracked_sublayers

KERNEL_AXIS = -1

_POOLING_CLASSES = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.Flatten,
)
_NORMALIZATION_CLASSES = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


# --------------------------------------------------------------------------- layers


def _is_keras_builtin(layer) -> bool:
    """A layer class of Keras itself (``MultiHeadAttention``, ``LSTM``, ...)."""
    return type(layer).__module__.split(".")[0] == "keras"


def _sublayers(layer, builtin: bool = False) -> list:
    """Direct sub-layers of ``layer`` (empty for a plain layer).

    A model's ``layers``; for any other layer, the layers it holds as
    attributes (KerasHub's encoders and blocks, a user's custom layers), except
    inside Keras' own layers (the ``EinsumDense`` of a ``MultiHeadAttention``,
    the cell of an ``LSTM``), which are walked only with ``builtin`` (a path
    naming them explicitly).
    """
    if isinstance(layer, keras.Model) or hasattr(layer, "layers"):
        try:
            return list(layer.layers)
        except (AttributeError, TypeError, ValueError):
            return []
    if not isinstance(layer, keras.layers.Layer) or (_is_keras_builtin(layer) and not builtin):
        return []
    return tracked_sublayers(layer)


def flatten_layers(model, include_models: bool = True) -> list[tuple[tuple[str, ...], Any]]:
    """All layers of ``model``, nested models and layers unrolled, as ``(path, layer)`` pairs.

    ``path`` holds the names from the outermost model to the layer, e.g.
    ``("resnet50v2", "post_relu")`` or, inside a KerasHub backbone whose encoder
    holds its blocks as attributes, ``("vit_encoder", "transformer_block_2",
    "mha")``. The order is the models' own layer order (topological for
    functional models; the order they were assigned for layers holding
    layers), depth-first. Keras' own layers are not opened (see
    :func:`get_nested_layer` to reach inside them).

    Args:
        model: a Keras model.
        include_models: also list the containers (nested models, layers
            holding layers) themselves.

    Returns:
        a list of ``(path, layer)``.
    """
    found = []

    def visit(container, prefix, above):
        for layer in _sublayers(container):
            if id(layer) in above:  # a layer holding one of its containers: no cycle
                continue
            path = prefix + (layer.name,)
            nested = _sublayers(layer)
            if not nested or include_models:
                found.append((path, layer))
            if nested:
                visit(layer, path, above | {id(layer)})

    visit(model, (), {id(model)})
    return found


def _path_of(model, layer) -> tuple[str, ...]:
    for path, candidate in flatten_layers(model):
        if candidate is layer:
            return path
    return (layer.name,)


def get_nested_layer(model, name):
    """Retrieve a layer by name, or by a path of names into nested models.

    Args:
        model: the model holding the layer.
        name: a layer name (searched in nested models too when it is not a
            direct child), or a tuple/list of names such as
            ``("resnet50v2", "conv5_block3_out")``. A path walks nested models
            and layers held as attributes (KerasHub's encoders and blocks, and
            Keras' own layers: ``(..., "mha", "softmax")``); a path that does
            not start at the top, e.g. ``("vit_encoder", "transformer_block_2")``
            in a classifier holding the backbone, names the one layer whose
            path ends with it.

    Raises:
        ValueError: when no such layer exists (the message lists close names).

    Returns:
        the layer.

    Example:
        >>> base = keras.applications.ResNet50V2(include_top=False, weights=None)
        >>> model = keras.Sequential([base, keras.layers.GlobalAveragePooling2D()])
        >>> ke.inspection.get_nested_layer(model, ("resnet50v2", "post_relu")).name
        'post_relu'
    """
    names = [name] if isinstance(name, str) else list(name)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"A layer name is a string or a tuple of strings, not {name!r}.")
    if len(names) == 1:
        layers = flatten_layers(model)
        for path, layer in layers:  # direct children first, then nested ones
            if len(path) == 1 and layer.name == names[0]:
                return layer
        for _, layer in layers:
            if layer.name == names[0]:
                return layer
        _raise_unknown(names[0], [p[-1] for p, _ in layers])
    container = model
    for step in names:
        children = {}
        for layer in _sublayers(container, builtin=True):
            children.setdefault(layer.name, layer)
        if step not in children:
            return _by_suffix(model, names)
        container = children[step]
    return container


def _by_suffix(model, names):
    """The one layer whose path ends with ``names`` (a path from inside a nested model)."""
    layers = flatten_layers(model)
    found = [(p, layer) for p, layer in layers if p[-len(names) :] == tuple(names)]
    if len(found) == 1:
        return found[0][1]
    if found:
        raise ValueError(
            f"The path {'/'.join(names)!r} names {len(found)} layers: "
            f"{', '.join(repr('/'.join(p)) for p, _ in found)}. Give the full path."
        )
    _raise_unknown("/".join(names), ["/".join(p) for p, _ in layers])


def _raise_unknown(name, known):
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"The model has no layer named {name!r}.{hint}")


def find_layer_with(
    model,
    name: str | Sequence[str] | None = None,
    properties: Sequence[str] | None = None,
    klass: type | tuple[type, ...] | None = None,
    search_reversed: bool = True,
):
    """Find the first layer (last, by default) that meets every condition.

    Nested models are searched too.

    Args:
        model: the model to search.
        name: a layer name or path; when given, the other conditions are ignored.
        properties: attribute names the layer must have (e.g. ``("kernel",)``).
        klass: a layer class, or tuple of classes, the layer must be an instance of.
        search_reversed: search from the last layer to the first.

    Raises:
        ValueError: when no condition is given, or no layer meets them.

    Returns:
        the layer.
    """
    if name is None and properties is None and klass is None:
        raise ValueError("find_layer_with needs at least one of `name`, `properties`, `klass`.")
    if name is not None:
        return get_nested_layer(model, name)
    layers = [layer for _, layer in flatten_layers(model, include_models=False)]
    if search_reversed:
        layers.reverse()
    for layer in layers:
        if klass is not None and not isinstance(layer, klass):
            continue
        if properties and not all(_has_attribute(layer, p) for p in properties):
            continue
        return layer
    raise ValueError(
        f"No layer of '{model.name}' has the properties {properties} and class {klass}. "
        "Pass the layer (or its name) explicitly."
    )


def _has_attribute(layer, attribute) -> bool:
    try:
        return getattr(layer, attribute, None) is not None
    except Exception:  # some properties raise before the layer is built
        return False


def get_logits_layer(model, name: str | None = None):
    """The logits layer: ``name`` if given, else the last layer with a ``kernel``."""
    return find_layer_with(model, name, properties=("kernel",))


def get_global_pooling_layer(model, name: str | None = None):
    """The last global pooling (or ``Flatten``) layer, or the layer called ``name``."""
    return find_layer_with(model, name, klass=_POOLING_CLASSES)


def model_inputs(model) -> list:
    """The model's symbolic inputs (``[]`` when Keras does not know them).

    An exposed model (``explained_model``) answers with its own inputs, else with
    the inputs of the model it explains.
    """
    for candidate in (model, getattr(model, "explained_model", None)):
        if candidate is None:
            continue
        try:
            inputs = candidate.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            return list(inputs)
    return []


def input_shape_of(model) -> tuple | None:
    """The model's (first) input shape, batch first, when Keras knows it, else None."""
    inputs = model_inputs(model)
    return tuple(inputs[0].shape) if inputs else None


# --------------------------------------------------------------------------- biases


def bias_of(layer):
    """The additive term a layer contributes to its output, or None.

    For a ``BatchNormalization`` layer in inference this is
    ``beta - gamma * moving_mean / sqrt(moving_variance + epsilon)``, with the
    layer's own ``epsilon``, ``gamma = 1`` when ``scale=False`` and ``beta = 0``
    when ``center=False``. For Layer/Group normalization it is ``beta`` (None
    without ``center``). For Dense/Conv layers, ``bias`` (None without one).
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma = layer.gamma if getattr(layer, "scale", True) and layer.gamma is not None else 1.0
        beta = layer.beta if getattr(layer, "center", True) and layer.beta is not None else 0.0
        mean = ops.convert_to_tensor(layer.moving_mean)
        variance = ops.convert_to_tensor(layer.moving_variance)
        return beta - gamma * mean / ops.sqrt(variance + layer.epsilon)
    if isinstance(layer, _NORMALIZATION_CLASSES):
        beta = getattr(layer, "beta", None)
        return None if beta is None else ops.convert_to_tensor(beta)
    bias = getattr(layer, "bias", None)
    if bias is None or not getattr(layer, "use_bias", True):
        return None
    return ops.convert_to_tensor(bias)


#: Keras' own layers whose sub-layers add their biases to tensors of the model: the
#: projections of an attention layer (KerasHub's attention layers, subclasses from
#: another package, are opened anyway). Recurrent cells are not: their biases feed gates.
_OPENED_FOR_BIASES = (keras.layers.MultiHeadAttention,)


def biased_layers(model, exclude: Sequence = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    """``(path, layer, bias)`` of every layer adding a bias, at any depth (see :func:`bias_of`).

    Every leaf of :func:`flatten_layers` (so the layers inside nested models
    and inside layers holding layers, e.g. KerasHub's encoder blocks), and the
    projections inside Keras' ``MultiHeadAttention``. Constants a layer holding
    layers adds itself (a ViT's class token, a position embedding weight) are
    not a layer's bias and are not listed.
    """
    excluded = {id(e) for e in exclude if not isinstance(e, str)}
    excluded_names = {e for e in exclude if isinstance(e, str)}
    found, seen = [], set()
    for path, layer in flatten_layers(model, include_models=False):
        inner = []
        if isinstance(layer, _OPENED_FOR_BIASES):
            inner = [(path + (sub.name,), sub) for sub in _sublayers(layer, builtin=True)]
        for where, candidate in inner or [(path, layer)]:
            if id(candidate) in seen | excluded or candidate.name in excluded_names:
                continue
            seen.add(id(candidate))
            bias = bias_of(candidate)
            if bias is not None:
                found.append((where, candidate, bias))
    return found


def layers_with_biases(model, exclude: Sequence = (), return_biases: bool = True):
    """Layers that add a bias term to their output (Dense, Conv, normalization).

    Args:
        model: the model (nested models and layers holding layers are searched,
            and the projections of Keras' ``MultiHeadAttention``: :func:`biased_layers`).
        exclude: layers (or names) to leave out, e.g. the logits layer.
        return_biases: also return each layer's bias tensor (see :func:`bias_of`).

    Returns:
        ``(layers, biases)``, or only ``layers`` when ``return_biases`` is false.
    """
    found = biased_layers(model, exclude)
    layers, biases = [layer for _, layer, _ in found], [bias for _, _, bias in found]
    return (layers, biases) if return_biases else layers


def own_weights(layer) -> list:
    """The weights ``layer`` holds itself, not through the sub-layers :func:`flatten_layers` opens.

    A plain layer's (and a Keras ``MultiHeadAttention``'s, which is not opened)
    are all its weights; a nested model's usually none; a layer holding layers
    (a KerasHub encoder, a ViT embedding block) the weights it made itself,
    e.g. a class token or a position embedding.
    """
    inner = {id(v) for sub in _sublayers(layer) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def biases(layers: Sequence) -> list:
    """The bias term of each layer (see :func:`bias_of`)."""
    return [bias_of(layer) for layer in layers]
