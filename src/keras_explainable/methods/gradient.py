"""Gradient-based explaining methods.

- :func:`gradients` — the saliency map (Simonyan et al., 2013);
- :func:`gradients_x_inputs` — gradient times input (Shrikumar et al., 2016);
- :func:`integrated_gradients` — path-integrated gradients (Sundararajan et al., 2017);
- :func:`full_gradients` — FullGrad, input and bias gradients (Srinivas & Fleuret, 2019),
  with :func:`full_gradient_decomposition` for the raw terms.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from .. import backend
from .._axes import SPATIAL_AXIS
from .._inputs import is_structure, reduce_channels
from .._tokens import has_tokens
from ._common import (
    as_indices,
    as_inputs,
    check_chunk_size,
    positive_axes,
    prepare_target,
    sum_along_path,
    tile_indices,
    tile_target,
    ungroup,
    unit_selector,
    weighted_sum,
    widen,
)
from ._full_gradient import (  # noqa: F401  (FullGrad: its own module)
    FullGradientDecomposition,
    full_gradient_decomposition,
    full_gradients,
)
from ._multi_input import gradient_maps, integrated_gradient_maps
from ._tokens import token_gradient_maps, token_integrated_gradients


def gradients(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    gradient_filter=ops.absolute,
    target=None,
    explained_inputs=None,
    embedding=None,
    pad_id=None,
    padding_mask=None,
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
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits).
        explained_inputs: for a multi-input model (``inputs`` a list, tuple or
            dict of batches), the positions of the inputs to explain; ``None``:
            every floating-point input. See :mod:`.._multi_input`.
        embedding, pad_id, padding_mask: token inputs only (docs/text.md): the
            embedding layer to explain at (default: the one the ids flow into),
            the padding id, the input marking real tokens (default: one named
            ``padding_mask``); padding maps to 0.

    Token ids: ``map_t = ||d score / d e_t||_2`` at their embedding ``e`` (L2 over
    its dim; no ``gradient_filter``), ``(batch, tokens, units)``.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``;
        for structured ``inputs``, maps in their structure (``None`` at the
        inputs not explained; a feature vector gets ``(batch, features, units)``).

    Example:
        >>> scores, maps = ke.methods.gradient.gradients(model, x, np.array([3, 1]))

    References:
        Simonyan, Vedaldi & Zisserman (2013). Deep Inside Convolutional
        Networks: Visualising Image Classification Models and Saliency Maps.
        arXiv:1312.6034.
    """
    to_map = lambda grads, _, rank: reduce_channels(gradient_filter(grads), rank, ops.mean)  # noqa: E731
    if has_tokens(inputs, explained_inputs):  # token ids: at their embedding, L2 norm over dim
        return token_gradient_maps(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            "norm", embedding, pad_id, padding_mask, to_map,
        )  # fmt: skip
    if is_structure(inputs):
        return gradient_maps(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            to_map,
        )  # fmt: skip
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    runner, target = prepare_target(model, target)
    result = backend.value_and_gradients(
        runner,
        inputs,
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target),
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
    target=None,
    explained_inputs=None,
    embedding=None,
    pad_id=None,
    padding_mask=None,
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
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits).
        explained_inputs: for a multi-input model, the positions of the inputs
            to explain (``None``: every floating-point input), as in :func:`gradients`.
        embedding, pad_id, padding_mask: token inputs only (docs/text.md): the
            embedding layer to explain at (default: the one the ids flow into),
            the padding id, the input marking real tokens (default: one named
            ``padding_mask``); padding maps to 0.

    Token ids: ``map_t = sum_d e_td * d score / d e_td`` at their embedding ``e``.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *spatial, units)``
        (for structured ``inputs``, in their structure, as :func:`gradients`).

    Example:
        >>> scores, maps = ke.methods.gradient.gradients_x_inputs(model, x, np.array([3, 1]))

    References:
        Shrikumar, Greenside, Shcherbina & Kundaje (2016). Not Just a Black Box:
        Learning Important Features Through Propagating Activation Differences.
        arXiv:1605.01713.
    """
    to_map = lambda grads, x, rank: reduce_channels(  # noqa: E731
        grads * ops.cast(x, grads.dtype)[..., None], rank, ops.sum
    )
    if has_tokens(inputs, explained_inputs):  # token ids: dot product with the embedding
        return token_gradient_maps(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            "dot", embedding, pad_id, padding_mask, to_map,
        )  # fmt: skip
    if is_structure(inputs):
        return gradient_maps(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            to_map,
        )  # fmt: skip
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    runner, target = prepare_target(model, target)
    result = backend.value_and_gradients(
        runner,
        inputs,
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target),
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
    target=None,
    explained_inputs=None,
    embedding=None,
    pad_id=None,
    padding_mask=None,
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
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits).
        explained_inputs: for a multi-input model, the positions of the inputs
            to explain (``None``: every floating-point input). They move along one
            joint path, so all their maps together add up to
            ``score(x) - score(x')``; ``baseline`` may then be a structure.
        embedding, pad_id, padding_mask: token inputs only (docs/text.md): the
            embedding layer to explain at (default: the one the ids flow into),
            the padding id, the input marking real tokens (default: one named
            ``padding_mask``); padding maps to 0.

    Token ids: a path in embedding space from ``e'`` (``baseline``: ``None`` zeros,
    ``"pad"`` the embedding of ``pad_id`` (0), or a token id); padding stays put.

    Returns:
        ``(scores, maps)``: the scores at ``inputs`` ``(batch, units)`` and the
        attributions summed over channels ``(batch, *spatial, units)`` (for
        structured ``inputs``, in their structure, as :func:`gradients`).

    Example:
        >>> scores, maps = ke.methods.gradient.integrated_gradients(
        ...     model, x, np.array([3, 1]), n_steps=64, chunk_size=16)

    References:
        Sundararajan, Taly & Yan (2017). Axiomatic Attribution for Deep
        Networks. ICML. arXiv:1703.01365.
    """
    alphas, weights = path_points(n_steps, rule)
    check_chunk_size(chunk_size)
    if has_tokens(inputs, explained_inputs):  # token ids: a path in embedding space
        return token_integrated_gradients(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            baseline, alphas, weights, chunk_size, embedding, pad_id, padding_mask,
        )  # fmt: skip
    if is_structure(inputs):  # one joint path for every explained input
        return integrated_gradient_maps(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            baseline, alphas, weights, chunk_size, _baseline_like,
        )  # fmt: skip
    inputs = as_inputs(inputs)
    positive_axes(spatial_axis, len(inputs.shape))
    indices = as_indices(indices)
    runner, target = prepare_target(model, target)
    baseline = _baseline_like(baseline, inputs)
    delta = inputs - baseline
    sample_rank = len(inputs.shape) - 1

    def step(alpha, weight, count):
        alpha = ops.reshape(ops.cast(alpha, inputs.dtype), (count, 1) + (1,) * sample_rank)
        points = ops.reshape(baseline[None] + alpha * delta[None], (-1,) + tuple(inputs.shape[1:]))
        result = backend.value_and_gradients(
            runner,
            points,
            unit_selector(
                tile_indices(indices, count, indices_batch_dims),
                indices_axis,
                indices_batch_dims,
                tile_target(target, count),
            ),
            wrt_inputs=True,
        )
        # (count, batch, ..., channels, units); float16 inputs: accumulate in float32
        grads = ungroup(widen(result.input_gradients), count)
        return [weighted_sum(grads, weight)], ungroup(result.scores, count)[-1]

    (total,), scores = sum_along_path(step, alphas, weights, chunk_size)
    if alphas[-1] != 1.0:  # the scores at the inputs themselves: the path's end, or a pass
        scores = None
    if scores is None:
        outputs, values = backend.forward(runner, inputs)
        scores = unit_selector(indices, indices_axis, indices_batch_dims, target)(outputs, values)
    maps = ops.sum(ops.cast(delta, total.dtype)[..., None] * total, axis=-2)
    return scores, maps


__all__ = [
    "FullGradientDecomposition",
    "full_gradient_decomposition",
    "full_gradients",
    "gradients",
    "gradients_x_inputs",
    "integrated_gradients",
    "path_points",
]
