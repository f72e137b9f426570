"""Structured inputs (a list, tuple or dict of tensors, one per model input).

Framework-free helpers shared by the backends, the methods and the engine. A
structure is flattened into its leaves in order (a dict in its own key order)
and rebuilt with :func:`pack`. An input is *explainable* when it holds floats:
integer inputs (token ids, categorical codes) are never differentiated.
"""

from __future__ import annotations

from keras import ops


def is_structure(inputs) -> bool:
    """Whether ``inputs`` is a list, tuple or dict of per-input tensors."""
    return isinstance(inputs, (list, tuple, dict))


def leaves(inputs) -> list:
    """The tensors of a structure, in order (a dict in its key order)."""
    if isinstance(inputs, dict):
        return list(inputs.values())
    return list(inputs)


def keys(inputs) -> list:
    """The keys of a structure: a dict's keys, else the positions."""
    if isinstance(inputs, dict):
        return list(inputs)
    return list(range(len(inputs)))


def pack(like, values):
    """``values`` (one per leaf of ``like``) in the structure of ``like``."""
    values = list(values)
    if isinstance(like, dict):
        return dict(zip(like, values))
    if isinstance(like, tuple):
        return tuple(values)
    return values


def is_float(tensor) -> bool:
    return "float" in str(tensor.dtype)


def explained_positions(inputs, explained=None) -> tuple[int, ...]:
    """The positions of the leaves to explain (``explained``: positions or ``None``).

    ``None`` means every floating-point input. Naming an integer input raises:
    token ids and categorical codes have no gradient (explain them at their
    embedding layer, e.g. with a CAM method on it).
    """
    items = leaves(inputs)
    names = keys(inputs)
    if explained is None:
        positions = tuple(i for i, leaf in enumerate(items) if is_float(leaf))
        if not positions:
            raise ValueError(
                "None of the model's inputs holds floats: integer inputs (token ids, "
                "categorical codes) are not differentiated or perturbed. Explain them at "
                "their embedding layer with a CAM method (e.g. ke.gradcam on an exposed "
                "embedding) instead."
            )
        return positions
    positions = tuple(int(p) for p in explained)
    for position in positions:
        if not 0 <= position < len(items):
            raise ValueError(
                f"`inputs` names the input at position {position}, but there are "
                f"{len(items)} inputs ({names})."
            )
        if not is_float(items[position]):
            raise ValueError(
                f"`inputs` names the input {names[position]!r}, which holds "
                f"{items[position].dtype} values (token ids or categorical codes): gradients "
                "and perturbations explain floating-point inputs only. Leave it out of "
                "`inputs=` (it is then fed as it is), or explain it at its embedding layer "
                "with a CAM method."
            )
    return positions


def feature_map_axes(rank: int) -> tuple[int, ...]:
    """The spatial axes of the map of an input of ``rank`` (maps: ``(batch, *axes, units)``)."""
    if rank == 2:  # (batch, features): a map per feature
        return (-2,)
    return tuple(range(-(rank - 1), -1))


def reduce_channels(values, rank: int, reduce):
    """``(batch, *input_axes, units)`` -> a map: the channel axis reduced for rank >= 3.

    A feature vector ``(batch, features)`` has no channel axis: its values are the map.
    """
    if rank == 2:
        return values
    return reduce(values, axis=-2)


def as_float_leaves(inputs) -> list:
    """The leaves as backend tensors; float leaves stay as they are, ints are not cast."""
    return [ops.convert_to_tensor(leaf) for leaf in leaves(inputs)]
