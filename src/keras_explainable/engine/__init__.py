"""The explaining engine: batching, compiling and collecting.

Besides :func:`explain` and :func:`explain_step`, the engine is the upper rooms'
(``explanation``, ``report``, the command line) one door to the backend:
:func:`forward` and :func:`backend_name`, so that nothing above the engine
imports :mod:`keras_explainable.backend` itself.
"""

from .. import backend as _backend
from .explaining import explain, explain_step


def forward(model, inputs):
    """``model``'s outputs on the batch ``inputs``, without gradient tracking.

    What the model returns (a tensor, or its list / dict of outputs), as backend
    tensors, computed in inference mode (``training=False``).
    """
    outputs, _ = _backend.forward(model, inputs)
    return outputs


def backend_name() -> str:
    """The name of the active Keras backend: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return _backend.NAME


__all__ = ["backend_name", "explain", "explain_step", "forward"]
