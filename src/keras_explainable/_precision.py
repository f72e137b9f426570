"""Mixed precision: compute the sensitive parts of the methods in float32.

Models under the ``mixed_float16`` / ``mixed_bfloat16`` dtype policies hand the
methods activations, gradients and logits in float16 or bfloat16. Sums over
many positions, Grad-CAM++'s cubes, softmaxes, SVDs and the min-max of the
filters overflow in float16 (its largest value is 65504, its smallest normal
one 6e-5) or do not exist for these dtypes (SVD on every backend). The methods
therefore :func:`widen` such tensors to float32 before working on them; a
float32 (or float64) tensor is returned as it is, without a cast or a copy.
"""

from __future__ import annotations

import keras
from keras import ops

_NARROW_FLOATS = ("float16", "bfloat16")


def is_narrow_float(dtype) -> bool:
    """Whether ``dtype`` is a half-precision (or 8-bit) floating-point dtype."""
    name = keras.backend.standardize_dtype(dtype)
    return name in _NARROW_FLOATS or name.startswith("float8")


def widen(tensor):
    """``tensor`` as float32 when its dtype is a narrow float, else ``tensor`` itself.

    Args:
        tensor: a backend tensor (or anything with a ``dtype``).

    Returns:
        a float32 tensor for float16 / bfloat16 / float8 inputs; otherwise the
        very object that was passed in (float32 models pay nothing).
    """
    if is_narrow_float(tensor.dtype):
        return ops.cast(tensor, "float32")
    return tensor


__all__ = ["is_narrow_float", "widen"]
