"""Gradient-based explaining methods.

- :func:`gradients` — the saliency map (Simonyan et al., 2013);
- :func:`gradients_x_inputs` — gradient times input (Shrikumar et al., 2016);
- :func:`integrated_gradients` — path-integrated gradients (Sundararajan et al., 2017);
- :func:`full_gradients` — FullGrad, input and bias gradients (Srinivas & Fleuret, 2019),
  with :func:`full_gradient_decomposition` for the raw terms.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from .. import backend, filters, inspection
from .._axes import SPATIAL_AXIS
from .._taps import Tap
from ..resizing import resize
from ._common import (
    as_indices,
    as_inputs,
    check_chunk_size,
    chunked,
    positive_axes,
    tile_indices,
    ungroup,
    unit_selector,
    widen,
)


def gradients(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    gradient_filter=ops.absolute,
):
    """Gradient back-propagation (saliency maps).

    The gradient of each explained unit w.r.t. every input value, filtered
    (``|.|`` by default) and averaged over the channels:
    ``map = mean_c(gradient_filter(d score / d x))``.

    Args:
        model: the model; when it has several outputs the first one is explained.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of ``inputs``.
        gradient_filter: applied to the gradients before the channel mean.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``.

    Example:
        >>> scores, maps = ke.methods.gradient.gradients(model, x, np.array([3, 1]))

    References:
        Simonyan, Vedaldi & Zisserman (2013). Deep Inside Convolutional
        Networks: Visualising Image Classification Models and Saliency Maps.
        arXiv:1312.6034.
    """
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    result = backend.value_and_gradients(
        model,
        inputs,
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims),
        wrt_inputs=True,
    )
    grads = widen(result.input_gradients)  # (batch, *spatial, channels, units)
    maps = ops.mean(gradient_filter(grads), axis=-2)
    return result.scores, maps


def gradients_x_inputs(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
):
    """Gradient x Input: each input value times the unit's gradient w.r.t. it.

    ``map = sum_c x_c * d score / d x_c`` — signed, summed (not averaged) over
    the channels, so that for a linear model without bias the map adds up to
    the score. Use ``postprocessing=ke.filters.absolute_normalize`` to look at
    magnitudes.

    Args:
        model: the model; when it has several outputs the first one is explained.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of ``inputs``.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``.

    Example:
        >>> scores, maps = ke.methods.gradient.gradients_x_inputs(model, x, np.array([3, 1]))

    References:
        Shrikumar, Greenside, Shcherbina & Kundaje (2016). Not Just a Black Box:
        Learning Important Features Through Propagating Activation Differences.
        arXiv:1605.01713.
    """
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    result = backend.value_and_gradients(
        model,
        inputs,
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims),
        wrt_inputs=True,
    )
    grads = widen(result.input_gradients)  # (batch, *spatial, channels, units)
    maps = ops.sum(grads * ops.cast(inputs, grads.dtype)[..., None], axis=-2)
    return result.scores, maps


# ------------------------------------------------------------------ integrated gradients

_RULES = ("midpoint", "trapezoid", "left", "right")


def path_points(steps: int, rule: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """The points ``alpha`` in ``[0, 1]`` and weights of a Riemann rule with ``steps`` intervals.

    ``sum_k weights[k] * g(alpha[k])`` approximates ``integral_0^1 g(alpha) d alpha``:

    - ``"midpoint"``: ``steps`` points at the interval centres ``(k + 1/2) / steps``,
      weights ``1 / steps``;
    - ``"trapezoid"``: ``steps + 1`` points ``k / steps``, weights ``1 / steps``
      (``1 / (2 steps)`` at both ends);
    - ``"left"`` / ``"right"``: ``steps`` points ``k / steps`` for ``k < steps`` /
      ``k >= 1``, weights ``1 / steps`` (the original paper uses the right sum).

    Args:
        steps: the number of intervals, >= 1.
        rule: one of ``"midpoint"``, ``"trapezoid"``, ``"left"``, ``"right"``.

    Returns:
        ``(alphas, weights)`` float64 numpy arrays.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(
            f"steps is the number of integration intervals (an int >= 1); got {steps!r}."
        )
    if rule not in _RULES:
        raise ValueError(f"rule is one of {_RULES}; got {rule!r}.")
    steps = int(steps)
    if rule == "midpoint":
        alphas = (np.arange(steps) + 0.5) / steps
        weights = np.full(steps, 1.0 / steps)
    elif rule == "trapezoid":
        alphas = np.arange(steps + 1) / steps
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] /= 2
    elif rule == "left":
        alphas = np.arange(steps) / steps
        weights = np.full(steps, 1.0 / steps)
    else:
        alphas = np.arange(1, steps + 1) / steps
        weights = np.full(steps, 1.0 / steps)
    return alphas, weights


def _baseline_like(baseline, inputs):
    if baseline is None:
        return ops.zeros_like(inputs)
    baseline = ops.cast(ops.convert_to_tensor(baseline), inputs.dtype)
    sample = tuple(inputs.shape[1:])
    shape = tuple(baseline.shape)
    fits = shape == tuple(inputs.shape)
    if not fits:
        try:
            fits = np.broadcast_shapes(shape, sample) == sample
        except ValueError:
            fits = False
    if not fits:
        raise ValueError(
            f"The baseline has shape {shape}; it must be a scalar, broadcast to one sample "
            f"{sample} (e.g. a whole sample or one value per channel), or match the batch "
            f"{tuple(inputs.shape)}."
        )
    return ops.zeros_like(inputs) + baseline


def integrated_gradients(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    baseline=None,
    n_steps: int = 32,
    rule: str = "midpoint",
    chunk_size: int | None = None,
):
    """Integrated Gradients: gradients averaged along the path from a baseline.

    ``IG_c(x) = (x_c - x'_c) * integral_0^1 d score / d x_c (x' + a (x - x')) da``,
    the integral approximated with a Riemann ``rule`` over ``n_steps`` intervals
    (see :func:`path_points`); ``map = sum_c IG_c`` (signed). By completeness
    ``sum(map) ~= score(x) - score(x')``: raise ``n_steps`` until it holds to the
    precision you need.

    The path points are batched: ``chunk_size`` points of the whole batch go
    through one forward+backward pass (``chunk_size * batch`` rows); ``None``
    evaluates every point in a single pass (fastest, most memory).

    The step count is ``n_steps`` (as in captum), so that it passes through
    :func:`ke.explain`, whose own ``steps`` counts dataset batches.

    Args:
        model: the model; when it has several outputs the first one is explained.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of ``inputs``.
        baseline: the reference input ``x'``: ``None`` (zeros), a scalar, an
            array broadcastable to one sample, or one baseline per sample
            ``(batch, ...)`` (direct calls only: ``explain`` pads batches).
        n_steps: the number of integration intervals.
        rule: ``"midpoint"`` (default), ``"trapezoid"``, ``"left"`` or ``"right"``.
        chunk_size: path points per pass, or ``None`` for all of them.

    Returns:
        ``(scores, maps)``: the scores at ``inputs`` ``(batch, units)`` and the
        attributions summed over channels ``(batch, *spatial, units)``.

    Example:
        >>> scores, maps = ke.methods.gradient.integrated_gradients(
        ...     model, x, np.array([3, 1]), n_steps=64, chunk_size=16)

    References:
        Sundararajan, Taly & Yan (2017). Axiomatic Attribution for Deep
        Networks. ICML. arXiv:1703.01365.
    """
    alphas, weights = path_points(n_steps, rule)
    check_chunk_size(chunk_size)
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    indices = as_indices(indices)
    baseline = _baseline_like(baseline, inputs)
    delta = inputs - baseline
    sample_rank = len(inputs.shape) - 1
    total = scores = None
    for start, stop in chunked(len(alphas), chunk_size):
        count = stop - start
        shape = (count, 1) + (1,) * sample_rank
        alpha = ops.reshape(ops.convert_to_tensor(alphas[start:stop], inputs.dtype), shape)
        weight = ops.convert_to_tensor(weights[start:stop], inputs.dtype)
        points = ops.reshape(baseline[None] + alpha * delta[None], (-1,) + tuple(inputs.shape[1:]))
        result = backend.value_and_gradients(
            model,
            points,
            unit_selector(
                tile_indices(indices, count, indices_batch_dims), indices_axis, indices_batch_dims
            ),
            wrt_inputs=True,
        )
        # (count, batch, ..., channels, units); float16 inputs: accumulate in float32
        grads = ungroup(widen(result.input_gradients), count)
        weight = ops.reshape(
            ops.cast(weight, grads.dtype), (count,) + (1,) * (len(grads.shape) - 1)
        )
        partial = ops.sum(grads * weight, axis=0)
        total = partial if total is None else total + partial
        if alphas[stop - 1] == 1.0:
            scores = ungroup(result.scores, count)[-1]
    if scores is None:
        outputs, values = backend.forward(model, inputs)
        scores = unit_selector(indices, indices_axis, indices_batch_dims)(outputs, values)
    maps = ops.sum(ops.cast(delta, total.dtype)[..., None] * total, axis=-2)
    return scores, maps


# ------------------------------------------------------------------ full gradients

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
        self.layer = layer
        self.name = f"{layer.name} (pre-activation)"

    def call(self, tensor):
        return tensor


def _has_fused_activation(layer) -> bool:
    if not isinstance(layer, _FUSED_ACTIVATION_LAYERS):
        return False
    activation = getattr(layer, "activation", None)
    return activation is not None and activation is not keras.activations.linear


@contextlib.contextmanager
def _pre_activations(proxies):
    """Route each proxied layer's pre-activation through its proxy; restored afterwards."""
    installed = []
    try:
        for proxy in proxies:
            layer = proxy.layer
            activation = layer.activation

            def routed(tensor, _proxy=proxy, _activation=activation):
                return _activation(_proxy.call(tensor))

            object.__setattr__(layer, "activation", routed)
            installed.append((layer, activation))
        yield
    finally:
        for layer, activation in reversed(installed):
            object.__setattr__(layer, "activation", activation)


def _is_exposed(model) -> bool:
    if isinstance(model, inspection.ExposedModel):
        return True
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return False
    return bool(outputs) and len(outputs) > 1


def _bias_taps(model, biases):
    """(taps, proxies, layers, biases) of the layers whose biases FullGrad accounts for."""
    if _is_exposed(model):
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
        taps, layers, found = [], [], []
        for path, layer in inspection.flatten_layers(model, include_models=False):
            bias = inspection.bias_of(layer)
            if bias is not None:
                taps.append(Tap(layer, 0, path))
                layers.append(layer)
                found.append(bias)
        if biases is None:
            biases = found
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
            proxy = _PreActivation(tap.layer)
            proxies.append(proxy)
            taps[position] = Tap(proxy, tap.call_index, tap.path + ("pre-activation",))
    return taps, proxies, layers, biases


class FullGradientDecomposition(NamedTuple):
    """The terms of ``score = sum(input_term) + sum_l sum(bias_terms[l])``.

    That equality is exact for networks that are piecewise linear in their
    input (ReLU, max/average pooling, batch norm in inference, ...).

    Attributes:
        scores: ``(batch, units)``.
        input_term: ``x * d score / d x``, ``(batch, *spatial, channels, units)``.
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
    inputs = as_inputs(inputs)
    taps, proxies, layers, biases = _bias_taps(model, biases)
    with _pre_activations(proxies):
        result = backend.value_and_gradients(
            model,
            inputs,
            unit_selector(as_indices(indices), indices_axis, indices_batch_dims),
            taps=taps,
            differentiate=tuple(range(len(taps))),
            wrt_inputs=True,
        )
    input_grads = widen(result.input_gradients)
    input_term = input_grads * ops.cast(inputs, input_grads.dtype)[..., None]
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


def full_gradients(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    psi=filters.absolute_normalize,
    biases=None,
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

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``.

    Example:
        >>> logits = ke.inspection.get_logits_layer(model)
        >>> inters, biases = ke.inspection.layers_with_biases(model, exclude=[logits])
        >>> exposed = ke.inspection.expose(model, inters, logits)
        >>> scores, maps = ke.methods.gradient.full_gradients(exposed, x, y, biases=biases)

    References:
        Srinivas & Fleuret (2019). Full-Gradient Representation for Neural
        Network Visualization. NeurIPS. arXiv:1905.00780.
    """
    inputs = as_inputs(inputs)
    rank = len(inputs.shape)
    axes = positive_axes(spatial_axis, rank)
    size = tuple(inputs.shape[a] for a in axes)
    decomposition = full_gradient_decomposition(
        model, inputs, indices, indices_axis, indices_batch_dims, biases=biases
    )
    # Terms are (batch, *spatial, channels, units): psi sees spatial + channel axes.
    term_axes = tuple(axes) + (rank - 1,)
    maps = ops.sum(psi(decomposition.input_term, axis=term_axes), axis=-2)
    for term in decomposition.bias_terms:
        if len(term.shape) != rank + 1:
            continue  # not spatial: no place in the map
        layer_map = ops.sum(psi(term, axis=term_axes), axis=-2)
        if tuple(layer_map.shape[a] for a in axes) != size:
            layer_map = resize(layer_map, size, axes, interpolation="bilinear")
        maps = maps + ops.cast(layer_map, maps.dtype)
    return decomposition.scores, maps


__all__ = [
    "FullGradientDecomposition",
    "full_gradient_decomposition",
    "full_gradients",
    "gradients",
    "gradients_x_inputs",
    "integrated_gradients",
    "path_points",
]
