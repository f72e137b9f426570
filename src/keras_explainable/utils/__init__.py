"""Utilities to look at explanations: image grids and overlays.

Example:
    >>> scores, cams = ke.gradcam(model, x, y)
    >>> ke.utils.visualize([*x, *x], overlays=[None] * len(x) + [*cams], rows=2)
    >>> picture = ke.utils.overlay(x[0], cams[0, ..., 0])  # (H, W, 3) uint8
"""

from .visualization import as_display_image, get_dims, overlay, visualize

__all__ = ["as_display_image", "get_dims", "overlay", "visualize"]
