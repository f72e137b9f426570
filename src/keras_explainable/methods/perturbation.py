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

import numpy as np
from keras import ops

from .._axes import SPATIAL_AXIS
from .._inputs import is_structure
from .._tokens import has_tokens
from ._common import as_indices, as_inputs, prepare_target
from ._multi_input import perturbation_maps
from ._perturbation_common import (
    _baseline_tensor,
    _clean_scores,
    _copies_per_pass,
    _per_axis,
    _spatial_shape,
    _sweep,
    _units_of_copies,
)
from ._rise import rise, rise_grids, rise_masks  # noqa: F401  (RISE: its own module)
from ._token_occlusion import token_occlusion

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
    target=None,
    explained_inputs=None,
    pad_id=None,
    padding_mask=None,
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
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units. Every
            perturbed copy is scored with it.
        explained_inputs: for a multi-input model (``inputs`` a list, tuple or
            dict), the positions of the inputs to explain (``None``: every
            floating-point input). Each is occluded in turn, the others kept;
            ``window``/``stride`` apply to the inputs with that many spatial
            axes, other inputs (a feature vector) are occluded one position
            (feature) at a time; ``baseline`` may be a structure like ``inputs``.
        pad_id, padding_mask: token inputs only (docs/text.md): padding is
            never replaced and maps to 0.

    Token ids (integer inputs) are occluded by tokens: ``window`` tokens at a
    time (an int; the image default means 1) are replaced by the token id
    ``baseline`` (default 0), ``stride`` tokens apart (default ``window``).

    Returns:
        ``(scores, maps)``: the clean scores ``(batch, units)`` and the maps
        ``(batch, *spatial, units)`` (for structured ``inputs``, one per
        explained input in their structure, ``None`` for the others; a feature
        vector gets ``(batch, features, units)``).

    Example:
        >>> scores, maps = ke.methods.perturbation.occlusion(
        ...     model, x, np.array([3, 1]), window=(16, 16), stride=(8, 8))
        >>> scores, maps = ke.explain(
        ...     ke.methods.perturbation.occlusion, model, x, y, window=8, stride=4)

    References:
        Zeiler & Fergus (2014). Visualizing and Understanding Convolutional
        Networks. ECCV. arXiv:1311.2901.
    """
    if has_tokens(inputs, explained_inputs):  # token ids: windows of tokens replaced
        return token_occlusion(
            model, inputs, indices, indices_axis, indices_batch_dims, target, explained_inputs,
            window, None if stride == (4, 4) else stride, baseline, chunk_size, pad_id,
            padding_mask,
        )  # fmt: skip
    if is_structure(inputs):  # each explained input occluded in turn, the others fixed
        return perturbation_maps(
            occlusion, model, inputs, explained_inputs, target, baseline,
            lambda sizes, flat: (
                {"window": window, "stride": stride}
                if not flat and (isinstance(window, int) or len(window) == len(sizes))
                else {"window": 1, "stride": 1}
            ),
            indices=indices, indices_axis=indices_axis, indices_batch_dims=indices_batch_dims,
            chunk_size=chunk_size,
        )  # fmt: skip
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    model, target = prepare_target(model, target)
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

    reference = _clean_scores(model, inputs, indices, indices_axis, indices_batch_dims, target)
    select = _units_of_copies(indices, indices_axis, indices_batch_dims, copies, target)
    total = _sweep(
        model, inputs, baseline, select, num_chunks, chunk_masks, occlude=True, reference=reference
    )
    maps = total * ops.convert_to_tensor(inverse.astype("float32"))
    return reference, ops.reshape(maps, (-1,) + spatial + (maps.shape[-1],))


__all__ = ["occlusion", "occlusion_windows", "rise", "rise_grids", "rise_masks"]
