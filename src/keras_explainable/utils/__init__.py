"""Utilities to look at explanations (image grids, overlays) and to read pictures.

Example:
    >>> scores, cams = ke.gradcam(model, x, y)
    >>> ke.utils.visualize([*x, *x], overlays=[None] * len(x) + [*cams], rows=2)
    >>> picture = ke.utils.overlay(x[0], cams[0, ..., 0])  # (H, W, 3) uint8
"""

from .images import IMAGE_EXTENSIONS, PREPROCESSINGS, load_image, prepare_image, preprocess
from .visualization import as_display_image, get_dims, overlay, visualize

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESSINGS",
    "as_display_image",
    "get_dims",
    "load_image",
    "overlay",
    "prepare_image",
    "preprocess",
    "visualize",
]
