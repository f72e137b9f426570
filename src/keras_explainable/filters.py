"""Post-processing filters for explaining maps.

Every filter has the signature ``f(x, axis=SPATIAL_AXIS)`` and works on a batch of
maps shaped ``(batch, *spatial, units)``. ``axis`` names the spatial axes: the
normalizing filters rescale each (sample, unit) map to ``[0, 1]`` over them.

Example:
    >>> maps = keras.ops.convert_to_tensor(np.random.randn(2, 7, 7, 3))
    >>> ke.filters.positive_normalize(maps).shape
    (2, 7, 7, 3)
"""

from __future__ import annotations

from keras import ops

from ._axes import SPATIAL_AXIS
from ._precision import widen

_EPSILON = 1e-12


def normalize(x, axis=SPATIAL_AXIS):
    """Min-max normalize each map to ``[0, 1]`` over ``axis``.

    A constant map (``max == min``) becomes all zeros instead of NaN.
    float16 / bfloat16 maps are normalized in float32 (their range
    ``max - min`` can overflow float16, and the guard against a zero range
    rounds to 0 in it) and returned in their own dtype.

    Args:
        x: maps, ``(batch, *spatial, units)``.
        axis: the spatial axes to normalize over.

    Returns:
        the normalized maps, same shape and dtype as ``x``.
    """
    x = ops.convert_to_tensor(x)
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    values = widen(x)
    lowest = ops.min(values, axis=axis, keepdims=True)
    highest = ops.max(values, axis=axis, keepdims=True)
    scaled = (values - lowest) / ops.maximum(highest - lowest, _EPSILON)
    scaled = ops.clip(scaled, 0.0, 1.0)  # compilers may reorder the arithmetic by an ulp
    return scaled if values is x else ops.cast(scaled, x.dtype)


def positive(x, axis=SPATIAL_AXIS):
    """Keep the positive part: ``max(x, 0)``. ``axis`` is accepted for uniformity."""
    del axis
    return ops.relu(ops.convert_to_tensor(x))


def negative(x, axis=SPATIAL_AXIS):
    """Keep the negative part, made positive: ``max(-x, 0)``.

    (The original keras-explainable returned the positive part here by mistake.)
    """
    del axis
    return ops.relu(-ops.convert_to_tensor(x))


def absolute(x, axis=SPATIAL_AXIS):
    """The magnitude ``|x|``. ``axis`` is accepted for uniformity."""
    del axis
    return ops.absolute(ops.convert_to_tensor(x))


def positive_normalize(x, axis=SPATIAL_AXIS):
    """``normalize(positive(x))``: the default for CAM methods (Grad-CAM's ReLU)."""
    return normalize(positive(x), axis=axis)


def negative_normalize(x, axis=SPATIAL_AXIS):
    """``normalize(negative(x))``: regions that argue against the unit."""
    return normalize(negative(x), axis=axis)


def absolute_normalize(x, axis=SPATIAL_AXIS):
    """``normalize(absolute(x))``: magnitude of the contribution, either sign."""
    return normalize(absolute(x), axis=axis)


__all__ = [
    "SPATIAL_AXIS",
    "normalize",
    "positive",
    "negative",
    "absolute",
    "positive_normalize",
    "negative_normalize",
    "absolute_normalize",
]
