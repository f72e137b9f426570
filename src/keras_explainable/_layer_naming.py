"""Which layer :func:`ke.explain_prediction` explains, and how it names it.

The exposed model of each (model, layer) is cached for the model's lifetime;
:func:`describe_layer` turns a tap back into a name usable as ``layer=``.
"""

from __future__ import annotations

import weakref

import keras

from . import _compat, inspection

__all__ = ["describe_layer"]

_EXPOSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_UNCACHEABLE = object()


def _layer_key(layer):
    if layer is None:
        return ("automatic",)
    if isinstance(layer, (str, int)):
        return layer
    if isinstance(layer, (tuple, list)):
        return tuple(layer)
    if isinstance(layer, keras.layers.Layer):
        return ("layer", id(layer))
    return _UNCACHEABLE  # dicts and other descriptors


def _resolve_layer_name(model, layer):
    """Accept ``"outer/inner"`` paths, as :func:`describe_layer` reports them."""
    if isinstance(layer, str) and "/" in layer:
        names = [p[-1] for p, _ in inspection.flatten_layers(model)]
        if layer not in names:
            return tuple(part for part in layer.split("/") if part)
    return layer


def _expose(model, layer, input_shape, convention=True, token_grid=None, prefix_tokens=None):
    """An exposed model for ``layer`` (cached per model, layer and token layout).

    ``convention``: a model with several outputs, all but the first spatial, is
    taken as ``[logits, *activations]`` (false when a target picks one of its outputs).
    ``token_grid`` / ``prefix_tokens``: how a token layer's tokens lie on the
    patch grid (see :func:`ke.inspection.expose`).
    """
    tokens = (token_grid, prefix_tokens) != (None, None)
    if tokens and layer is None:
        if isinstance(model, inspection.ExposedModel):  # its own signals, with the layout
            return inspection.ExposedModel(
                model.explained_model, model.logits_tap, model.activation_taps,
                token_grid=token_grid, prefix_tokens=prefix_tokens,
            )  # fmt: skip
        if convention and inspection.exposes_activations(model):
            layer = [
                {"layer": tap.layer, "link": tap.link, "node": tap.call_index}
                for tap in inspection.activation_taps(model)
            ]
    if isinstance(model, inspection.ExposedModel) and layer is None:
        return model
    if layer is None and not isinstance(model, inspection.ExposedModel):
        if convention and inspection.exposes_activations(model):  # [logits, activations]
            return model
    key = _layer_key(layer)
    if key is not _UNCACHEABLE and tokens:
        grid = None if token_grid is None else tuple(token_grid)
        key = (key, "tokens", grid, prefix_tokens)
    try:
        cache = _EXPOSED.setdefault(model, {})
    except TypeError:
        cache = {}
    if key is _UNCACHEABLE or key not in cache:
        exposed = inspection.expose(
            model, arguments=_resolve_layer_name(model, layer), input_shape=input_shape,
            token_grid=token_grid, prefix_tokens=prefix_tokens,
        )  # fmt: skip
        if key is _UNCACHEABLE:
            return exposed
        cache[key] = exposed
    return cache[key]


def describe_layer(model, tap) -> str:
    """A readable name for a tapped signal, usable as ``layer=`` again.

    The input of a pooling layer is reported as the layer producing it
    (``"features"``, or ``"base/features"`` inside a nested model) when the
    model's graph tells; otherwise as ``"<layer> (input)"``.
    """
    if tap.link != "input":
        return "/".join(tap.path) if tap.path else tap.layer.name
    try:
        nodes = _compat.inbound_nodes(tap.layer)
        parents = nodes[0].parent_nodes if len(nodes) == 1 else []
        if len(parents) != 1:
            raise ValueError
        producer = parents[0].operation
        prefix = list(tap.path[:-1])
        path = prefix + [producer.name]
        while isinstance(producer, keras.Model) and len(producer.outputs) == 1:
            history = _compat.keras_history(producer.outputs[0])
            if history is None:
                raise ValueError
            producer = history[0]
            path.append(producer.name)
        inspection.get_nested_layer(model, tuple(path))
        return "/".join(path)
    except Exception:  # no graph (subclassed, Input-less): say what we tapped
        return tap.name
