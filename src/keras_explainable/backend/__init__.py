"""The only place that imports a deep-learning framework.

``keras_explainable.backend`` exposes the functions of the module that matches
``keras.backend.backend()``; each of ``tensorflow.py``, ``jax.py`` and
``torch.py`` implements the same small set:

- ``forward(model, inputs, taps=())`` — outputs and tapped values, no gradient
  tracking;
- ``value_and_gradients(model, inputs, score_fn, taps=(), differentiate=(),
  wrt_inputs=False)`` — selected scores and their gradients w.r.t. tapped
  intermediate tensors and/or the inputs (see ``_common.Gradients``); for a
  multi-input model's list/tuple/dict of inputs, ``wrt_inputs`` is ``True``
  (every float input) or the positions to differentiate, and the input
  gradients come back in the same structure (``None`` elsewhere);
- ``compile(fn, model, jit_compile=...)`` — a compiled version of ``fn``;
- ``is_compiled_per_shape()`` — whether ``compile`` traces once per input shape.
"""

from __future__ import annotations

import importlib

import keras

from ._common import Gradients

_SUPPORTED = ("tensorflow", "jax", "torch")


def _load():
    name = keras.backend.backend()
    if name not in _SUPPORTED:
        raise ImportError(
            f"keras-explainable supports the Keras backends {_SUPPORTED}; the active backend is "
            f"'{name}'. Set KERAS_BACKEND to one of them before importing keras."
        )
    return importlib.import_module(f"{__name__}.{name}")


_impl = _load()

NAME = _impl.NAME
forward = _impl.forward
value_and_gradients = _impl.value_and_gradients
compile = _impl.compile
is_compiled_per_shape = _impl.is_compiled_per_shape

__all__ = [
    "NAME",
    "Gradients",
    "forward",
    "value_and_gradients",
    "compile",
    "is_compiled_per_shape",
]
