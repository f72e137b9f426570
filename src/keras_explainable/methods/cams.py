"""Class activation map (CAM) methods.

They share one path: the activations ``A`` of an intermediate layer (``(batch,
*spatial, channels)``), per-unit channel weights ``w`` (``(batch, channels,
units)``), and the map ``sum_k w_k A_k``. Each method only says how it weighs
the channels.
"""

from __future__ import annotations

from keras import ops

from .. import backend, inspection
from ..filters import SPATIAL_AXIS
from ._common import as_indices, as_inputs, positive_axes, unit_selector


def _single_activation(model, inputs):
    taps = inspection.activation_taps(model, input_shape=tuple(inputs.shape))
    if len(taps) != 1:
        raise ValueError(
            f"CAM methods explain one intermediate signal; the model exposes {len(taps)} "
            f"({', '.join(t.name for t in taps)}). Expose a single one."
        )
    return taps


def _activations_and_gradients(model, inputs, indices, indices_axis, indices_batch_dims):
    taps = _single_activation(model, inputs)
    result = backend.value_and_gradients(
        model,
        inputs,
        unit_selector(indices, indices_axis, indices_batch_dims),
        taps=taps,
        differentiate=(0,),
    )
    return result.scores, result.tap_values[0], result.tap_gradients[0]


def _spatial_activation_axes(activations, spatial_axis):
    rank = len(activations.shape)
    if rank < 3:
        raise ValueError(
            f"The explained activation has shape {tuple(activations.shape)}: it has no spatial "
            "axes. Expose a convolutional (spatial) layer instead."
        )
    return positive_axes(spatial_axis, rank)


def combine(activations, weights):
    """``sum_k weights[b, k, u] * activations[b, ..., k]`` -> ``(batch, *spatial, units)``."""
    shape = ops.shape(activations)
    flat = ops.reshape(activations, (shape[0], -1, shape[-1]))
    maps = ops.matmul(flat, ops.cast(weights, flat.dtype))
    return ops.reshape(maps, tuple(shape[:-1]) + (ops.shape(weights)[-1],))


def gradcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
):
    """Grad-CAM: channels weighted by the spatial mean of the unit's gradient.

    ``w_k = mean_ij d score / d A_ij^k`` and ``map = sum_k w_k A^k`` (the ReLU
    of the paper is the default ``postprocessing`` of :func:`ke.gradcam`).

    Args:
        model: an exposed model (:func:`ke.inspection.expose`) or any model, in
            which case the default signal of ``expose`` is used.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes (of the inputs and of the activations).

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> model = ke.inspection.expose(model)
        >>> scores, cams = ke.methods.cams.gradcam(model, x, np.array([[16, 32]]))

    References:
        Selvaraju et al. (2017). Grad-CAM: Visual Explanations from Deep
        Networks via Gradient-based Localization. ICCV. arXiv:1610.02391.
    """
    inputs = as_inputs(inputs)
    scores, activations, grads = _activations_and_gradients(
        model, inputs, as_indices(indices), indices_axis, indices_batch_dims
    )
    axes = _spatial_activation_axes(activations, spatial_axis)
    weights = ops.mean(grads, axis=axes)  # (batch, channels, units)
    return scores, combine(activations, weights)


def _classifier_kernel(model, logits_layer):
    if logits_layer is None:
        if isinstance(model, inspection.ExposedModel):
            logits_layer = model.logits_tap.layer
        else:
            logits_layer = inspection.get_logits_layer(model)
    elif not hasattr(logits_layer, "kernel"):
        logits_layer = inspection.get_nested_layer(model, logits_layer)
    kernel = ops.convert_to_tensor(logits_layer.kernel)
    if len(kernel.shape) != 2:
        if any(d != 1 for d in kernel.shape[:-2]):
            raise ValueError(
                f"CAM needs a Dense or 1x1-convolution classifier; '{logits_layer.name}' has "
                f"a kernel of shape {tuple(kernel.shape)}."
            )
        kernel = ops.reshape(kernel, tuple(kernel.shape[-2:]))
    return kernel  # (channels, classes)


def cam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    logits_layer=None,
):
    """CAM: channels weighted by the classifier's weights for the unit.

    Valid for architectures ``activations -> global average pooling ->
    Dense/1x1-conv classifier``: ``map_u = sum_k W[k, u] A^k``.

    Args:
        model: an exposed model, or any model (default exposure).
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes.
        logits_layer: the classifier layer (or its name); defaults to the
            exposed logits layer, or the last layer with a kernel.

    Returns:
        ``(scores, maps)``.

    References:
        Zhou et al. (2016). Learning Deep Features for Discriminative
        Localization. CVPR. arXiv:1512.04150.
    """
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    taps = _single_activation(model, inputs)
    outputs, values = backend.forward(model, inputs, taps=taps)
    scores = unit_selector(indices, indices_axis, indices_batch_dims)(outputs, values)
    activations = values[0]
    _spatial_activation_axes(activations, spatial_axis)
    kernel = _classifier_kernel(model, logits_layer)
    if kernel.shape[0] != activations.shape[-1]:
        raise ValueError(
            f"The classifier kernel has {kernel.shape[0]} input channels but the activation "
            f"has {activations.shape[-1]}; CAM needs activations -> GAP -> classifier."
        )
    batch = ops.shape(activations)[0]
    if indices is None:
        weights = ops.broadcast_to(kernel[None], (batch,) + tuple(kernel.shape))
    else:
        if indices_batch_dims == 0:
            indices = ops.broadcast_to(indices[None], (batch,) + tuple(indices.shape))
        elif len(indices.shape) == 1:
            indices = indices[:, None]
        weights = ops.transpose(ops.take(kernel, indices, axis=1), (1, 0, 2))
    return scores, combine(activations, weights)


__all__ = ["cam", "combine", "gradcam"]
