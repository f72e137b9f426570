"""Spatial-axis helpers: a leaf module (it imports nothing from the package).

Every room that needs the default spatial axes or resolves ``spatial_axis``
to positive axes imports them from here, so no arrow has to run back up.
"""

from __future__ import annotations

SPATIAL_AXIS = (-3, -2)
"""The default spatial axes of ``(batch, height, width, channels)`` tensors."""


def positive_axes(spatial_axis, rank: int) -> tuple[int, ...]:
    """``spatial_axis`` as positive axes of a rank-``rank`` tensor, validated."""
    axes = (spatial_axis,) if isinstance(spatial_axis, int) else tuple(spatial_axis)
    resolved = []
    for axis in axes:
        if not -rank <= axis < rank:
            raise ValueError(f"spatial_axis {spatial_axis} does not fit a tensor of rank {rank}.")
        resolved.append(axis % rank)
    if 0 in resolved or rank - 1 in resolved:
        raise ValueError(
            f"spatial_axis {spatial_axis} names the batch or channel axis of a rank-{rank} "
            "tensor; inputs are (batch, *spatial, channels)."
        )
    return tuple(resolved)


__all__ = ["SPATIAL_AXIS", "positive_axes"]
