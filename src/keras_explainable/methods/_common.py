"""Helpers shared by the methods (framework-free)."""

from __future__ import annotations

from keras import ops

from .. import inspection


def as_inputs(inputs):
    """Inputs as a floating-point backend tensor (numpy arrays are welcome)."""
    inputs = ops.convert_to_tensor(inputs)
    if "float" not in str(inputs.dtype):
        inputs = ops.cast(inputs, "float32")
    return inputs


def as_indices(indices):
    return None if indices is None else ops.cast(ops.convert_to_tensor(indices), "int32")


def unit_selector(indices, indices_axis=-1, indices_batch_dims=-1):
    """A ``score_fn`` for the backends: the explained units of the first output."""

    def select(outputs, tap_values):
        del tap_values
        logits = inspection.first_output(outputs)
        return inspection.gather_units(logits, indices, indices_axis, indices_batch_dims)

    return select


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
