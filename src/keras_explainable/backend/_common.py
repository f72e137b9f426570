"""Framework-free pieces shared by the backend modules."""

from __future__ import annotations

from typing import Any, NamedTuple


class Gradients(NamedTuple):
    """What ``value_and_gradients`` returns.

    Attributes:
        scores: the selected scores, ``(batch, units)``.
        outputs: the model's outputs (as the model returned them).
        tap_values: the recorded output of every tap, in tap order.
        tap_gradients: ``d scores / d tap_value`` for each tap position listed in
            ``differentiate``, shaped ``tap_value.shape + (units,)``.
        input_gradients: ``d scores / d inputs`` shaped ``inputs.shape + (units,)``,
            or ``None`` when ``wrt_inputs`` was false.
    """

    scores: Any
    outputs: Any
    tap_values: list
    tap_gradients: list
    input_gradients: Any


def check_scores(scores) -> None:
    if len(scores.shape) != 2:
        raise ValueError(
            "The selected scores must be a (batch, units) tensor; got shape "
            f"{tuple(scores.shape)}. Explain one output vector per sample."
        )


def round_up(rows: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that holds ``rows`` rows."""
    return -(-rows // multiple) * multiple
