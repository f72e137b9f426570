"""Occlusion by tokens: the score lost when a window of token ids is replaced.

See :func:`token_occlusion`; the token set-up (positions, padding) is
:class:`._tokens.Setup`'s.
"""

from __future__ import annotations

from keras import ops

from .. import backend
from ._common import (
    as_indices,
    chunked,
    prepare_target,
    tile_batch,
    tile_indices,
    tile_target,
    ungroup,
    unit_selector,
)
from ._tokens import Setup, check_no_floats


def _windows(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _token_window(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 1:  # the image default (8, 8): one token at a time
            return 1
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` for token inputs is a number of tokens >= 1; got {value!r}.")
    return value


def token_occlusion(
    model, inputs, indices, indices_axis, indices_batch_dims, target, explained, window,
    stride, baseline, chunk_size, pad_id=None, padding_mask=None,
):  # fmt: skip
    """Occlusion by tokens: each window of tokens replaced by the id ``baseline``.

    ``map_t`` is the mean, over the windows covering token ``t``, of
    ``score(x) - score(x with the window replaced)``; padding is never replaced
    and maps to 0. ``window``/``stride`` count tokens (the image defaults mean 1).
    """
    setup = Setup(model, inputs, explained, None, pad_id, padding_mask, need=False)
    if setup.structured and explained is not None:
        check_no_floats(setup, explained, "Occlusion")
    window = _token_window(window, "window")
    stride = window if stride is None else _token_window(stride, "stride")
    token = 0 if baseline is None else int(baseline)
    indices = as_indices(indices)
    runner, target = prepare_target(model, target)
    outputs, values = backend.forward(runner, setup.like)
    clean = unit_selector(indices, indices_axis, indices_batch_dims, target)(outputs, values)
    batch = int(setup.items[0].shape[0])
    token_maps = []
    for position, mask in zip(setup.positions, setup.masks):
        ids = setup.items[position]
        size = int(ids.shape[1])
        starts = _windows(size, min(window, size), stride)
        width = min(window, size)
        coverage = [0] * size
        for first in starts:
            for t in range(first, first + width):
                coverage[t] += 1
        total = None
        for begin, end in chunked(len(starts), chunk_size):
            count = end - begin
            hide = [
                [first <= t < first + width for t in range(size)] for first in starts[begin:end]
            ]
            hide = ops.repeat(ops.convert_to_tensor(hide), batch, axis=0)  # (count*batch, size)
            tiled = tile_batch(ids, count)
            if mask is not None:
                hide = ops.logical_and(hide, tile_batch(mask, count))
            occluded = ops.where(hide, ops.full(ops.shape(tiled), token, tiled.dtype), tiled)
            items = [tile_batch(item, count) for item in setup.items]
            items[position] = occluded
            outputs, values = backend.forward(runner, setup.pack(items))
            scores = unit_selector(
                tile_indices(indices, count, indices_batch_dims), indices_axis,
                indices_batch_dims, tile_target(target, count),
            )(outputs, values)  # fmt: skip
            drop = ops.cast(clean, "float32")[None] - ops.cast(ungroup(scores, count), "float32")
            hidden = ops.cast(ungroup(hide, count), "float32")  # (count, batch, size)
            partial = ops.einsum("kbt,kbu->btu", hidden, drop)
            total = partial if total is None else total + partial
        inverse = ops.convert_to_tensor([1.0 / c if c else 0.0 for c in coverage], "float32")
        token_maps.append(total * inverse[None, :, None])
    return clean, setup.maps(token_maps)


__all__ = ["token_occlusion"]
