"""The one path every CAM method shares (see :mod:`.cams` for the methods).

Record the activations ``A`` of the explained layer (and, for gradient methods,
``d score / d A``), let the method's weighting rule turn them into weights, and
combine ``sum_k w_k A^k``. A layer that outputs tokens ``(batch, tokens, dim)``
is seen on its patch grid by every rule (see :mod:`.._token_grid`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from keras import ops

from .. import backend, inspection
from .._inputs import is_structure
from .._token_grid import arrange
from ._common import as_indices, as_inputs, positive_axes, prepare_target, unit_selector, widen


def _single_activation(model, inputs, convention=True):
    shape = None if is_structure(inputs) else tuple(inputs.shape)  # several inputs: no one shape
    taps = inspection.activation_taps(model, input_shape=shape, convention=convention)
    if len(taps) != 1:
        raise ValueError(
            f"CAM methods explain one intermediate signal; the model exposes {len(taps)} "
            f"({', '.join(t.name for t in taps)}). Expose a single one."
        )
    return taps


def _spatial_activation_axes(activations, spatial_axis):
    rank = len(activations.shape)
    if rank < 3:
        raise ValueError(
            f"The explained activation has shape {tuple(activations.shape)}: it has no spatial "
            "axes. Expose a convolutional (spatial) layer instead."
        )
    return positive_axes(spatial_axis, rank)


class _Signal(NamedTuple):
    """What a weighting rule may look at (all tensors hold one batch)."""

    model: Any  # the model to run (an exposed model's own model for a target)
    inputs: Any  # (batch, *spatial, channels)
    taps: tuple  # the single tap whose output is ``activations``
    scores: Any  # (batch, units): the explained units' scores on ``inputs``
    activations: Any  # (batch, *activation_spatial, K): tokens already on their grid
    gradients: Any  # (batch, *activation_spatial, K, units), or None
    axes: tuple  # the spatial axes of ``activations`` (positive)
    spatial_axis: Any  # as the caller gave it
    indices: Any
    indices_axis: int
    indices_batch_dims: int
    target: Any = None  # the bound target (None: the default, classes)
    explained: Any = None  # the model as the caller passed it
    recorded: Any = None  # the tap's output as the layer returned it (tokens: before the grid)

    @property
    def units(self) -> int:
        return int(self.scores.shape[-1])


def _class_activation_map(
    model,
    inputs,
    indices,
    indices_axis,
    indices_batch_dims,
    spatial_axis,
    weigh: Callable[[_Signal], Any],
    gradients: bool = True,
    target=None,
):
    """The one CAM path: record ``A`` (and ``g``), weigh, combine.

    The rules see ``A`` and ``g`` in float32 when the model computes in
    float16/bfloat16 (mixed precision), and as they are otherwise.

    ``weigh(signal)`` returns the weights, or ``(weights, activations)`` when
    the map combines other activations than the recorded ones (a subset of
    channels, centred activations).

    ``target`` (see :mod:`ke.targets`) turns the outputs into the scores; with
    a target that reads the model's outputs, every output of a multi-output
    model is an output (not an exposed activation) and an exposed model's own
    model runs, the exposure naming the layer.
    """
    inputs = as_inputs(inputs, structured=True)  # a CAM explains a layer of any branch
    indices = as_indices(indices)
    runner, target = prepare_target(model, target)
    convention = target is None or not target.reads_model_outputs
    taps = _single_activation(model, inputs, convention)
    select = unit_selector(indices, indices_axis, indices_batch_dims, target)
    if gradients:
        result = backend.value_and_gradients(runner, inputs, select, taps=taps, differentiate=(0,))
        scores, activations, grads = result.scores, result.tap_values[0], result.tap_gradients[0]
    else:
        outputs, values = backend.forward(runner, inputs, taps=taps)
        scores, activations, grads = select(outputs, values), values[0], None
    recorded = activations
    # Tokens (batch, tokens, dim) of an image model go on their patch grid, the
    # prefix tokens dropped; a sequence model's keep their one token axis.
    activations, grads, axes = arrange(model, inputs, taps[0], activations, grads, spatial_axis)
    # Mixed precision: the rules sum over positions, take powers and SVDs, which
    # overflow (or do not exist) in float16/bfloat16; they work on float32 copies.
    activations = widen(activations)
    grads = None if grads is None else widen(grads)
    signal = _Signal(
        runner, inputs, tuple(taps), scores, activations, grads, axes, spatial_axis,
        indices, indices_axis, indices_batch_dims, target, model, widen(recorded),
    )  # fmt: skip
    weights = weigh(signal)
    if isinstance(weights, tuple):
        weights, activations = weights
    return scores, combine(activations, weights)


def combine(activations, weights):
    """Weighted sum of the channels of ``activations``, one map per unit.

    Args:
        activations: ``(batch, *spatial, channels)``.
        weights: channel weights ``(batch, channels, units)``, or position-wise
            weights ``(batch, *spatial, channels, units)``.

    Returns:
        ``sum_k weights[..., k, u] * activations[..., k]``, shaped
        ``(batch, *spatial, units)``, in float32 when ``activations`` are
        float16/bfloat16 (the sum is computed in float32), otherwise in the
        dtype of ``activations``.
    """
    activations = widen(activations)  # a float16 channel sum overflows past 65504
    weights = ops.cast(weights, activations.dtype)
    if len(weights.shape) == len(activations.shape) + 1:  # position-wise
        return ops.sum(ops.expand_dims(activations, -1) * weights, axis=-2)
    shape = ops.shape(activations)
    flat = ops.reshape(activations, (shape[0], -1, shape[-1]))
    maps = ops.matmul(flat, weights)
    return ops.reshape(maps, tuple(shape[:-1]) + (ops.shape(weights)[-1],))


def _safe_divide(numerator, denominator, otherwise=0.0):
    """``numerator / denominator`` where ``denominator != 0``, else ``otherwise``."""
    nonzero = ops.not_equal(denominator, 0)
    quotient = numerator / ops.where(nonzero, denominator, ops.ones_like(denominator))
    return ops.where(nonzero, quotient, otherwise)
