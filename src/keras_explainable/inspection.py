"""Finding layers in models, exposing intermediate signals, gathering units.

The central piece is :func:`expose`: it returns a model whose outputs are
``[logits, *activations]`` — what the CAM methods differentiate. Unlike a
``keras.Model(model.inputs, [...])`` rebuild, it works for layers crossed by skip
connections, layers inside nested base models, Sequential models built without
an ``Input`` and subclassed models, because it observes the layers while the
original model runs (see ``_taps``) instead of cutting its graph.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._axes import SPATIAL_AXIS  # noqa: F401  (public: ke.inspection.SPATIAL_AXIS)
from ._taps import Tap, check_recorded, recorded, tapped

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


def _sublayers(layer) -> list:
    """Direct sub-layers of a model (empty for a plain layer)."""
    if isinstance(layer, keras.Model) or hasattr(layer, "layers"):
        try:
            return list(layer.layers)
        except (AttributeError, TypeError):
            return []
    return []


def flatten_layers(model, include_models: bool = True) -> list[tuple[tuple[str, ...], Any]]:
    """All layers of ``model``, nested models unrolled, as ``(path, layer)`` pairs.

    ``path`` holds the names from the outermost model to the layer, e.g.
    ``("resnet50v2", "post_relu")``. The order is the models' own layer order
    (topological for functional models), depth-first.

    Args:
        model: a Keras model.
        include_models: also list the nested models themselves.

    Returns:
        a list of ``(path, layer)``.
    """
    found = []

    def visit(container, prefix):
        for layer in _sublayers(container):
            path = prefix + (layer.name,)
            nested = _sublayers(layer)
            if not nested or include_models:
                found.append((path, layer))
            if nested:
                visit(layer, path)

    visit(model, ())
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
            ``("resnet50v2", "conv5_block3_out")``.

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
        children = {layer.name: layer for layer in _sublayers(container)}
        if step not in children:
            _raise_unknown("/".join(names), ["/".join(p) for p, _ in flatten_layers(model)])
        container = children[step]
    return container


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


# --------------------------------------------------------------------------- tracing


def input_shape_of(model) -> tuple | None:
    """The model's input shape (batch first) when Keras knows it, else None."""
    for candidate in (model, getattr(model, "explained_model", None)):
        if candidate is None:
            continue
        try:
            inputs = candidate.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            return tuple(inputs[0].shape)
    return None


def _dummy_batch(model, input_shape):
    import numpy as np

    shape = input_shape or input_shape_of(model)
    if shape is None:
        raise ValueError(
            f"Cannot tell the input shape of '{model.name}' (it was built without an "
            "`Input`). Call the model on a batch once, or pass `input_shape`."
        )
    shape = (1,) + tuple(64 if d is None else int(d) for d in tuple(shape)[1:])
    dtype = keras.config.floatx()
    return np.zeros(shape, dtype=dtype)


def trace_layer_calls(model, input_shape=None) -> list[dict]:
    """Run ``model`` once on zeros and report every layer call, in execution order.

    Args:
        model: the model.
        input_shape: the input shape, batch first, when ``model.inputs`` is unknown.

    Returns:
        a list of ``{"path", "layer", "call_index", "output_shape"}`` dicts.
    """
    from . import backend

    taps = [Tap(layer, call_index=None, path=path) for path, layer in flatten_layers(model)]
    records = []

    def record(position, output):
        records.append((taps[position], getattr(output, "shape", None)))
        return output

    with tapped(taps, record):
        backend.forward(model, _dummy_batch(model, input_shape))
    calls, counts = [], {}
    for tap, shape in records:
        index = counts.get(id(tap.layer), 0)
        counts[id(tap.layer)] = index + 1
        calls.append(
            {
                "path": tap.path,
                "layer": tap.layer,
                "call_index": index,
                "output_shape": None if shape is None else tuple(shape),
            }
        )
    return calls


# --------------------------------------------------------------------------- exposure


class ExposedModel(keras.Model):
    """A view of a model that outputs ``[logits, *activations]``.

    Built by :func:`expose`. It runs the original model unchanged and reports
    what the chosen layers produced, so it works whatever the original's
    architecture (nested, residual, subclassed). It owns no weights of its own:
    its variables are the original model's.

    Attributes:
        explained_model: the model being explained.
        logits_tap: where the logits come from.
        activation_taps: the intermediate signals exposed.
    """

    def __init__(self, model, logits_tap: Tap, activation_taps: Sequence[Tap], name=None):
        super().__init__(name=name or f"{model.name}_exposed")
        self.explained_model = model
        self._taps = (logits_tap, *activation_taps)
        if model.built:
            self.built = True

    @property
    def logits_tap(self) -> Tap:
        return self._taps[0]

    @property
    def activation_taps(self) -> tuple[Tap, ...]:
        return self._taps[1:]

    def call(self, inputs, training=False):
        context, values = recorded(self._taps)
        with context:
            self.explained_model(inputs, training=training)
        check_recorded(self._taps, values)
        return list(values)

    def __repr__(self):
        names = ", ".join(t.name for t in self._taps)
        return f"<ExposedModel of '{self.explained_model.name}': [{names}]>"


def _descriptor_to_tap(model, descriptor, role: str) -> Tap:
    """Turn an endpoint descriptor into a Tap.

    Descriptors: an int (index in ``model.layers``), a name, a path tuple, a
    layer, or a dict with ``name``/``layer``, ``link`` (``"output"`` or
    ``"input"``) and ``node`` (which call of the layer during one forward pass;
    ``"last"`` or ``-1`` for its last call, found by running the model once).
    """
    link, node, last = "output", 0, False
    if isinstance(descriptor, dict):
        unknown = set(descriptor) - {"name", "layer", "link", "node"}
        if unknown or not ({"name", "layer"} & set(descriptor)):
            raise ValueError(
                f"A {role} descriptor dict takes 'name' or 'layer', plus optional 'link' and "
                f"'node'; got keys {sorted(descriptor)}."
            )
        link = descriptor.get("link", "output")
        node = descriptor.get("node", 0)
        last = node == "last" or node == -1
        if last:
            node = 0  # resolved below, once the layer is known
        if not isinstance(node, int) or node < 0:
            raise ValueError(f"A descriptor's 'node' is a call index >= 0, not {node!r}.")
        descriptor = descriptor["layer"] if "layer" in descriptor else descriptor["name"]
    if isinstance(descriptor, bool):
        raise TypeError(f"A {role} descriptor cannot be a bool.")
    if isinstance(descriptor, int):
        layers = _sublayers(model)
        if not -len(layers) <= descriptor < len(layers):
            raise ValueError(
                f"Layer index {descriptor} is out of range: '{model.name}' has "
                f"{len(layers)} layers."
            )
        layer = layers[descriptor]
    elif isinstance(descriptor, (str, tuple, list)):
        layer = get_nested_layer(model, descriptor)
    elif isinstance(descriptor, keras.layers.Layer):
        layer = descriptor
        if not any(candidate is layer for _, candidate in flatten_layers(model)):
            raise ValueError(f"The layer '{layer.name}' is not part of '{model.name}'.")
    else:
        raise TypeError(
            f"A {role} descriptor is a layer index (int), a name (str), a path (tuple of "
            f"str), a keras Layer or a dict; got {type(descriptor).__name__}."
        )
    if link not in ("output", "input"):
        raise ValueError(f"A descriptor's 'link' is 'output' or 'input', not {link!r}.")
    if last:
        calls = [c for c in trace_layer_calls(model) if c["layer"] is layer]
        node = max(len(calls) - 1, 0)
    return Tap(layer, call_index=node, path=_path_of(model, layer), link=link)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _reads_model_inputs(model, layer) -> bool:
    """Whether ``layer`` is applied straight to the model's input (no activation to explain)."""
    try:
        layer_input = layer.input
        model_inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return False
    return any(layer_input is tensor for tensor in model_inputs)


def default_activation_tap(model, input_shape=None) -> Tap:
    """The signal CAM methods explain by default.

    The input of the last global pooling (or ``Flatten``) layer, searched in
    nested models too; failing that, the output of the last layer that still
    has spatial dimensions.

    Raises:
        ValueError: when the model has no spatial layer; the message lists the
            layers looked at and how to name one.
    """
    try:
        pooling = get_global_pooling_layer(model)
    except ValueError:
        pooling = None
    if pooling is not None and not _reads_model_inputs(model, pooling):
        return Tap(pooling, path=_path_of(model, pooling), link="input")
    calls = trace_layer_calls(model, input_shape)
    rank = len(_dummy_batch(model, input_shape).shape)
    for call in reversed(calls):
        shape = call["output_shape"]
        if shape is None or len(shape) != rank or _sublayers(call["layer"]):
            continue
        if all(d is not None and d > 1 for d in shape[1:-1]) and len(shape) > 2:
            return Tap(call["layer"], call["call_index"], call["path"])
    looked_at = (
        ", ".join(f"{'/'.join(c['path'])} {c['output_shape']}" for c in calls)
        or "none (the model has no layers)"
    )
    raise ValueError(
        f"'{model.name}' has no layer with a spatial output (a map of rank {rank} with "
        f"height/width > 1) to explain with a CAM method. Layers looked at: {looked_at}. "
        "Pass one explicitly: ke.inspection.expose(model, arguments='layer_name')."
    )


def expose(model, arguments=None, outputs=None, input_shape=None) -> ExposedModel:
    """Expose the logits and intermediate signals a CAM method needs.

    Args:
        model: the model being explained (never modified).
        arguments: the intermediate signal(s) to expose, as descriptors (see
            below); a list exposes several. ``None`` picks the input of the last
            global pooling / ``Flatten`` layer (or the last spatial layer).
        outputs: the logits descriptor. ``None`` picks the last layer with a
            ``kernel`` (a Dense or Conv classifier); pass the model's last layer
            if you want its activated output.
        input_shape: only needed to search a model whose input shape Keras does
            not know (built without an ``Input``).

    Descriptors are an int (index in ``model.layers``), a name, a tuple of
    names leading into nested models (``("resnet50v2", "post_relu")``), a
    Layer, or a dict ``{"name" or "layer": ..., "link": "output" | "input",
    "node": call_index}``.

    Returns:
        an :class:`ExposedModel` whose call returns ``[logits, *activations]``.

    Example:
        >>> model = keras.applications.ResNet50V2(weights=None, classifier_activation=None)
        >>> exposed = ke.inspection.expose(model)
        >>> logits, activations = exposed(np.zeros((1, 224, 224, 3)))
        >>> activations.shape
        (1, 7, 7, 2048)
    """
    if isinstance(model, ExposedModel):
        model = model.explained_model
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"expose() takes a keras.Model, not {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"'{model.name}' is not built yet, so its layers have no weights to look at. Build "
            "it first: call it once on a batch, or `model.build((None, *input_shape))`."
        )
    if outputs is None:
        try:
            logits = Tap(get_logits_layer(model), path=())
            logits = Tap(logits.layer, path=_path_of(model, logits.layer))
        except ValueError as error:
            raise ValueError(
                f"'{model.name}' has no layer with a kernel to use as logits; pass "
                "`outputs=` (a layer, its name or index)."
            ) from error
    else:
        logits = _descriptor_to_tap(model, outputs, "logits")
    if arguments is None:
        activations = [default_activation_tap(model, input_shape)]
    else:
        activations = [_descriptor_to_tap(model, a, "argument") for a in _as_list(arguments)]
    return ExposedModel(model, logits, activations)


_EXPOSURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def activation_taps(model, input_shape=None) -> tuple[Tap, ...]:
    """The intermediate signals a CAM method should explain for ``model``.

    - an :class:`ExposedModel`: the activations it exposes;
    - a model with several outputs ``[logits, *activations]`` (the seed's
      convention for exposed functional models): the layers producing
      ``activations``;
    - a single-output model: the default of :func:`expose` (cached per model).
    """
    if isinstance(model, ExposedModel):
        return model.activation_taps
    outputs = None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        pass
    if outputs and len(outputs) > 1:
        taps = []
        for tensor in outputs[1:]:
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                raise ValueError(
                    f"Cannot tell which layer produces the output {tensor} of '{model.name}'; "
                    "use ke.inspection.expose(model, arguments=...) instead."
                )
            layer = history[0]
            taps.append(Tap(layer, 0, _path_of(model, layer)))
        return tuple(taps)
    try:
        cached = _EXPOSURES.get(model)
    except TypeError:
        cached = None
    if cached is None:
        cached = (default_activation_tap(model, input_shape),)
        try:
            _EXPOSURES[model] = cached
        except TypeError:
            pass
    return cached


def first_output(outputs):
    """The first output of a model (its logits, for an exposed model)."""
    if isinstance(outputs, dict):
        raise ValueError(
            "Models with dict outputs are not supported; wrap the model so that the "
            "scores to explain are its first output."
        )
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


# --------------------------------------------------------------------------- units


def gather_units(tensor, indices, axis: int = -1, batch_dims: int = -1):
    """Select the explained units from a ``(batch, units)`` tensor.

    Args:
        tensor: the model's scores, ``(batch, classes)``.
        indices: ``None`` (every unit); ``(batch, units)`` integers, a row per
            sample; or ``(batch,)`` integers, one unit per sample (returned as
            ``(batch, 1)``; the original library gathered these across samples).
            With ``batch_dims=0`` the same ``(units,)`` indices serve every sample.
        axis: the axis holding the units (only the last is supported).
        batch_dims: ``-1`` (indices carry a batch axis) or ``0`` (shared indices).

    Returns:
        ``(batch, units)`` scores.

    Example:
        >>> logits = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]])
        >>> ke.inspection.gather_units(logits, np.array([1, 2]))
        array([[0.9], [0.8]])
    """
    tensor = ops.convert_to_tensor(tensor)
    if indices is None:
        return tensor
    if axis not in (-1, len(tensor.shape) - 1):
        raise ValueError(f"Units are gathered from the last axis; got axis={axis}.")
    indices = ops.cast(ops.convert_to_tensor(indices), "int32")
    if batch_dims == 0:
        return ops.take(tensor, indices, axis=-1)
    if batch_dims not in (-1, 1):
        raise ValueError(
            f"batch_dims is -1, 1 (indices per sample) or 0 (shared); got {batch_dims}."
        )
    if len(indices.shape) == 1:
        indices = indices[:, None]
    if len(tensor.shape) != 2 or len(indices.shape) != 2:
        raise ValueError(
            f"Cannot gather units of shape {tuple(indices.shape)} from scores of shape "
            f"{tuple(tensor.shape)}: expected (batch, classes) scores and (batch, units) indices."
        )
    return ops.take_along_axis(tensor, indices, axis=-1)


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


def layers_with_biases(model, exclude: Sequence = (), return_biases: bool = True):
    """Layers that add a bias term to their output (Dense, Conv, normalization).

    Args:
        model: the model (nested models are searched).
        exclude: layers (or names) to leave out, e.g. the logits layer.
        return_biases: also return each layer's bias tensor (see :func:`bias_of`).

    Returns:
        ``(layers, biases)``, or only ``layers`` when ``return_biases`` is false.
    """
    excluded = {id(e) for e in exclude if not isinstance(e, str)}
    excluded_names = {e for e in exclude if isinstance(e, str)}
    layers, biases = [], []
    for _, layer in flatten_layers(model, include_models=False):
        if id(layer) in excluded or layer.name in excluded_names:
            continue
        bias = bias_of(layer)
        if bias is not None:
            layers.append(layer)
            biases.append(bias)
    return (layers, biases) if return_biases else layers


def biases(layers: Sequence) -> list:
    """The bias term of each layer (see :func:`bias_of`)."""
    return [bias_of(layer) for layer in layers]
