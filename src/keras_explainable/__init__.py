"""keras-explainable: efficient explaining-AI methods for Keras 3 models.

Works on the TensorFlow, JAX and PyTorch backends of Keras 3.

Importing the package is light: Keras, the framework and the submodules are
imported when first used (``ke.gradcam(...)``, ``ke.inspection``, ...), so
``import keras_explainable`` neither imports a framework nor creates Keras
variables.

Example:
    >>> import keras_explainable as ke
    >>> model = ke.inspection.expose(model)
    >>> scores, cams = ke.gradcam(model, x, y, batch_size=32)
"""

from __future__ import annotations

import importlib

from ._shortcuts import SHORTCUTS as _SHORTCUTS
from ._shortcuts import partial_explain as partial_explain

__version__ = "0.1.0.dev0"

# the shortcuts (ke.gradcam, ke.full_gradients, ...): one per method of the registry
globals().update(_SHORTCUTS)

_SUBMODULES = (
    "backend",
    "filters",
    "inspection",
    "methods",
    "metrics",
    "targets",
    "text",
    "utils",
    "wsol",
)
_LAZY = {
    "explain": ("engine", "explain"),
    "explain_step": ("engine", "explain_step"),
    "Explanation": ("explanation", "Explanation"),
    "explain_prediction": ("explanation", "explain_prediction"),
}


def __getattr__(name):  # PEP 562: submodules and heavy names on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


__all__ = sorted(
    ["Explanation", "explain", "explain_prediction", "explain_step", "partial_explain"]
    + list(_SUBMODULES)
    + list(_SHORTCUTS)
)
