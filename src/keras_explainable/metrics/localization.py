"""Localization metrics: does the map point at the object?

- :func:`pointing_game` (Zhang et al., ECCV 2016 / IJCV 2018);
- :func:`energy_pointing_game` (Wang et al., Score-CAM, CVPR workshops 2020).

Ground truth is given as boxes ``(x_min, y_min, x_max, y_max)`` (inclusive
pixel indices, see :mod:`keras_explainable.metrics.boxes`) or as bool masks.
No model is needed: these metrics read the maps only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..engine.data import to_numpy
from ._common import as_maps, normalize_maps, resize_maps
from .boxes import as_box_lists, boxes_to_masks


def _targets(maps, boxes, masks, image_size):
    """Maps ``(N, H, W)`` and bool target masks of the same size."""
    if (boxes is None) == (masks is None):
        raise ValueError("Pass exactly one of `boxes` (x_min, y_min, x_max, y_max) or `masks`.")
    maps = as_maps(maps, size=image_size)
    if boxes is not None:
        return maps, boxes_to_masks(as_box_lists(boxes, len(maps)), maps.shape[1:])
    masks = to_numpy(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3 or len(masks) != len(maps):
        raise ValueError(
            f"`masks` must be (N, H, W) with one mask per map ({len(maps)}); got {masks.shape}."
        )
    masks = masks.astype(bool)
    if masks.shape[1:] != maps.shape[1:]:
        maps = resize_maps(maps, masks.shape[1:])  # evaluate at the masks' resolution
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            f"The target mask of image {empty[0]} is empty; every image needs a target region."
        )
    return maps, masks


class PointingResult(NamedTuple):
    """The result of :func:`pointing_game`.

    Attributes:
        accuracy: hits / images (or the mean of the per-class accuracies when
            ``classes`` is given, Zhang et al.'s protocol).
        hits: ``(N,)`` bool, one per image.
        points: ``(N, 2)`` the ``(row, column)`` of each map's maximum.
        per_class: ``{class: accuracy}`` when ``classes`` is given, else None.
    """

    accuracy: float
    hits: np.ndarray
    points: np.ndarray
    per_class: dict | None


def pointing_game(
    maps, boxes=None, masks=None, tolerance: float = 15, classes=None, image_size=None
) -> PointingResult:
    """Pointing game: is the map's maximum on the object (within a tolerance)?

    The point ``p`` is the map's maximum (the first in raster order when there
    are ties). It is a **hit** if some ground-truth pixel ``q`` lies within
    ``tolerance`` pixels of it, ``||p - q||_2 <= tolerance``, else a miss.
    ``accuracy = hits / (hits + misses)``; with ``classes``, the accuracy is
    computed per class and averaged over classes, as in the paper.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, 1)``.
        boxes: ground-truth boxes ``(N, 4)``, ``(N, K, 4)`` or a list of ``(K_i, 4)``
            in the maps' pixel frame (or ``image_size``'s).
        masks: ground-truth bool masks ``(N, H', W')``, instead of ``boxes``;
            maps are resized (bilinear) to the masks' size.
        tolerance: in pixels (15, the paper's; 0 = the point must be inside).
        classes: optional ``(N,)`` class of each image, for class-averaged accuracy.
        image_size: resize the maps (bilinear) to this ``(H, W)`` first.

    Returns:
        :class:`PointingResult` ``(accuracy, hits, points, per_class)``.

    Example:
        >>> _, maps = ke.gradcam(model, x, y)
        >>> ke.metrics.pointing_game(maps, boxes=boxes).accuracy

    References:
        Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by
        Excitation Backprop", ECCV 2016 / IJCV 2018.
    """
    if isinstance(tolerance, bool) or not np.isscalar(tolerance) or tolerance < 0:
        raise ValueError(f"`tolerance` is a distance in pixels >= 0; got {tolerance!r}.")
    maps, masks = _targets(maps, boxes, masks, image_size)
    n, height, width = maps.shape
    flat = maps.reshape(n, -1).argmax(axis=1)
    points = np.stack(np.unravel_index(flat, (height, width)), axis=1)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    distance2 = (rows - points[:, 0, None, None]) ** 2 + (cols - points[:, 1, None, None]) ** 2
    hits = (masks & (distance2 <= float(tolerance) ** 2)).reshape(n, -1).any(axis=1)
    per_class = None
    accuracy = float(hits.mean())
    if classes is not None:
        classes = to_numpy(classes).reshape(-1)
        if len(classes) != n:
            raise ValueError(f"`classes` gives {len(classes)} labels for {n} maps.")
        per_class = {c.item(): float(hits[classes == c].mean()) for c in np.unique(classes)}
        accuracy = float(np.mean(list(per_class.values())))
    return PointingResult(accuracy, hits, points, per_class)


class EnergyResult(NamedTuple):
    """The result of :func:`energy_pointing_game`.

    Attributes:
        proportion: the mean over images of the energy inside the target.
        proportions: ``(N,)`` each image's ``sum_{in target} S / sum S``.
    """

    proportion: float
    proportions: np.ndarray


def energy_pointing_game(maps, boxes=None, masks=None, image_size=None) -> EnergyResult:
    """Energy-based pointing game: the share of the map's energy inside the target.

    With ``S`` the map min-max normalised to [0, 1] and ``B`` the target (the
    union of the boxes, or the mask):

        proportion = sum_{(i, j) in B} S_ij / sum_{(i, j)} S_ij,

    averaged over images (a constant map has no energy and scores 0). Higher
    is better; a map spread uniformly scores about ``|B| / (H * W)``.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, 1)``.
        boxes: ground-truth boxes, as :func:`pointing_game`.
        masks: ground-truth bool masks instead of boxes.
        image_size: resize the maps (bilinear) to this ``(H, W)`` first.

    Returns:
        :class:`EnergyResult` ``(proportion, proportions)``.

    Example:
        >>> ke.metrics.energy_pointing_game(maps, boxes=boxes).proportion

    References:
        Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted
        Visual Explanations for Convolutional Neural Networks", CVPR workshops 2020.
    """
    maps, masks = _targets(maps, boxes, masks, image_size)
    maps = normalize_maps(maps)
    total = maps.reshape(len(maps), -1).sum(axis=1)
    inside = (maps * masks).reshape(len(maps), -1).sum(axis=1)
    proportions = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
    return EnergyResult(float(proportions.mean()), proportions)
