"""Taps: observe (and perturb) the output of a layer during one forward pass.

A tap wraps a layer's ``call`` for as long as a ``tapped`` block lasts. It sees
what the layer returned on its ``call_index``-th call and may hand back another
tensor in its place (the backends return ``output + delta`` with ``delta = 0``
so that they can differentiate with respect to ``delta``: the one way to get the
gradient w.r.t. an intermediate tensor that works on JAX too).

This works for every kind of model (functional, Sequential with or without an
``Input``, subclassed, nested) because Keras routes ``Layer.__call__`` through
``self.call``. The instance attribute is removed again in a ``finally`` block,
so the user's layer is exactly as it was afterwards, even when the forward pass
raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_MISSING = object()


@dataclasses.dataclass(frozen=True, eq=False)
class Tap:
    """A layer whose output we want to see.

    Args:
        layer: the Keras layer (or nested model) to observe.
        call_index: which call of the layer during one forward pass
            (0 for the first; a shared layer is called more than once);
            ``None`` for every call.
        path: the layer's names from the outermost model inwards, for messages.
        link: ``"output"`` to see what the layer returns, ``"input"`` to see
            (and replace) the first tensor it receives.
    """

    layer: Any
    call_index: int | None = 0
    path: tuple[str, ...] = ()
    link: str = "output"

    def __post_init__(self):
        if self.link not in ("output", "input"):
            raise ValueError(f"A tap's link is 'output' or 'input', not {self.link!r}.")

    @property
    def name(self) -> str:
        name = "/".join(self.path) if self.path else self.layer.name
        return f"{name} (input)" if self.link == "input" else name


@contextlib.contextmanager
def tapped(taps: Sequence[Tap], transform: Callable[[int, Any], Any]) -> Iterator[None]:
    """Route the outputs of ``taps`` through ``transform(tap_position, output)``.

    Whatever ``transform`` returns is what the rest of the model sees.
    """
    installed = []
    try:
        for position, tap in enumerate(taps):
            layer = tap.layer
            previous = layer.__dict__.get("call", _MISSING)
            inner = layer.call
            counter = [0]

            def wrapper(
                *args,
                _inner=inner,
                _position=position,
                _index=tap.call_index,
                _counter=counter,
                _on_input=tap.link == "input",
                **kwargs,
            ):
                calls = _counter[0]
                _counter[0] += 1
                hit = _index is None or calls == _index
                if hit and _on_input:
                    if args:
                        args = (transform(_position, args[0]),) + args[1:]
                    else:
                        key = next(iter(kwargs))
                        kwargs[key] = transform(_position, kwargs[key])
                    return _inner(*args, **kwargs)
                outputs = _inner(*args, **kwargs)
                if hit:
                    outputs = transform(_position, outputs)
                return outputs

            object.__setattr__(layer, "call", wrapper)
            installed.append((layer, previous))
        yield
    finally:
        for layer, previous in reversed(installed):
            if previous is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)


def recorded(taps: Sequence[Tap]):
    """A ``tapped`` block that only records: returns (context, values list)."""
    values: list[Any] = [None] * len(taps)

    def record(position, output):
        values[position] = output
        return output

    return tapped(taps, record), values


def check_recorded(taps: Sequence[Tap], values: Sequence[Any]) -> None:
    """Raise a clear error when a tapped layer never ran during the forward pass."""
    for tap, value in zip(taps, values):
        if value is None:
            raise ValueError(
                f"The layer '{tap.name}' (call {tap.call_index}) was not called while the "
                "model ran, so it cannot be explained. Pick a layer that the model uses "
                "on its forward pass (see `ke.inspection.expose`)."
            )
        if isinstance(value, (list, tuple, dict)):
            raise ValueError(
                f"The layer '{tap.name}' returns a {type(value).__name__}, not a single "
                "tensor; tap a layer with one output instead."
            )
