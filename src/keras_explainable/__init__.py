"""keras-explainable: efficient explaining-AI methods for Keras 3 models.

Works on the TensorFlow, JAX and PyTorch backends of Keras 3.

Example:
    >>> import keras_explainable as ke
    >>> model = ke.inspection.expose(model)
    >>> scores, cams = ke.gradcam(model, x, y, batch_size=32)
"""

from __future__ import annotations

import functools

from . import backend, filters, inspection, methods, metrics, utils, wsol
from .engine import explain, explain_step
from .explanation import Explanation, explain_prediction

__version__ = "0.1.0.dev0"


def partial_explain(method, **default_params):
    """``explain`` bound to a method and default parameters.

    Args:
        method: an explaining method.
        **default_params: defaults for ``explain`` (e.g. ``postprocessing``);
            the caller can still override each one.

    Returns:
        a function ``(model, x, y=None, **params) -> (scores, maps)``.

    Example:
        >>> absolute_gradients = ke.partial_explain(
        ...     ke.methods.gradient.gradients, postprocessing=ke.filters.absolute_normalize)
        >>> scores, maps = absolute_gradients(model, x, y)
    """

    @functools.wraps(method)
    def explain_with(model, x, y=None, **params):
        return explain(method, model, x, y, **{**default_params, **params})

    explain_with.__doc__ = (
        f"``ke.explain`` with ``{method.__module__}.{method.__name__}`` and the defaults "
        f"{ {k: getattr(v, '__name__', v) for k, v in default_params.items()} }.\n\n"
        "Signature: ``(model, x, y=None, batch_size=None, verbose='auto', **params) -> "
        "(scores, maps)`` as numpy arrays; see ``ke.explain``.\n\n"
        f"Method documentation:\n{method.__doc__}"
    )
    return explain_with


gradients = partial_explain(
    methods.gradient.gradients, postprocessing=filters.normalize, resizing=False
)

gradients_x_inputs = partial_explain(
    methods.gradient.gradients_x_inputs, postprocessing=filters.absolute_normalize, resizing=False
)
integrated_gradients = partial_explain(
    methods.gradient.integrated_gradients,
    postprocessing=filters.absolute_normalize,
    resizing=False,
)
full_gradients = partial_explain(
    methods.gradient.full_gradients, postprocessing=filters.normalize, resizing=False
)
smoothgrad = partial_explain(
    methods.meta.smooth(methods.gradient.gradients),
    postprocessing=filters.normalize,
    resizing=False,
)


def _cam_shortcut(method):
    # the seed's defaults for CAM methods: ReLU + min-max normalization, then resize
    return partial_explain(method, postprocessing=filters.positive_normalize, resizing=True)


cam = _cam_shortcut(methods.cams.cam)
gradcam = _cam_shortcut(methods.cams.gradcam)
gradcampp = _cam_shortcut(methods.cams.gradcampp)
xgradcam = _cam_shortcut(methods.cams.xgradcam)
layercam = _cam_shortcut(methods.cams.layercam)
hirescam = _cam_shortcut(methods.cams.hirescam)
eigencam = _cam_shortcut(methods.cams.eigencam)
scorecam = _cam_shortcut(methods.cams.scorecam)
ablationcam = _cam_shortcut(methods.cams.ablationcam)

# perturbation maps are already at the input's resolution
occlusion = partial_explain(
    methods.perturbation.occlusion, postprocessing=filters.normalize, resizing=False
)
rise = partial_explain(methods.perturbation.rise, postprocessing=filters.normalize, resizing=False)

__all__ = [
    "Explanation",
    "explain_prediction",
    "utils",
    "ablationcam",
    "backend",
    "cam",
    "eigencam",
    "explain",
    "explain_step",
    "filters",
    "full_gradients",
    "gradcam",
    "gradcampp",
    "gradients",
    "gradients_x_inputs",
    "hirescam",
    "inspection",
    "integrated_gradients",
    "layercam",
    "methods",
    "metrics",
    "occlusion",
    "partial_explain",
    "rise",
    "scorecam",
    "smoothgrad",
    "wsol",
    "xgradcam",
]
