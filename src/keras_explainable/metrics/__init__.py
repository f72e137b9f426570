"""Metrics that evaluate saliency maps: faithfulness, localization and sanity.

Faithfulness (need the model):

- :func:`deletion`, :func:`insertion` — RISE's causal metrics (Petsiuk et al., 2018);
- :func:`confidence_change`, :func:`average_drop`, :func:`increase_in_confidence`
  — Grad-CAM++'s Average Drop % / Increase in Confidence % (Chattopadhay et al., 2018);
- :func:`road`, :func:`road_combined` — ROAD with noisy linear imputation
  (Rong et al., 2022).

Localization (maps and ground truth only):

- :func:`pointing_game` (Zhang et al., 2018), :func:`energy_pointing_game`
  (Wang et al., Score-CAM, 2020). Box metrics (MaxBoxAcc) are in
  :mod:`keras_explainable.wsol`.

Sanity:

- :func:`model_randomization` — cascading / independent parameter
  randomization (Adebayo et al., 2018), with :func:`spearman` and :func:`ssim`.

Every metric takes numpy arrays or backend tensors, returns numpy results and
runs on the TensorFlow, JAX and PyTorch backends.

Example:
    >>> scores, maps = ke.gradcam(model, x, y)
    >>> ke.metrics.deletion(model, x, maps, y).auc.mean()
    >>> ke.metrics.pointing_game(maps, boxes=boxes).accuracy
"""

from ._common import normalized_auc
from .fidelity import (
    CausalCurves,
    ConfidenceChange,
    average_drop,
    confidence_change,
    deletion,
    gaussian_blur,
    increase_in_confidence,
    insertion,
)
from .localization import EnergyResult, PointingResult, energy_pointing_game, pointing_game
from .randomization import (
    RandomizationResult,
    model_randomization,
    randomization_layers,
    spearman,
    ssim,
)
from .remove_and_debias import (
    RoadCombined,
    RoadCurve,
    linear_imputation,
    noisy_linear_imputation,
    road,
    road_combined,
)

__all__ = [
    "CausalCurves",
    "ConfidenceChange",
    "EnergyResult",
    "PointingResult",
    "RandomizationResult",
    "RoadCombined",
    "RoadCurve",
    "average_drop",
    "confidence_change",
    "deletion",
    "energy_pointing_game",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion",
    "linear_imputation",
    "model_randomization",
    "noisy_linear_imputation",
    "normalized_auc",
    "pointing_game",
    "randomization_layers",
    "road",
    "road_combined",
    "spearman",
    "ssim",
]
