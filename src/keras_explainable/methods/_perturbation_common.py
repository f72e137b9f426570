"""What occlusion and RISE share: argument checks and the chunked sweep of masked copies.

See :mod:`keras_explainable.methods.perturbation` for how the sweep batches its passes.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from .. import backend
from ._common import positive_axes, repeat_target, unit_selector

# --------------------------------------------------------------------------- checks


def _spatial_shape(inputs, spatial_axis) -> tuple[int, ...]:
    """The static spatial shape, checking the layout ``(batch, *spatial, channels)``."""
    rank = len(inputs.shape)
    axes = positive_axes(spatial_axis, rank)
    if sorted(axes) != list(range(1, rank - 1)):
        expected = tuple(range(-rank + 1, -1))
        raise ValueError(
            f"Perturbation methods need spatial_axis to name every axis between the batch and "
            f"the channels; got {spatial_axis} for inputs of rank {rank}. Use "
            f"spatial_axis={expected}."
        )
    shape = tuple(inputs.shape[1:-1])
    if any(size is None for size in shape):
        raise ValueError(
            f"Perturbation methods need a static spatial shape; got {tuple(inputs.shape)}."
        )
    return shape


def _per_axis(value, name: str, ndim: int) -> tuple[int, ...]:
    """An int or a tuple of ints, one per spatial axis, each >= 1."""
    values = (value,) * ndim if isinstance(value, (int, np.integer)) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != ndim
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values)
    ):
        raise ValueError(
            f"`{name}` must be an int or a tuple of {ndim} ints (one per spatial axis); "
            f"got {value!r}."
        )
    if any(v < 1 for v in values):
        raise ValueError(f"`{name}` must hold positive sizes; got {value!r}.")
    return tuple(int(v) for v in values)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    return int(value)


def _copies_per_pass(chunk_size, perturbations: int) -> int:
    """Perturbed copies of each sample per forward pass (``None``: all of them)."""
    if chunk_size is None:
        return perturbations
    return min(_positive_int(chunk_size, "chunk_size"), perturbations)


def _baseline_tensor(baseline, inputs):
    """``baseline`` ready to broadcast against ``(batch, masks, *spatial, channels)``."""
    if callable(baseline):
        raise TypeError("`baseline` must be a number or an array, not a function.")
    baseline = ops.cast(ops.convert_to_tensor(baseline), inputs.dtype)
    rank = len(inputs.shape)
    shape = tuple(baseline.shape)
    known = lambda dims: tuple(1 if d is None else d for d in dims)  # unknown: checked later
    try:
        if len(shape) > rank:
            raise ValueError
        np.broadcast_shapes(known(shape), known(inputs.shape))
    except ValueError:
        raise ValueError(
            f"`baseline` of shape {shape} does not broadcast to the inputs {tuple(inputs.shape)}: "
            "pass a number, a (channels,) or (*spatial, channels) array, or one per sample."
        ) from None
    if len(shape) == rank:  # one baseline per sample: make room for the masks axis
        baseline = ops.expand_dims(baseline, 1)
    return baseline


# --------------------------------------------------------------------------- the sweep


def _units_of_copies(indices, indices_axis, indices_batch_dims, copies: int, target=None):
    """A ``score_fn`` for ``copies`` consecutive perturbed copies of every sample."""
    if indices is not None and indices_batch_dims != 0:
        if len(indices.shape) == 1:
            indices = indices[:, None]
        indices = ops.repeat(indices, copies, axis=0)
    target = repeat_target(target, copies)
    return unit_selector(indices, indices_axis, indices_batch_dims, target)


def _check_scores(scores):
    if len(scores.shape) != 2:
        raise ValueError(
            f"The explained output has shape {tuple(scores.shape)}; it must be (batch, units). "
            "Expose the logits layer or add a pooling head."
        )
    return ops.cast(scores, "float32")


def _sweep(model, inputs, baseline, select, num_chunks, chunk_masks, occlude, reference=None):
    """``sum_k value_k * mask_k`` over every mask, ``(batch, prod(spatial), units)``.

    ``chunk_masks(i)`` gives the ``(K, *spatial)`` masks of chunk ``i``. With
    ``occlude`` the masked positions take the baseline (occlusion), otherwise the
    masked positions keep the input (RISE). ``value`` is the perturbed score, or
    ``reference - score`` when ``reference`` (the clean scores) is given.
    """
    spatial = tuple(inputs.shape[1:-1])
    positions = math.prod(spatial)
    expanded = ops.expand_dims(inputs, 1)  # (batch, 1, *spatial, channels)

    def chunk(i):
        masks = chunk_masks(i)
        copies = masks.shape[0]
        keep = 1.0 - masks if occlude else masks
        keep = ops.cast(ops.expand_dims(ops.expand_dims(keep, 0), -1), inputs.dtype)
        perturbed = expanded * keep + baseline * (1.0 - keep)  # exact where keep is 0 or 1
        perturbed = ops.reshape(perturbed, (-1,) + tuple(inputs.shape[1:]))
        outputs, _ = backend.forward(model, perturbed)
        scores = _check_scores(select(outputs, ()))
        scores = ops.reshape(scores, (-1, copies, scores.shape[-1]))
        if reference is not None:
            scores = ops.expand_dims(reference, 1) - scores
        flat = ops.cast(ops.reshape(masks, (copies, positions)), "float32")
        return ops.einsum("bku,kp->bpu", scores, flat)

    # The first chunk runs outside the loop: it fixes the accumulator's shape
    # (the batch may be dynamic under tf.function) and needs no loop at all
    # when there is a single chunk.
    total = chunk(0)
    if num_chunks > 1:
        total = ops.fori_loop(1, num_chunks, lambda i, acc: acc + chunk(i), total)
    return total


def _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims, target=None):
    outputs, _ = backend.forward(model, inputs)
    select = unit_selector(indices, indices_axis, indices_batch_dims, target)
    return _check_scores(select(outputs, ()))
