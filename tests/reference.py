"""Independent numpy implementations of post-processing used by the tests."""

import numpy as np


def normalize(maps, axes=(1, 2)):
    lowest = maps.min(axis=axes, keepdims=True)
    highest = maps.max(axis=axes, keepdims=True)
    return (maps - lowest) / np.maximum(highest - lowest, 1e-12)


def positive_normalize(maps, axes=(1, 2)):
    return normalize(np.maximum(maps, 0), axes)


def linear_weights(source, target):
    """Interpolation matrix (target, source), half-pixel centres, edges clamped.

    The one numpy reference of Keras' (bi/tri)linear resize
    (``keras.ops.image.resize(..., antialias=False)``), shared by every test.
    """
    scale = source / target
    matrix = np.zeros((target, source))
    for i in range(target):
        centre = (i + 0.5) * scale - 0.5
        centre = min(max(centre, 0.0), source - 1)
        low = int(np.floor(centre))
        high = min(low + 1, source - 1)
        frac = centre - low
        matrix[i, low] += 1 - frac
        matrix[i, high] += frac
    return matrix


def bilinear_resize(maps, size):
    """(B, h, w, U) -> (B, H, W, U), like keras.ops.image.resize(antialias=False)."""
    rows = linear_weights(maps.shape[1], size[0])
    cols = linear_weights(maps.shape[2], size[1])
    return np.einsum("Hh,bhwu,Ww->bHWu", rows, maps, cols)


def linear_resize(x, size):
    """Separable (bi/tri)linear resize of (batch, *spatial, channels) in float64."""
    x = x.astype(np.float64)
    for axis, target in enumerate(size, start=1):
        matrix = linear_weights(x.shape[axis], target)
        x = np.moveaxis(np.tensordot(matrix, x, axes=([1], [axis])), 0, axis)
    return x
