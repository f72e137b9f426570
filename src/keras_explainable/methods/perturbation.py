"""Perturbation methods: explain a model by scoring perturbed copies of its inputs.

No gradient is taken. Each method builds a set of spatial masks, scores every
sample under every mask with forward passes (without gradient tracking), and
accumulates the scores into one map per explained unit:

- :func:`occlusion` slides a window of ``baseline`` values over the input and
  records how much each unit's score drops.
- :func:`rise` multiplies the input by smooth random masks and averages the
  masks weighted by the scores they obtain.

The perturbed copies are scored in chunks of ``chunk_size`` copies of every
sample (the name Score-CAM and integrated gradients use too): one forward pass
sees ``batch * chunk_size`` inputs. Every shape is static (the number of masks
is padded up to a whole number of chunks with empty masks, which contribute
nothing) and the chunks run in a ``keras.ops.fori_loop``, so the methods trace
once under ``tf.function`` / ``jax.jit`` whatever the number of masks. Every
unit is scored by the same forward passes, so explaining many units costs no
more passes than one.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from .. import backend
from .._axes import SPATIAL_AXIS
from ._common import as_indices, as_inputs, positive_axes, unit_selector

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


def _units_of_copies(indices, indices_axis, indices_batch_dims, copies: int):
    """A ``score_fn`` for ``copies`` consecutive perturbed copies of every sample."""
    if indices is not None and indices_batch_dims != 0:
        if len(indices.shape) == 1:
            indices = indices[:, None]
        indices = ops.repeat(indices, copies, axis=0)
    return unit_selector(indices, indices_axis, indices_batch_dims)


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


def _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims):
    outputs, _ = backend.forward(model, inputs)
    select = unit_selector(indices, indices_axis, indices_batch_dims)
    return _check_scores(select(outputs, ()))


# --------------------------------------------------------------------------- occlusion


def occlusion_windows(spatial_shape, window=(8, 8), stride=(4, 4)) -> list[list[int]]:
    """The start of every occluding window along each spatial axis.

    Windows start at ``0, stride, 2 * stride, ...`` while they fit; when the
    stride does not land on the end of the axis, one more window is aligned with
    the end, so the border is always probed. Windows are occluded at every
    combination of these starts.

    Args:
        spatial_shape: the spatial sizes of the inputs.
        window: the window size, an int or one per spatial axis.
        stride: the step between windows, an int or one per spatial axis.

    Returns:
        one list of starts per spatial axis.

    Example:
        >>> ke.methods.perturbation.occlusion_windows((12, 10), window=4, stride=3)
        [[0, 3, 6, 8], [0, 3, 6]]
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    ndim = len(spatial_shape)
    window = _per_axis(window, "window", ndim)
    stride = _per_axis(stride, "stride", ndim)
    if any(w > s for w, s in zip(window, spatial_shape)):
        raise ValueError(
            f"The occlusion window {window} is larger than the inputs' spatial shape "
            f"{spatial_shape}; use a smaller `window`."
        )
    starts = []
    for size, win, step in zip(spatial_shape, window, stride):
        axis = list(range(0, size - win + 1, step))
        if axis[-1] + win < size:
            axis.append(size - win)
        starts.append(axis)
    return starts


def occlusion(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    window=(8, 8),
    stride=(4, 4),
    baseline=0.0,
    chunk_size: int | None = 16,
):
    """Occlusion sensitivity: the score lost when a window of the input is hidden.

    A window filled with ``baseline`` slides over the spatial axes (see
    :func:`occlusion_windows` for where it goes); for each position ``p`` the
    map holds the mean, over the windows that cover ``p``, of
    ``score(x) - score(x occluded by the window)``. Positive values mark regions
    the unit's score relies on. Positions no window covers (a stride larger than
    the window) are 0.

    Args:
        model: the model; when it has several outputs the first one is explained.
        inputs: a batch ``(batch, *spatial, channels)`` (1, 2 or 3 spatial axes).
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of ``inputs``: every axis between the batch
            and the channels, e.g. ``(-2,)`` for signals, ``(-4, -3, -2)`` for volumes.
        window: the occluding window, an int or one size per spatial axis.
        stride: the step between windows, an int or one per spatial axis.
        baseline: the occluding value: a number, a ``(channels,)`` or
            ``(*spatial, channels)`` array, or one array per sample
            ``(batch, *spatial, channels)`` (e.g. a blurred copy of the inputs).
        chunk_size: occluded copies of each sample scored per forward pass (a
            pass sees ``batch * chunk_size`` inputs), or ``None`` for all of them
            at once. It only trades memory for speed; the result does not depend
            on it.

    Returns:
        ``(scores, maps)``: the clean scores ``(batch, units)`` and the maps
        ``(batch, *spatial, units)``.

    Example:
        >>> scores, maps = ke.methods.perturbation.occlusion(
        ...     model, x, np.array([3, 1]), window=(16, 16), stride=(8, 8))
        >>> scores, maps = ke.explain(
        ...     ke.methods.perturbation.occlusion, model, x, y, window=8, stride=4)

    References:
        Zeiler & Fergus (2014). Visualizing and Understanding Convolutional
        Networks. ECCV. arXiv:1311.2901.
    """
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    spatial = _spatial_shape(inputs, spatial_axis)
    window = _per_axis(window, "window", len(spatial))
    starts = occlusion_windows(spatial, window, stride)
    baseline = _baseline_tensor(baseline, inputs)

    grid = np.stack(np.meshgrid(*starts, indexing="ij"), axis=-1).reshape(-1, len(spatial))
    copies = _copies_per_pass(chunk_size, len(grid))
    num_chunks = -(-len(grid) // copies)
    padding = num_chunks * copies - len(grid)
    # Padding windows start past the end of every axis: they hide nothing.
    grid = np.concatenate([grid, np.tile(np.array(spatial)[None], (padding, 1))])
    table = ops.convert_to_tensor(grid.reshape(num_chunks, copies, len(spatial)).astype("int32"))

    def chunk_masks(i):
        chunk_starts = table[0] if num_chunks == 1 else ops.take(table, i, axis=0)
        masks = None
        for axis, (size, win) in enumerate(zip(spatial, window)):
            coordinates = ops.arange(size, dtype="int32")[None, :]
            first = chunk_starts[:, axis : axis + 1]
            inside = ops.logical_and(coordinates >= first, coordinates < first + win)
            shape = [copies] + [1] * len(spatial)
            shape[1 + axis] = size
            inside = ops.reshape(ops.cast(inside, "float32"), shape)
            masks = inside if masks is None else masks * inside
        return masks

    # How many windows cover each position (a product over the axes).
    coverage = None
    for axis, (size, win) in enumerate(zip(spatial, window)):
        counts = np.zeros(size)
        for start in starts[axis]:
            counts[start : start + win] += 1
        coverage = counts if coverage is None else np.multiply.outer(coverage, counts)
    inverse = np.where(coverage > 0, 1.0 / np.maximum(coverage, 1), 0.0).reshape(1, -1, 1)

    reference = _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims)
    select = _units_of_copies(indices, indices_axis, indices_batch_dims, copies)
    total = _sweep(
        model, inputs, baseline, select, num_chunks, chunk_masks, occlude=True, reference=reference
    )
    maps = total * ops.convert_to_tensor(inverse.astype("float32"))
    return reference, ops.reshape(maps, (-1,) + spatial + (maps.shape[-1],))


# --------------------------------------------------------------------------- RISE


def _check_probability(probability) -> float:
    if isinstance(probability, bool) or not isinstance(probability, (int, float, np.number)):
        raise ValueError(f"`probability` must be a number in (0, 1]; got {probability!r}.")
    if not 0.0 < float(probability) <= 1.0:
        raise ValueError(
            f"`probability` (the chance a grid cell keeps the input) must be in (0, 1]; "
            f"got {probability}."
        )
    return float(probability)


def _upsampling_matrix(cells: int, size: int) -> np.ndarray:
    """``(size, cells)`` linear interpolation (half-pixel centres, edges clamped)."""
    matrix = np.zeros((size, cells))
    source = (np.arange(size) + 0.5) * cells / size - 0.5
    source = np.clip(source, 0, cells - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, cells - 1)
    fraction = source - low
    np.add.at(matrix, (np.arange(size), low), 1 - fraction)
    np.add.at(matrix, (np.arange(size), high), fraction)
    return matrix


def rise_grids(spatial_shape, masks=2000, cell_size=7, probability=0.5, seed=None):
    """The random draws behind :func:`rise_masks`: binary grids and shifts.

    Args:
        spatial_shape: the spatial sizes of the inputs.
        masks: how many masks.
        cell_size: cells per spatial axis of each grid (the paper's ``s``), an
            int or one per axis; a cell spans ``ceil(size / cell_size)`` positions.
        probability: the chance that a cell keeps the input.
        seed: an int for reproducible draws, ``None`` for fresh ones.

    Returns:
        ``(grids, shifts)``: ``(masks, *cells)`` float32 grids of 0/1 and
        ``(masks, spatial_ndim)`` int shifts, each in ``[0, cell span)``.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    cells = _per_axis(cell_size, "cell_size", len(spatial_shape))
    count = _positive_int(masks, "masks")
    probability = _check_probability(probability)
    rng = np.random.default_rng(seed)
    grids = (rng.random((count,) + cells) < probability).astype("float32")
    spans = [-(-size // cell) for size, cell in zip(spatial_shape, cells)]
    shifts = np.stack([rng.integers(0, span, size=count) for span in spans], axis=-1)
    return grids, shifts


def _rise_rows(spatial_shape, cells):
    """Per axis: the ``(upsampled size, cells)`` interpolation matrix."""
    matrices = []
    for size, cell in zip(spatial_shape, cells):
        span = -(-size // cell)
        matrices.append(_upsampling_matrix(cell, (cell + 1) * span).astype("float32"))
    return matrices


def _contract_axis(axis: int, ndim: int) -> str:
    """The einsum that applies an axis' ``(K, size, cells)`` rows to a grid."""
    letters = "abc"[:ndim]
    before = "k" + letters.upper()[:axis] + letters[axis:]
    after = "k" + letters.upper()[: axis + 1] + letters[axis + 1 :]
    return f"k{letters[axis].upper()}{letters[axis]},{before}->{after}"


def _masks_from_grids(grids, shifts, matrices, spatial_shape, take, einsum, arange):
    """Upsample each grid (bilinear) and crop it at its shift: ``(K, *spatial)``."""
    masks = grids
    for axis, (size, matrix) in enumerate(zip(spatial_shape, matrices)):
        rows = take(matrix, shifts[:, axis : axis + 1] + arange(size)[None, :])  # (K, size, cells)
        masks = einsum(_contract_axis(axis, len(spatial_shape)), rows, masks)
    return masks


def rise_masks(spatial_shape, masks=2000, cell_size=7, probability=0.5, seed=None):
    """The masks :func:`rise` uses for the same arguments, as a numpy array.

    Each mask is a random ``cell_size``-per-axis grid of 0/1 cells (1 with
    ``probability``), upsampled with linear interpolation to ``(cell_size + 1)``
    cell spans and cropped to ``spatial_shape`` at a random shift of less than a
    cell span, as in the paper. The draws come from ``numpy.random.default_rng(seed)``,
    so a seed gives the same masks on every backend.

    Args:
        spatial_shape: the spatial sizes of the inputs.
        masks: how many masks.
        cell_size: cells per spatial axis of the grid (an int or one per axis).
        probability: the chance that a cell keeps the input.
        seed: an int, or ``None`` for fresh masks.

    Returns:
        ``(masks, *spatial_shape)`` float32 masks with values in ``[0, 1]``.

    Example:
        >>> m = ke.methods.perturbation.rise_masks((12, 12), masks=4, cell_size=3, seed=0)
        >>> m.shape
        (4, 12, 12)
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    grids, shifts = rise_grids(spatial_shape, masks, cell_size, probability, seed)
    matrices = _rise_rows(spatial_shape, grids.shape[1:])
    out = _masks_from_grids(
        grids, shifts, matrices, spatial_shape,
        take=lambda m, i: m[i], einsum=np.einsum, arange=np.arange,
    )  # fmt: skip
    return out.astype("float32")


def rise(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    masks: int = 2000,
    cell_size=7,
    probability: float = 0.5,
    seed: int | None = None,
    baseline=0.0,
    chunk_size: int | None = 16,
):
    """RISE: random masks averaged with the scores the masked inputs obtain.

    ``map = sum_i score(baseline + M_i * (x - baseline)) * M_i / (N * p)`` over
    ``N = masks`` smooth random masks ``M_i`` (see :func:`rise_masks`), ``p``
    being ``probability``: the expected score given that a position is kept.
    The scores are the explained output as the model produces it: the paper uses
    class probabilities (a softmax model); logits work too but are not bounded.

    The masks are drawn with numpy from ``seed`` when the method runs (once per
    trace in a compiled ``ke.explain`` step, so every batch of one call uses the
    same masks, as in the paper) and only the small grids enter the computation;
    the upsampling runs inside it. Pass a ``seed`` for reproducible maps;
    ``rise_masks(spatial_shape, masks, cell_size, probability, seed)`` returns the
    masks used.

    Args:
        model: the model; when it has several outputs the first one is explained.
        inputs: a batch ``(batch, *spatial, channels)`` (1, 2 or 3 spatial axes).
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: every axis between the batch and the channels.
        masks: the number of random masks ``N``.
        cell_size: cells per spatial axis of the random grids (the paper's ``s``;
            an int or one per axis).
        probability: the chance that a grid cell keeps the input (``p``).
        seed: an int for reproducible masks, ``None`` for fresh ones.
        baseline: what hidden positions become (the paper: 0). A number or an
            array broadcastable to the inputs, as in :func:`occlusion`.
        chunk_size: masked copies of each sample per forward pass, or ``None``
            for all of them at once (memory permitting).

    Returns:
        ``(scores, maps)``: the clean scores ``(batch, units)`` and the maps
        ``(batch, *spatial, units)``.

    Example:
        >>> probabilities = keras.Sequential([model, keras.layers.Softmax()])
        >>> scores, maps = ke.methods.perturbation.rise(
        ...     probabilities, x, y, masks=4000, cell_size=7, seed=0)

    References:
        Petsiuk, Das & Saenko (2018). RISE: Randomized Input Sampling for
        Explanation of Black-box Models. BMVC. arXiv:1806.07421.
    """
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    spatial = _spatial_shape(inputs, spatial_axis)
    baseline = _baseline_tensor(baseline, inputs)
    grids, shifts = rise_grids(spatial, masks, cell_size, probability, seed)
    count, cells = len(grids), grids.shape[1:]

    copies = _copies_per_pass(chunk_size, count)
    num_chunks = -(-count // copies)
    padding = num_chunks * copies - count
    # Padding grids are all zero: their masks are zero and add nothing.
    grids = np.concatenate([grids, np.zeros((padding,) + cells, "float32")])
    shifts = np.concatenate([shifts, np.zeros((padding, len(spatial)), shifts.dtype)])
    grid_table = ops.convert_to_tensor(grids.reshape((num_chunks, copies) + cells))
    shift_table = ops.convert_to_tensor(
        shifts.reshape(num_chunks, copies, len(spatial)).astype("int32")
    )
    matrices = [ops.convert_to_tensor(m) for m in _rise_rows(spatial, cells)]

    def chunk_masks(i):
        if num_chunks == 1:
            chunk_grids, chunk_shifts = grid_table[0], shift_table[0]
        else:
            chunk_grids = ops.take(grid_table, i, axis=0)
            chunk_shifts = ops.take(shift_table, i, axis=0)
        return _masks_from_grids(
            chunk_grids, chunk_shifts, matrices, spatial,
            take=lambda m, at: ops.take(m, at, axis=0), einsum=ops.einsum,
            arange=lambda n: ops.arange(n, dtype="int32"),
        )  # fmt: skip

    scores = _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims)
    select = _units_of_copies(indices, indices_axis, indices_batch_dims, copies)
    total = _sweep(model, inputs, baseline, select, num_chunks, chunk_masks, occlude=False)
    maps = total / (count * _check_probability(probability))
    return scores, ops.reshape(maps, (-1,) + spatial + (maps.shape[-1],))


__all__ = ["occlusion", "occlusion_windows", "rise", "rise_grids", "rise_masks"]
