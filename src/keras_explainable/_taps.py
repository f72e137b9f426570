"""Taps: observe (and perturb) the output of a layer during one forward pass.

A tap sees what a layer returned on its ``call_index``-th call and may hand
back another tensor in its place (the backends return ``output + delta`` with
``delta = 0`` so that they can differentiate with respect to ``delta``: the one
way to get the gradient w.r.t. an intermediate tensor that works on JAX too).

This works for every kind of model (functional, Sequential with or without an
``Input``, subclassed, nested) because Keras routes ``Layer.__call__`` through
``self.call``: while a layer is tapped, its instance attribute ``call`` is a
wrapper.

Thread safety. Taps are *context-local*: a ``tapped`` block acts only on the
forward passes that run inside it, in its own thread (or ``contextvars``
context). The wrapper is installed once per layer, under a lock, while at least
one block anywhere taps that layer, and it is transparent to every other caller:
another thread running ``model(x)``, ``model.predict`` or tracing its own
compiled step meanwhile goes straight to the layer's own ``call`` and sees
exactly the plain model. When the last block that taps a layer exits (also when
its forward pass raised), the wrapper is removed and the layer is exactly as it
was.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import threading
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
        call_kwargs: keyword arguments the tapped call is made with, as
            ``(name, value)`` pairs (e.g. ``return_attention_scores=True`` to
            make an attention layer compute its probabilities explicitly).
        keep: with ``call_kwargs``, the element of the tuple the call then
            returns that the tap sees and the rest of the model gets (the others
            are dropped, unless the caller asked for them with the same
            keyword arguments).
        absent: what :func:`check_recorded` says when the tap saw nothing
            (empty: that the layer was not called).
    """

    layer: Any
    call_index: int | None = 0
    path: tuple[str, ...] = ()
    link: str = "output"
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    keep: int | None = None
    absent: str = ""

    def __post_init__(self):
        if self.link not in ("output", "input"):
            raise ValueError(f"A tap's link is 'output' or 'input', not {self.link!r}.")

    @property
    def name(self) -> str:
        name = "/".join(self.path) if self.path else self.layer.name
        return f"{name} (input)" if self.link == "input" else name


class _Entry:
    """One tap of one ``tapped`` block: where its values go and how many calls it saw."""

    __slots__ = ("transform", "position", "call_index", "on_input", "calls", "forced", "keep")

    def __init__(self, transform, position, tap: Tap):
        self.transform = transform
        self.position = position
        self.call_index = tap.call_index
        self.on_input = tap.link == "input"
        self.calls = 0
        self.forced = dict(tap.call_kwargs)
        self.keep = tap.keep

    def __call__(self, inner, *args, **kwargs):
        calls = self.calls
        self.calls += 1
        hit = self.call_index is None or calls == self.call_index
        if hit and self.on_input:
            if args:
                args = (self.transform(self.position, args[0]),) + args[1:]
            else:
                key = next(iter(kwargs))
                kwargs[key] = self.transform(self.position, kwargs[key])
            return inner(*args, **kwargs)
        if hit and self.forced:
            return self._forced_call(inner, args, kwargs)
        outputs = inner(*args, **kwargs)
        if hit:
            outputs = self.transform(self.position, outputs)
        return outputs

    def _forced_call(self, inner, args, kwargs):
        asked = all(kwargs.get(name, _MISSING) == value for name, value in self.forced.items())
        outputs = inner(*args, **{**kwargs, **self.forced})
        if self.keep is None:
            return self.transform(self.position, outputs)
        outputs = list(outputs)
        outputs[self.keep] = self.transform(self.position, outputs[self.keep])
        return tuple(outputs) if asked else outputs[self.keep]


# The blocks active in this context, outermost first: each a {id(layer): [entries]}.
_ACTIVE: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar(
    "keras_explainable_taps", default=()
)
_LOCK = threading.Lock()
# id(layer) -> [layer, the instance attribute `call` it had (or _MISSING), wrapper, users]
_INSTALLED: dict[int, list] = {}


def _wrapper_for(layer_id: int, original: Callable) -> Callable:
    def call(*args, **kwargs):
        blocks = _ACTIVE.get()
        if not blocks:  # not explaining in this context: the layer's own call
            return original(*args, **kwargs)
        run = original
        # Nested blocks compose like nested wrappers: the outermost block's taps
        # act closest to the layer (its output transform runs first).
        for block in blocks:
            for entry in block.get(layer_id, ()):
                run = functools.partial(entry, run)
        return run(*args, **kwargs)

    call.__keras_explainable_tap__ = True
    return call


def _acquire(layer) -> None:
    with _LOCK:
        record = _INSTALLED.get(id(layer))
        if record is not None and record[0] is layer:
            record[3] += 1
            return
        previous = layer.__dict__.get("call", _MISSING)
        wrapper = _wrapper_for(id(layer), layer.call)
        object.__setattr__(layer, "call", wrapper)
        _INSTALLED[id(layer)] = [layer, previous, wrapper, 1]


def _release(layer) -> None:
    with _LOCK:
        record = _INSTALLED.get(id(layer))
        if record is None or record[0] is not layer:  # pragma: no cover - never acquired
            return
        record[3] -= 1
        if record[3] > 0:
            return
        del _INSTALLED[id(layer)]
        _, previous, wrapper, _ = record
        if layer.__dict__.get("call") is not wrapper:  # replaced by someone else: leave it
            return
        if previous is _MISSING:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", previous)


def installed_layers() -> int:
    """How many layers carry a tap wrapper right now (0 when nothing is explaining)."""
    with _LOCK:
        return len(_INSTALLED)


@contextlib.contextmanager
def tapped(taps: Sequence[Tap], transform: Callable[[int, Any], Any]) -> Iterator[None]:
    """Route the outputs of ``taps`` through ``transform(tap_position, output)``.

    Whatever ``transform`` returns is what the rest of the model sees, for the
    forward passes run inside this block in this thread (or context) only.
    """
    block: dict[int, list[_Entry]] = {}
    layers = []
    for position, tap in enumerate(taps):
        block.setdefault(id(tap.layer), []).append(_Entry(transform, position, tap))
        if all(layer is not tap.layer for layer in layers):
            layers.append(tap.layer)
    acquired = []
    token = None
    try:
        for layer in layers:
            _acquire(layer)
            acquired.append(layer)
        token = _ACTIVE.set(_ACTIVE.get() + (block,))
        yield
    finally:
        if token is not None:
            _ACTIVE.reset(token)
        for layer in reversed(acquired):
            _release(layer)


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
        if value is None and tap.absent:
            raise ValueError(tap.absent)
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
