"""FullGrad (Srinivas & Fleuret, 2019): input-gradients plus every layer's bias-gradients.

Re-exported by :mod:`keras_explainable.methods.gradient` (``ke.methods.gradient.full_gradients``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, NamedTuple

import keras
from keras import ops

from .. import backend, filters, inspection
from .._axes import SPATIAL_AXIS
from .._inputs import explained_positions, is_structure, leaves, pack
from .._layers import biased_layers
from .._taps import Tap
from ..resizing import resize
from ._common import (
    as_indices,
    as_inputs,
    positive_axes,
    prepare_target,
    unit_selector,
    widen,
)
from ._multi_input import full_gradient_maps

# Built-in layers that add their bias *before* their own ``activation``: for these
# the bias-gradient is taken w.r.t. the pre-activation tensor.
_FUSED_ACTIVATION_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Dense",
        "EinsumDense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    )
    if hasattr(keras.layers, name)
)


class _PreActivation:
    """Stands for the input of a layer's fused ``activation``, so that a Tap can see it.

    While :func:`_pre_activations` is active, the layer's activation becomes
    ``activation(proxy.call(z))``; a Tap on the proxy observes (and, for the
    gradient, perturbs) ``z = W x + b``.
    """

    def __init__(self, layer):
        # weak: the proxies are cached per layer (keyed weakly), so a strong
        # reference would keep every explained layer alive
        self._layer = weakref.ref(layer)
        self.name = f"{layer.name} (pre-activation)"

    @property
    def layer(self):
        return self._layer()

    def call(self, tensor):
        return tensor


def _has_fused_activation(layer) -> bool:
    if not isinstance(layer, _FUSED_ACTIVATION_LAYERS):
        return False
    activation = getattr(layer, "activation", None)
    return activation is not None and activation is not keras.activations.linear


# One proxy per layer, and the layer's activation rerouted through it while any
# FullGrad anywhere needs it (a count per layer, under a lock): concurrent calls
# from several threads share one routing and the last one restores the layer's own
# activation. The proxy's ``call`` is the identity unless a tap of the *current*
# context wraps it (taps are context-local), so every other caller of the layer
# (plain ``model(x)`` in another thread, another method) computes exactly what
# the plain layer computes.
_LOCK = threading.Lock()
_PROXIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ROUTED: dict = {}  # id(layer) -> [layer, its own activation, users]


def _proxy_of(layer) -> _PreActivation:
    with _LOCK:
        proxy = _PROXIES.get(layer)
        if proxy is None:
            proxy = _PROXIES[layer] = _PreActivation(layer)
        return proxy


@contextlib.contextmanager
def _pre_activations(proxies):
    """Route each proxied layer's pre-activation through its proxy; restored afterwards."""
    installed = []
    try:
        for proxy in proxies:
            layer = proxy.layer
            with _LOCK:
                entry = _ROUTED.get(id(layer))
                if entry is None:
                    activation = layer.activation

                    def routed(tensor, _proxy=proxy, _activation=activation):
                        return _activation(_proxy.call(tensor))

                    object.__setattr__(layer, "activation", routed)
                    entry = _ROUTED[id(layer)] = [layer, activation, 0]
                entry[2] += 1
            installed.append(layer)
        yield
    finally:
        with _LOCK:
            for layer in reversed(installed):
                entry = _ROUTED[id(layer)]
                entry[2] -= 1
                if entry[2] == 0:
                    object.__setattr__(layer, "activation", entry[1])
                    del _ROUTED[id(layer)]


def _is_exposed(model, convention: bool = True) -> bool:
    """An exposed model, or (``convention``) a model with outputs ``[logits, *activations]``."""
    if isinstance(model, inspection.ExposedModel):
        return True
    if not convention:  # a target reads the outputs: they are outputs, not activations
        return False
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return False
    return bool(outputs) and len(outputs) > 1


def _bias_taps(model, biases, convention=True):
    """(taps, proxies, layers, biases) of the layers whose biases FullGrad accounts for."""
    if _is_exposed(model, convention):
        taps = list(inspection.activation_taps(model))
        for tap in taps:
            if tap.link != "output":
                raise ValueError(
                    f"full_gradients needs the outputs of biased layers, but '{tap.name}' is "
                    "exposed by its input. Expose the layers themselves, e.g. "
                    "ke.inspection.expose(model, ke.inspection.layers_with_biases(model)[0])."
                )
        layers = [tap.layer for tap in taps]
        if biases is None:
            biases = [inspection.bias_of(layer) for layer in layers]
            missing = [tap.name for tap, bias in zip(taps, biases) if bias is None]
            if missing:
                raise ValueError(
                    f"The exposed layers {missing} add no bias; expose only layers from "
                    "ke.inspection.layers_with_biases(model), or pass `biases=`."
                )
    else:
        found = biased_layers(model)  # at any depth, Keras' attention projections too
        taps = [Tap(layer, 0, path) for path, layer, _ in found]
        layers = [layer for _, layer, _ in found]
        biases = [bias for _, _, bias in found] if biases is None else biases
    biases = list(biases)
    if len(biases) != len(taps):
        raise ValueError(
            f"`biases` has {len(biases)} entries but {len(taps)} biased layers are explained "
            f"({', '.join(t.name for t in taps)}); pass one bias per exposed layer, in order, "
            "or leave `biases=None`."
        )
    proxies = []
    for position, tap in enumerate(taps):
        if _has_fused_activation(tap.layer):
            proxy = _proxy_of(tap.layer)
            proxies.append(proxy)
            taps[position] = Tap(proxy, tap.call_index, tap.path + ("pre-activation",))
    return taps, proxies, layers, biases


class FullGradientDecomposition(NamedTuple):
    """The terms of ``score = sum(input_term) + sum_l sum(bias_terms[l])``.

    That equality is exact for networks that are piecewise linear in their
    input (ReLU, max/average pooling, batch norm in inference, ...).

    Attributes:
        scores: ``(batch, units)``.
        input_term: ``x * d score / d x``, ``(batch, *spatial, channels, units)``
            (a multi-input model: one per input, in the inputs' structure, ``None``
            at the inputs not explained; a feature vector's ``(batch, features, units)``).
        layers: the biased layers, in order.
        bias_terms: for each layer, ``b * d score / d z`` where ``z`` is the
            layer's output before its fused activation, ``z.shape + (units,)``.
    """

    scores: Any
    input_term: Any
    layers: list
    bias_terms: list


def full_gradient_decomposition(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    biases=None,
    target=None,
    explained_inputs=None,
) -> FullGradientDecomposition:
    """The raw input- and bias-gradient terms of the full-gradient representation.

    One forward and one backward pass give the gradient w.r.t. the inputs and
    w.r.t. the output of every biased layer (taps, see :mod:`._taps`). For
    built-in layers with a fused activation (``Conv2D(..., activation="relu")``)
    the gradient is taken before the activation, where the bias is added.

    Args:
        model: a model (every layer with a bias is used, see
            :func:`ke.inspection.layers_with_biases`) or an exposed model
            (:func:`ke.inspection.expose`) whose activations are the biased layers.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        biases: one bias per layer, in order; ``None`` reads them from the layers
            (batch norm folded with its own epsilon, see :func:`ke.inspection.bias_of`).
        target: what is explained (:mod:`ke.targets`); ``None``: the first
            output's units.

    Returns:
        a :class:`FullGradientDecomposition`.

    Example:
        >>> d = ke.methods.gradient.full_gradient_decomposition(model, x, np.array([3, 1]))
        >>> total = ops.sum(d.input_term, axis=(1, 2, 3)) + sum(
        ...     ops.sum(t, axis=tuple(range(1, len(t.shape) - 1))) for t in d.bias_terms)

    References:
        Srinivas & Fleuret (2019). Full-Gradient Representation for Neural
        Network Visualization. NeurIPS. arXiv:1905.00780.
    """
    structured = is_structure(inputs)
    inputs = as_inputs(inputs, structured=True)
    positions = explained_positions(inputs, explained_inputs) if structured else True
    runner, target = prepare_target(model, target)
    convention = target is None or not target.reads_model_outputs
    taps, proxies, layers, biases = _bias_taps(model, biases, convention)
    with _pre_activations(proxies):
        result = backend.value_and_gradients(
            runner,
            inputs,
            unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target),
            taps=taps,
            differentiate=tuple(range(len(taps))),
            wrt_inputs=positions,
        )
    if structured:  # one term per explained input
        grads, items = leaves(result.input_gradients), leaves(inputs)
        terms = [_input_term(x, g) if i in positions else None for i, (x, g) in
                 enumerate(zip(items, grads))]  # fmt: skip
        input_term = pack(inputs, terms)
    else:
        input_term = _input_term(inputs, result.input_gradients)
    bias_terms = []
    for tap, bias, value, grads in zip(taps, biases, result.tap_values, result.tap_gradients):
        # a mixed-precision layer's gradient is float16/bfloat16: its terms are float32
        grads = widen(grads)
        bias = ops.cast(ops.convert_to_tensor(bias), grads.dtype)
        value_shape = tuple(value.shape)
        if (
            len(bias.shape) > len(value_shape) - 1
            or tuple(bias.shape) != value_shape[len(value_shape) - len(bias.shape) :]
        ):
            raise ValueError(
                f"The bias of '{tap.name}' has shape {tuple(bias.shape)}, which does not match "
                f"the trailing axes of its output {value_shape}."
            )
        bias_terms.append(grads * bias[..., None])
    return FullGradientDecomposition(result.scores, input_term, layers, bias_terms)


def _input_term(x, gradients):
    gradients = widen(gradients)
    return gradients * ops.cast(x, gradients.dtype)[..., None]


def full_gradients(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    psi=filters.absolute_normalize,
    biases=None,
    target=None,
    explained_inputs=None,
):
    """FullGrad: input-gradient and bias-gradient maps, one map per explained unit.

    ``map = sum_c psi(x * grad_x)_c + sum_l sum_c up(psi(b_l * grad_{z_l}))_c``
    where ``z_l`` is the output of biased layer ``l`` (before a fused
    activation), ``b_l`` its bias (a batch norm's folded bias, a layer norm's
    beta), and ``up`` a bilinear resize to the input's spatial size.

    Choices, documented:

    - ``psi`` is applied to each term of each (sample, unit) over its spatial
      and channel axes together, as the authors' code does (the default
      ``absolute_normalize`` rescales ``|term|`` to ``[0, 1]``).
    - Only layers with spatial outputs (the rank of the inputs) enter the
      map; the bias-gradients of the others (e.g. a Dense layer after global
      pooling, the classifier) have no position, and FullGrad's saliency map
      leaves them out as well. They are still part of
      :func:`full_gradient_decomposition`.
    - Each unit gets its own map (the original keras-explainable summed the
      units into a single map).

    With a plain model every layer that has a bias is used (Dense, Conv, batch
    norm, layer/group norm, including the classifier, which then drops out
    as non-spatial). A layer called several times contributes its first call.

    Args:
        model: a model, or an exposed model whose activations are biased layers
            (the seed's ``expose(model, layers_with_biases(...)[0], logits)``).
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of ``inputs`` (and of the layers' outputs).
        psi: ``f(term, axis)`` applied to every term before summing over channels.
        biases: one bias per biased layer, in order (cached from
            ``ke.inspection.layers_with_biases``); ``None`` reads them from the layers.
        target: what is explained (:mod:`ke.targets`); ``None``: the first
            output's units.
        explained_inputs: a multi-input model's inputs to explain (positions;
            ``None``: every float input). Each gets its input term plus the
            spatial bias terms of the layers on its branch (the layers reading
            it, :mod:`keras_explainable._branches`); a feature vector gets its
            input term, ``(batch, features, units)``.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``
        (a multi-input model: one map per input, in its structure).

    Example:
        >>> logits = ke.inspection.get_logits_layer(model)
        >>> inters, biases = ke.inspection.layers_with_biases(model, exclude=[logits])
        >>> exposed = ke.inspection.expose(model, inters, logits)
        >>> scores, maps = ke.methods.gradient.full_gradients(exposed, x, y, biases=biases)

    References:
        Srinivas & Fleuret (2019). Full-Gradient Representation for Neural
        Network Visualization. NeurIPS. arXiv:1905.00780.
    """
    structured = is_structure(inputs)
    inputs = as_inputs(inputs, structured=True)
    decomposition = full_gradient_decomposition(
        model, inputs, indices, indices_axis, indices_batch_dims, biases=biases, target=target,
        explained_inputs=explained_inputs,
    )  # fmt: skip
    if not structured:
        axes = positive_axes(spatial_axis, len(inputs.shape))
        terms = decomposition.bias_terms
        return decomposition.scores, _map(inputs, decomposition.input_term, terms, axes, psi)
    return decomposition.scores, full_gradient_maps(model, inputs, decomposition, psi, _map)


def _map(x, input_term, bias_terms, axes, psi):
    """The FullGrad map of one input: its term plus the spatial bias terms, each psi'd."""
    rank = len(x.shape)
    size = tuple(x.shape[a] for a in axes)
    # Terms are (batch, *spatial, channels, units): psi sees spatial + channel axes.
    term_axes = tuple(axes) + (rank - 1,)
    maps = ops.sum(psi(input_term, axis=term_axes), axis=-2)
    for term in bias_terms:
        if len(term.shape) != rank + 1:
            continue  # not spatial: no place in the map
        layer_map = ops.sum(psi(term, axis=term_axes), axis=-2)
        if tuple(layer_map.shape[a] for a in axes) != size:
            layer_map = resize(layer_map, size, axes, interpolation="bilinear")
        maps = maps + ops.cast(layer_map, maps.dtype)
    return maps


# its public home: keras_explainable.methods.gradient (repr, docs, pickles)
FullGradientDecomposition.__module__ = "keras_explainable.methods.gradient"
