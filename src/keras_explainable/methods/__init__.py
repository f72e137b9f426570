"""Explaining methods.

Every method has the signature
``method(model, inputs, indices=None, indices_axis=-1, indices_batch_dims=-1,
spatial_axis=(-3, -2), **own_params) -> (scores, maps)``, works on one batch of
tensors (numpy arrays are accepted) and is written with ``keras.ops`` only.

- :mod:`.gradient` — gradient back-propagation (saliency).
- :mod:`.cams` — class activation maps (CAM, Grad-CAM).
"""

from . import cams, gradient

__all__ = ["cams", "gradient"]
