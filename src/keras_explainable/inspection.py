"""Finding layers in models, exposing intermediate signals, gathering units.

The central piece is :func:`expose`: it returns a model whose outputs are
``[logits, *activations]`` — what the CAM methods differentiate. Unlike a
``keras.Model(model.inputs, [...])`` rebuild, it works for layers crossed by skip
connections, layers inside nested base models, Sequential models built without
an ``Input`` and subclassed models, because it observes the layers while the
original model runs (see ``_taps``) instead of cutting its graph.

Layer finding lives in ``_layers`` and unit gathering in ``_units``; every
name stays importable from here (``ke.inspection.gather_units``, ...).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import keras

from . import _token_grid
from ._axes import SPATIAL_AXIS  # noqa: F401  (public: ke.inspection.SPATIAL_AXIS)
from ._compat import keras_history
from ._dense_heads import dense_prediction_tap
from ._layers import (  # noqa: F401  (re-exported: ke.inspection.*)
    _NORMALIZATION_CLASSES,
    _POOLING_CLASSES,
    KERNEL_AXIS,
    _path_of,
    _sublayers,
    bias_of,
    biases,
    find_layer_with,
    flatten_layers,
    get_global_pooling_layer,
    get_logits_layer,
    get_nested_layer,
    input_shape_of,
    layers_with_biases,
)
from ._logits import (  # noqa: F401  (followed_to_units: ke.inspection.*)
    default_logits_tap,
    followed_to_units,
    pooling_before_classifier,
)
from ._taps import Tap, check_recorded, recorded, tapped
from ._units import first_output, gather_units  # noqa: F401  (re-exported: ke.inspection.*)

# --------------------------------------------------------------------------- tracing


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
        token_grid, prefix_tokens: how a token layer's tokens lie on the patch
            grid (None: guessed; see :func:`expose`).
    """

    def __init__(
        self, model, logits_tap: Tap, activation_taps: Sequence[Tap], name=None,
        token_grid=None, prefix_tokens=None,
    ):  # fmt: skip
        super().__init__(name=name or f"{model.name}_exposed")
        self.explained_model = model
        self._taps = (logits_tap, *activation_taps)
        self.token_grid, self.prefix_tokens = _token_grid.check_options(token_grid, prefix_tokens)
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
    return [] if value is None else value if isinstance(value, list) else [value]


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

    A segmenter's or detector's (spatial outputs): the features its per-pixel
    or per-anchor heads read (:mod:`._dense_heads`). A classifier's: the input
    of the last global pooling (or ``Flatten``) layer before the classifier,
    searched in nested models too; for a transformer (attention layers running
    after the last spatial layer), its last block: the block's output before
    the final norm and pooling, or its input when the model has a class token
    (see :func:`._token_grid.last_block_tap`); failing that, the output of the
    last layer that still has spatial dimensions.

    Raises:
        ValueError: when the model has no spatial layer; the message lists the
            layers looked at and how to name one.
    """
    if (dense := dense_prediction_tap(model)) is not None:
        return dense
    pooling = pooling_before_classifier(model)
    if pooling is not None and not _reads_model_inputs(model, pooling):
        return Tap(pooling, path=_path_of(model, pooling), link="input")
    calls = trace_layer_calls(model, input_shape)
    rank = len(_dummy_batch(model, input_shape).shape)
    spatial = None
    for position in range(len(calls) - 1, -1, -1):
        call = calls[position]
        shape = call["output_shape"]
        if shape is None or len(shape) != rank or _sublayers(call["layer"]):
            continue
        if all(d is not None and d > 1 for d in shape[1:-1]) and len(shape) > 2:
            spatial = position
            break
    transformer = _token_grid.last_block_tap(
        calls,
        after=-1 if spatial is None else spatial,
        size=_token_grid.image_size(_dummy_batch(model, input_shape), SPATIAL_AXIS),
        strides=_token_grid.patch_strides(model),
    )
    if transformer is not None:  # attention runs after the last spatial layer
        return transformer
    if spatial is not None:
        call = calls[spatial]
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


def expose(
    model, arguments=None, outputs=None, input_shape=None, token_grid=None, prefix_tokens=None
) -> ExposedModel:
    """Expose the logits and intermediate signals a CAM method needs.

    Args:
        model: the model being explained (never modified).
        arguments: the intermediate signal(s) to expose, as descriptors (see
            below); a list exposes several. ``None``: :func:`default_activation_tap`
            (a classifier's last pooling input; a segmenter's or detector's head input).
        outputs: the logits descriptor. ``None`` picks the last layer with a
            ``kernel`` (a Dense or Conv classifier), followed through any
            flatten/reshape/dropout-like layers to its ``(batch, units)``
            tensor (a 1x1-conv classifier's ``Flatten``), or the model's own
            ``(batch, units)`` output when there is none. A layer given is used as
            given (its ``(batch, 1, 1, units)`` followed to ``(batch, units)`` too).
        input_shape: only needed to search a model whose input shape Keras does
            not know (built without an ``Input``).
        token_grid: for a layer that outputs tokens ``(batch, tokens, dim)`` of
            an image model (a vision transformer), the patch grid ``(gh, gw)``
            the tokens lie on; ``None`` guesses it from the token count, the
            input size and the model's patch size. CAM maps come out on the
            grid, ``(batch, gh, gw, units)``.
        prefix_tokens: how many tokens come before the patch tokens (class,
            distillation, register tokens; dropped from the maps); ``None``:
            what the token count leaves beside the grid.

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
            logits = default_logits_tap(model)
        except ValueError as error:
            raise ValueError(
                f"'{model.name}' has no layer with a kernel to use as logits; pass "
                "`outputs=` (a layer, its name or index)."
            ) from error
    else:
        logits = default_logits_tap(model, _descriptor_to_tap(model, outputs, "logits"))
    if arguments is None:
        activations = [default_activation_tap(model, input_shape)]
    else:
        activations = [_descriptor_to_tap(model, a, "argument") for a in _as_list(arguments)]
    return ExposedModel(
        model, logits, activations, token_grid=token_grid, prefix_tokens=prefix_tokens
    )


_EXPOSURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def exposes_activations(model) -> bool:
    """Whether ``model``'s outputs follow the seed's ``[logits, *activations]`` convention.

    True for a functional model with several outputs whose outputs after the first
    all have spatial axes (rank >= 3): feature maps a CAM method can explain, as in
    ``keras.Model(inputs, [logits, conv_features])``. A model whose other outputs are
    vectors (a box, a regression value, a second classifier) is a multi-output
    model: its outputs are all outputs, and ``target=`` picks one.
    """
    try:
        outputs = list(model.outputs or [])
    except (AttributeError, ValueError, TypeError):
        return False
    if len(outputs) < 2:
        return False
    return all(len(getattr(tensor, "shape", ())) >= 3 for tensor in outputs[1:])


def activation_taps(model, input_shape=None, convention: bool = True) -> tuple[Tap, ...]:
    """The intermediate signals a CAM method should explain for ``model``.

    - an :class:`ExposedModel`: the activations it exposes;
    - with ``convention``, a model with several outputs ``[logits,
      *activations]`` (the seed's convention for exposed functional models; see
      :func:`exposes_activations`): the layers producing ``activations``;
    - any other model: the default of :func:`expose` (cached per model).

    ``convention=False`` when the model's outputs are all outputs (a target
    such as ``ke.targets.output(name)`` picks one of them).
    """
    if isinstance(model, ExposedModel):
        return model.activation_taps
    if convention and exposes_activations(model):
        taps = []
        for tensor in model.outputs[1:]:
            history = keras_history(tensor)
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
