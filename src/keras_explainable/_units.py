"""The explained units: the scores a method differentiates, gathered from the outputs.

A leaf of the package (it imports only Keras); re-exported by
:mod:`keras_explainable.inspection` (``ke.inspection.gather_units``).
"""

from __future__ import annotations

from keras import ops

__all__ = ["first_output", "gather_units"]


def first_output(outputs):
    """The first output of a model (its logits, for an exposed model)."""
    if isinstance(outputs, dict):
        raise ValueError(
            f"The model returns a dict of outputs ({', '.join(map(repr, outputs))}), which "
            "has no first output; pick the one to explain with target=ke.targets.output(name)."
        )
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def gather_units(tensor, indices, axis: int = -1, batch_dims: int = -1):
    """Select the explained units from a ``(batch, units)`` tensor.

    Args:
        tensor: the model's scores, ``(batch, classes)``.
        indices: ``None`` (every unit); ``(batch, units)`` integers, a row per
            sample; or ``(batch,)`` integers, one unit per sample (returned as
            ``(batch, 1)``; the original library gathered these across samples).
            With ``batch_dims=0`` the same ``(units,)`` indices serve every sample.
        axis: the axis holding the units (only the last is supported).
        batch_dims: ``-1`` (indices carry a batch axis) or ``0`` (shared indices).

    Returns:
        ``(batch, units)`` scores.

    Example:
        >>> logits = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]])
        >>> ke.inspection.gather_units(logits, np.array([1, 2]))
        array([[0.9], [0.8]])
    """
    tensor = ops.convert_to_tensor(tensor)
    if indices is None:
        return tensor
    if axis not in (-1, len(tensor.shape) - 1):
        raise ValueError(f"Units are gathered from the last axis; got axis={axis}.")
    indices = ops.cast(ops.convert_to_tensor(indices), "int32")
    if batch_dims == 0:
        return ops.take(tensor, indices, axis=-1)
    if batch_dims not in (-1, 1):
        raise ValueError(
            f"batch_dims is -1, 1 (indices per sample) or 0 (shared); got {batch_dims}."
        )
    if len(indices.shape) == 1:
        indices = indices[:, None]
    if len(tensor.shape) != 2 or len(indices.shape) != 2:
        raise ValueError(
            f"Cannot gather units of shape {tuple(indices.shape)} from scores of shape "
            f"{tuple(tensor.shape)}: expected (batch, classes) scores and (batch, units) indices."
        )
    return ops.take_along_axis(tensor, indices, axis=-1)
