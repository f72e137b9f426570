"""Framework-free pieces shared by the backend modules."""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _inputs


class Gradients(NamedTuple):
    """What ``value_and_gradients`` returns.

    Attributes:
        scores: the selected scores, ``(batch, units)``.
        outputs: the model's outputs (as the model returned them).
        tap_values: the recorded output of every tap, in tap order.
        tap_gradients: ``d scores / d tap_value`` for each tap position listed in
            ``differentiate``, shaped ``tap_value.shape + (units,)``.
        input_gradients: ``d scores / d inputs`` shaped ``inputs.shape + (units,)``,
            or ``None`` when ``wrt_inputs`` was false; for structured inputs, the
            same structure, ``None`` at the leaves not differentiated.
    """

    scores: Any
    outputs: Any
    tap_values: list
    tap_gradients: list
    input_gradients: Any


def wrt_leaves(inputs, wrt_inputs):
    """``(leaves, positions, rebuild)`` of the inputs to differentiate.

    ``inputs`` is one tensor or a structure (list, tuple, dict: see
    :mod:`keras_explainable._inputs`); ``wrt_inputs`` is ``False``, ``True``
    (the one tensor; for a structure, every floating-point leaf) or the
    positions of the leaves to differentiate. ``rebuild(gradients)`` puts the
    gradients of those positions back into the structure (``None`` elsewhere);
    for a plain tensor it returns the one gradient.
    """
    if not _inputs.is_structure(inputs):
        return [inputs], ((0,) if wrt_inputs else ()), lambda grads: grads[0]
    items = _inputs.leaves(inputs)
    if wrt_inputs is False:
        positions = ()
    else:
        positions = _inputs.explained_positions(inputs, None if wrt_inputs is True else wrt_inputs)

    def rebuild(grads):
        by_position = dict(zip(positions, grads))
        return _inputs.pack(inputs, [by_position.get(i) for i in range(len(items))])

    return items, positions, rebuild


def check_scores(scores) -> None:
    if len(scores.shape) != 2:
        raise ValueError(
            "The selected scores must be a (batch, units) tensor; got shape "
            f"{tuple(scores.shape)}. Explain one output vector per sample."
        )


def round_up(rows: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that holds ``rows`` rows."""
    return -(-rows // multiple) * multiple
