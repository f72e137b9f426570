"""Explaining methods.

Every method has the signature
``method(model, inputs, indices=None, indices_axis=-1, indices_batch_dims=-1,
spatial_axis=(-3, -2), **own_params) -> (scores, maps)``, works on one batch of
tensors (numpy arrays are accepted) and is written with ``keras.ops`` only.

- :mod:`.gradient` — gradient back-propagation (saliency), gradient x input,
  integrated gradients, full-gradient.
- :mod:`.cams` — class activation maps (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM,
  LayerCAM, HiResCAM, Eigen-CAM, Score-CAM, Ablation-CAM).
- :mod:`.perturbation` — occlusion and RISE (forward passes only).
- :mod:`.attention` — attention rollout and transformer attribution
  (vision transformers: the attention probabilities of every block).
- :mod:`.meta` — SmoothGrad (and VarGrad / SquareGrad) and test-time augmentation,
  which wrap any of the above.
- :mod:`.registry` — the table of every method (names, defaults, papers);
  importing it imports no framework.

The submodules are imported on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["attention", "cams", "gradient", "meta", "perturbation", "registry"]


def __getattr__(name):  # PEP 562: submodules on first use
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
