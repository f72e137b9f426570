"""Gradient methods on multi-input models: one map per explained input.

``inputs`` is a list, tuple or dict of batches (one per model input). The
inputs at ``explained_inputs`` (positions; ``None``: every floating-point
input) are differentiated in ONE backward pass; the others (integer token ids
or categorical codes, or inputs left out) are fed as they are. The maps come
back in the structure of ``inputs``, ``None`` at the inputs not explained:

- an input ``(batch, *spatial, channels)`` gets ``(batch, *spatial, units)``,
  the channels reduced as the single-input method does;
- a feature vector ``(batch, features)`` gets ``(batch, features, units)``.
"""

from __future__ import annotations

from keras import ops

from .. import _inputs, backend
from .._branches import branch_leaves
from ._common import (
    as_indices,
    prepare_target,
    sum_along_path,
    tile_batch,
    tile_indices,
    tile_target,
    ungroup,
    unit_selector,
    weighted_sum,
    widen,
)


def _float_items(inputs) -> list:
    return _inputs.as_float_leaves(inputs)


def gradient_maps(
    model, inputs, indices, indices_axis, indices_batch_dims, target, explained, to_map
):
    """``(scores, maps)``: ``to_map(gradients, input, rank)`` for each explained input.

    ``gradients`` are ``(batch, *input_axes, units)`` (widened to float32).
    """
    items = _float_items(inputs)
    positions = _inputs.explained_positions(inputs, explained)
    runner, target = prepare_target(model, target)
    result = backend.value_and_gradients(
        runner,
        _inputs.pack(inputs, items),
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target),
        wrt_inputs=positions,
    )
    grads = _inputs.leaves(result.input_gradients)
    maps = [None] * len(items)
    for position in positions:
        rank = len(items[position].shape)
        maps[position] = to_map(widen(grads[position]), items[position], rank)
    return result.scores, _inputs.pack(inputs, maps)


def integrated_gradient_maps(
    model,
    inputs,
    indices,
    indices_axis,
    indices_batch_dims,
    target,
    explained,
    baseline,
    alphas,
    weights,
    chunk_size,
    baseline_like,
):
    """Integrated Gradients of every explained input along one joint straight path.

    Every explained input moves from its baseline to its value together (one
    path in the joint input space, as captum's multi-input IG), so by
    completeness the maps of all inputs add up to ``score(x) - score(x')``;
    the other inputs stay at their values. ``baseline`` is ``None`` (zeros), a
    number for every input, or a structure like ``inputs`` (``None`` entries:
    zeros), each entry as the single-input ``baseline``.
    """
    items = _float_items(inputs)
    positions = _inputs.explained_positions(inputs, explained)
    given = _baseline_per_input(baseline, items)
    baselines = {p: baseline_like(given[p], items[p]) for p in positions}
    deltas = {p: items[p] - baselines[p] for p in positions}
    indices = as_indices(indices)
    runner, target = prepare_target(model, target)

    def step(alpha, weight, count):
        points = []
        for position, item in enumerate(items):
            if position not in baselines:
                points.append(tile_batch(item, count))
                continue
            shape = (count, 1) + (1,) * (len(item.shape) - 1)
            alpha_rows = ops.reshape(ops.cast(alpha, item.dtype), shape)
            point = baselines[position][None] + alpha_rows * deltas[position][None]
            points.append(ops.reshape(point, (-1,) + tuple(item.shape[1:])))
        result = backend.value_and_gradients(
            runner,
            _inputs.pack(inputs, points),
            unit_selector(
                tile_indices(indices, count, indices_batch_dims),
                indices_axis,
                indices_batch_dims,
                tile_target(target, count),
            ),
            wrt_inputs=positions,
        )
        grads = _inputs.leaves(result.input_gradients)
        partials = [weighted_sum(ungroup(widen(grads[p]), count), weight) for p in positions]
        return partials, ungroup(result.scores, count)[-1]

    sums, scores = sum_along_path(step, alphas, weights, chunk_size)
    totals = dict(zip(positions, sums))
    if alphas[-1] != 1.0:  # the scores at the inputs themselves: the path's end, or a pass
        scores = None
    if scores is None:
        outputs, values = backend.forward(runner, _inputs.pack(inputs, items))
        scores = unit_selector(indices, indices_axis, indices_batch_dims, target)(outputs, values)
    maps = [None] * len(items)
    for position in positions:
        total = totals[position]
        values = ops.cast(deltas[position], total.dtype)[..., None] * total
        maps[position] = _inputs.reduce_channels(values, len(items[position].shape), ops.sum)
    return scores, _inputs.pack(inputs, maps)


class _OneInput:
    """A multi-input model seen as a model of one of its inputs, the others fixed.

    The perturbation methods score ``copies`` perturbed versions of every sample
    in one pass, sample-major; the fixed inputs are repeated to match. A feature
    vector is seen as ``(batch, features, 1)`` (one "channel"). Every other
    attribute is the model's, so targets bind and read its outputs as usual.
    """

    def __init__(self, model, like, items, position):
        self._model = model
        self._like = like
        self._items = items
        self._position = position

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, training=False):
        batch = self._items[self._position].shape[0]
        copies = x.shape[0] // batch
        if len(self._items[self._position].shape) == 2:
            x = x[..., 0]
        full = [
            x if i == self._position else (item if copies == 1 else ops.repeat(item, copies, 0))
            for i, item in enumerate(self._items)
        ]
        return self._model(_inputs.pack(self._like, full), training=training)


def perturbation_maps(method, model, inputs, explained, target, baseline, settings, **params):
    """A perturbation method on every explained input in turn, the others fixed.

    ``settings(spatial_sizes, is_feature_vector)`` gives the method's own
    parameters for one input (e.g. occlusion's window). ``baseline``: a number
    for every input, or a structure like ``inputs`` (``None``: zeros), each
    entry as the single-input ``baseline`` (a feature vector's ``(features,)``
    or ``(batch, features)``).
    """
    items = _float_items(inputs)
    positions = _inputs.explained_positions(inputs, explained)
    runner, target = prepare_target(model, target)
    given = _baseline_per_input(baseline, items)
    scores, maps = None, [None] * len(items)
    for position in positions:
        item = items[position]
        flat = len(item.shape) == 2
        x = item[..., None] if flat else item
        chosen = 0.0 if given[position] is None else given[position]
        if flat and len(getattr(chosen, "shape", ())) >= 1:
            chosen = ops.expand_dims(ops.convert_to_tensor(chosen), -1)
        spatial = tuple(range(-(len(x.shape) - 1), -1))
        scores, map_ = method(
            _OneInput(runner, inputs, items, position),
            x,
            spatial_axis=spatial,
            baseline=chosen,
            target=target,
            **settings(tuple(x.shape[1:-1]), flat),
            **params,
        )
        maps[position] = map_
    return scores, _inputs.pack(inputs, maps)


def full_gradient_maps(model, inputs, decomposition, psi, one_map):
    """FullGrad's map of every explained input (``one_map(x, input_term, bias_terms, axes, psi)``).

    An input's map holds the bias terms of the layers on its branch (the layers
    that read it); a feature vector's map is its input term over its features.
    """
    items, maps = _inputs.leaves(inputs), []
    on_branch = [branch_leaves(model, layer, inputs) for layer in decomposition.layers]
    for position, term in enumerate(_inputs.leaves(decomposition.input_term)):
        rank = len(items[position].shape)
        if term is None or rank == 2:
            maps.append(None if term is None else psi(term, axis=(1,)))
            continue
        terms = [t for t, reads in zip(decomposition.bias_terms, on_branch) if position in reads]
        maps.append(one_map(items[position], term, terms, tuple(range(1, rank - 1)), psi))
    return _inputs.pack(inputs, maps)


def _baseline_per_input(baseline, items) -> list:
    """One single-input ``baseline`` per input: a structure's leaves, or one value repeated."""
    if not _inputs.is_structure(baseline):
        return [baseline] * len(items)
    given = _inputs.leaves(baseline)
    if len(given) != len(items):
        raise ValueError(
            f"`baseline` gives {len(given)} entries for {len(items)} inputs; give one per "
            "input (None for zeros), in the structure of the inputs."
        )
    return given
