"""RISE (Petsiuk et al., 2018): random smooth masks weighted by the scores they get.

Re-exported by :mod:`keras_explainable.methods.perturbation` (``ke.methods.perturbation.rise``).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from .._axes import SPATIAL_AXIS
from .._inputs import is_structure
from ._common import as_indices, as_inputs, prepare_target
from ._multi_input import perturbation_maps
from ._perturbation_common import (
    _baseline_tensor,
    _clean_scores,
    _copies_per_pass,
    _per_axis,
    _positive_int,
    _spatial_shape,
    _sweep,
    _units_of_copies,
)


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
    target=None,
    explained_inputs=None,
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
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units. Every
            masked copy is scored with it.
        explained_inputs: for a multi-input model (``inputs`` a list, tuple or
            dict), the positions of the inputs to explain (``None``: every
            floating-point input): each is masked in turn with its own masks, the
            others kept (a feature vector: masks of single features); the maps
            come back in the structure of ``inputs``, ``None`` for the others.

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
    if is_structure(inputs):  # each explained input masked in turn, the others fixed
        return perturbation_maps(
            rise, model, inputs, explained_inputs, target, baseline,
            lambda sizes, flat: {"cell_size": sizes[0] if flat else cell_size},
            indices=indices, indices_axis=indices_axis, indices_batch_dims=indices_batch_dims,
            masks=masks, probability=probability, seed=seed, chunk_size=chunk_size,
        )  # fmt: skip
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    model, target = prepare_target(model, target)
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

    scores = _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims, target)
    select = _units_of_copies(indices, indices_axis, indices_batch_dims, copies, target)
    total = _sweep(model, inputs, baseline, select, num_chunks, chunk_masks, occlude=False)
    maps = total / (count * _check_probability(probability))
    return scores, ops.reshape(maps, (-1,) + spatial + (maps.shape[-1],))
