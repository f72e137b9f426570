"""Gradient-based explaining methods."""

from __future__ import annotations

from keras import ops

from .. import backend
from ..filters import SPATIAL_AXIS
from ._common import as_indices, as_inputs, positive_axes, unit_selector


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
    grads = result.input_gradients  # (batch, *spatial, channels, units)
    maps = ops.mean(gradient_filter(grads), axis=-2)
    return result.scores, maps


__all__ = ["gradients"]
